//! API keys for programs: `sk-` followed by 64 hex digits, stored as a SHA-256 hash, shown once.

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

use super::AuthError;
use super::tokens::{random_secret, secret_hash};
use crate::store::{format_ms, now_ms};

/// Prefix of every API key.
pub const KEY_PREFIX: &str = "sk-";

/// How often (ms) a key's `last_used_at` is written, so busy keys do not write on every request.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;

/// An API key as listed (never the secret).
#[derive(Debug, Clone, Serialize)]
pub struct ApiKey {
    /// Numeric id, used to revoke it.
    pub id: i64,
    /// The owner's user name.
    pub owner: String,
    /// A label chosen by the owner.
    pub name: String,
    /// The first characters of the key, to recognise it.
    pub prefix: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of last use (to the minute), if used.
    pub last_used_at: Option<String>,
    /// RFC 3339 revocation time, if revoked.
    pub revoked_at: Option<String>,
}

/// Creates a key for the user; returns the listing and the secret (shown only now).
pub fn create(conn: &Connection, user_id: i64, name: &str) -> Result<(ApiKey, String), AuthError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AuthError::Invalid(
            "an API key needs a name of 1-100 characters, e.g. \"nightly-import\"".into(),
        ));
    }
    let secret = random_secret(KEY_PREFIX)?;
    let prefix: String = secret.chars().take(KEY_PREFIX.len() + 8).collect();
    conn.execute(
        "INSERT INTO api_keys (user_id, name, prefix, key_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![user_id, name, prefix, secret_hash(&secret), now_ms()],
    )?;
    let id = conn.last_insert_rowid();
    let key = get(conn, id)?.ok_or_else(|| AuthError::NotFound(format!("API key {id}")))?;
    Ok((key, secret))
}

const SELECT: &str =
    "SELECT k.id, u.name, k.name, k.prefix, k.created_at, k.last_used_at, k.revoked_at, k.user_id
     FROM api_keys k JOIN users u ON u.id = k.user_id";

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(ApiKey, i64)> {
    Ok((
        ApiKey {
            id: r.get(0)?,
            owner: r.get(1)?,
            name: r.get(2)?,
            prefix: r.get(3)?,
            created_at: format_ms(r.get(4)?),
            last_used_at: r.get::<_, Option<i64>>(5)?.map(format_ms),
            revoked_at: r.get::<_, Option<i64>>(6)?.map(format_ms),
        },
        r.get(7)?,
    ))
}

/// One key by id.
pub fn get(conn: &Connection, id: i64) -> rusqlite::Result<Option<ApiKey>> {
    Ok(owned(conn, id)?.map(|(k, _)| k))
}

/// One key by id, with its owner's user id.
pub fn owned(conn: &Connection, id: i64) -> rusqlite::Result<Option<(ApiKey, i64)>> {
    conn.query_row(&format!("{SELECT} WHERE k.id = ?1"), [id], from_row)
        .optional()
}

/// Keys of one user, or of everyone when `user_id` is `None`; newest first.
pub fn list(conn: &Connection, user_id: Option<i64>) -> rusqlite::Result<Vec<ApiKey>> {
    let mut stmt = conn.prepare(&format!(
        "{SELECT} WHERE (?1 IS NULL OR k.user_id = ?1) ORDER BY k.id DESC"
    ))?;
    let rows = stmt.query_map([user_id], from_row)?;
    rows.map(|r| r.map(|(k, _)| k)).collect()
}

/// Revokes a key; revoking twice is not an error.
pub fn revoke(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE api_keys SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
        params![now_ms(), id],
    )?;
    Ok(())
}

/// Resolves a presented secret to `(key id, user id)` if it is a live key, and notes its use.
pub fn resolve(conn: &Connection, secret: &str) -> rusqlite::Result<Option<(i64, i64)>> {
    let found: Option<(i64, i64)> = conn
        .query_row(
            "SELECT id, user_id FROM api_keys WHERE key_hash = ?1 AND revoked_at IS NULL",
            [secret_hash(secret)],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((id, _)) = found {
        let now = now_ms();
        conn.execute(
            "UPDATE api_keys SET last_used_at = ?1 WHERE id = ?2 AND (last_used_at IS NULL OR last_used_at < ?3)",
            params![now, id, now - LAST_USED_RESOLUTION_MS],
        )?;
    }
    Ok(found)
}
