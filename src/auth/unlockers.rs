//! The admins who may unlock the data volume while it is locked.
//!
//! While the volume is locked the user database is out of reach, so the daemon keeps the names
//! and password hashes (argon2id PHC strings, never passwords) of enabled admins in a root-only
//! file beside the volume keys, on the root filesystem. It is rewritten whenever the store opens
//! and after every change to users, and read only to authorise `POST /api/v1/volumes/{name}/unlock`.

use std::path::Path;

use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use super::password;

#[derive(Debug, Serialize, Deserialize)]
struct Unlocker {
    name: String,
    password_hash: String,
}

/// Writes the enabled admins of the store to `path` (0600, atomically).
pub fn export(conn: &Connection, path: &Path) -> Result<(), String> {
    let mut stmt = conn
        .prepare("SELECT name, password_hash FROM users WHERE role = 'admin' AND disabled = 0")
        .map_err(|e| e.to_string())?;
    let admins = stmt
        .query_map([], |r| {
            Ok(Unlocker {
                name: r.get(0)?,
                password_hash: r.get(1)?,
            })
        })
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())?;
    let json = serde_json::to_vec_pretty(&admins).map_err(|e| e.to_string())?;
    crate::store::write_private(path, &json)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Whether `name` and `password` are those of an admin recorded in `path`. Takes as long for
/// an unknown name as for a wrong password.
pub fn verify(path: &Path, name: &str, password: &str) -> bool {
    let admins: Vec<Unlocker> = std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    match admins.iter().find(|a| a.name.eq_ignore_ascii_case(name)) {
        Some(admin) => password::verify(password, &admin.password_hash),
        None => {
            password::verify(password, password::decoy_hash());
            false
        }
    }
}
