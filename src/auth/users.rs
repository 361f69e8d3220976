//! Users and groups in SQLite. Plain functions on a connection; permission checks and audit
//! live in [`super::Auth`] (and in the CLI, which acts as the local administrator).

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::store::{format_ms, now_ms};

/// A user's role. Admins manage everything; editors will add content; viewers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Full control, including users, keys and the audit log.
    Admin,
    /// May change content they can write to.
    Editor,
    /// Read-only.
    Viewer,
}

impl Role {
    /// The role's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "editor" => Ok(Role::Editor),
            "viewer" => Ok(Role::Viewer),
            other => Err(AuthError::Invalid(format!(
                "unknown role {other:?}: expected admin, editor or viewer"
            ))),
        }
    }
}

/// A user as shown by the API (no password hash).
#[derive(Debug, Clone, Serialize)]
pub struct User {
    /// Numeric id.
    pub id: i64,
    /// Sign-in name (case-insensitive, unique).
    pub name: String,
    /// Role.
    pub role: Role,
    /// Disabled users cannot sign in and their tokens and keys stop working.
    pub disabled: bool,
    /// Groups the user belongs to.
    pub groups: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A user row with what authentication needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// Numeric id.
    pub id: i64,
    /// Sign-in name as stored.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Disabled flag.
    pub disabled: bool,
    /// PHC string.
    pub password_hash: String,
    /// When the password last changed (ms); older access tokens are refused.
    pub password_changed_at: i64,
}

/// A group with its members.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Numeric id.
    pub id: i64,
    /// Name (case-insensitive, unique).
    pub name: String,
    /// Member user names.
    pub members: Vec<String>,
}

/// Checks a user or group name: 1–64 characters of letters, digits, `.`, `_`, `-`, starting
/// with a letter or digit.
pub fn validate_name(kind: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "invalid {kind} name {name:?}: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

fn parse_role(s: String) -> rusqlite::Result<Role> {
    s.parse().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("unknown role {s:?}").into(),
        )
    })
}

fn credentials_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Credentials> {
    Ok(Credentials {
        id: r.get(0)?,
        name: r.get(1)?,
        role: parse_role(r.get(2)?)?,
        disabled: r.get(3)?,
        password_hash: r.get(4)?,
        password_changed_at: r.get(5)?,
    })
}

const CREDENTIALS_COLUMNS: &str =
    "SELECT id, name, role, disabled, password_hash, password_changed_at FROM users";

/// Finds a user's credentials by name (case-insensitive).
pub fn credentials_by_name(conn: &Connection, name: &str) -> rusqlite::Result<Option<Credentials>> {
    conn.query_row(
        &format!("{CREDENTIALS_COLUMNS} WHERE name = ?1"),
        [name],
        credentials_from_row,
    )
    .optional()
}

/// Finds a user's credentials by id.
pub fn credentials_by_id(conn: &Connection, id: i64) -> rusqlite::Result<Option<Credentials>> {
    conn.query_row(
        &format!("{CREDENTIALS_COLUMNS} WHERE id = ?1"),
        [id],
        credentials_from_row,
    )
    .optional()
}

/// Inserts a user; the name must be free.
pub fn insert(
    conn: &Connection,
    name: &str,
    role: Role,
    password_hash: &str,
) -> Result<User, AuthError> {
    validate_name("user", name)?;
    let now = now_ms();
    let result = conn.execute(
        "INSERT INTO users (name, password_hash, role, created_at, password_changed_at)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![name, password_hash, role.as_str(), now],
    );
    match result {
        Ok(_) => get(conn, name)?.ok_or_else(|| AuthError::NotFound(format!("user {name:?}"))),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(AuthError::Conflict(format!(
                "a user named {name:?} already exists"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// One user by name.
pub fn get(conn: &Connection, name: &str) -> rusqlite::Result<Option<User>> {
    let row = conn
        .query_row(
            "SELECT id, name, role, disabled, created_at FROM users WHERE name = ?1",
            [name],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get(1)?,
                    parse_role(r.get(2)?)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            },
        )
        .optional()?;
    row.map(|(id, name, role, disabled, created_at)| {
        Ok(User {
            id,
            groups: groups_of(conn, id)?,
            name,
            role,
            disabled,
            created_at: format_ms(created_at),
        })
    })
    .transpose()
}

/// All users, by name.
pub fn list(conn: &Connection) -> rusqlite::Result<Vec<User>> {
    let mut stmt = conn.prepare(
        "SELECT id, name, role, disabled, created_at FROM users ORDER BY name COLLATE NOCASE",
    )?;
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                parse_role(r.get(2)?)?,
                r.get(3)?,
                r.get(4)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.into_iter()
        .map(|(id, name, role, disabled, created_at)| {
            Ok(User {
                id,
                groups: groups_of(conn, id)?,
                name,
                role,
                disabled,
                created_at: format_ms(created_at),
            })
        })
        .collect()
}

fn groups_of(conn: &Connection, user_id: i64) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT g.name FROM groups g JOIN group_members m ON m.group_id = g.id
         WHERE m.user_id = ?1 ORDER BY g.name COLLATE NOCASE",
    )?;
    let names = stmt.query_map([user_id], |r| r.get(0))?;
    names.collect()
}

/// Number of enabled admins; the last one may not be removed, demoted or disabled.
pub fn enabled_admins(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT COUNT(*) FROM users WHERE role = 'admin' AND disabled = 0",
        [],
        |r| r.get(0),
    )
}

/// Replaces a user's password hash; existing sessions end (refresh tokens are revoked and access
/// tokens issued before now are refused).
pub fn set_password(conn: &Connection, user_id: i64, password_hash: &str) -> rusqlite::Result<()> {
    let now = now_ms();
    conn.execute(
        "UPDATE users SET password_hash = ?1, password_changed_at = ?2 WHERE id = ?3",
        params![password_hash, now, user_id],
    )?;
    conn.execute(
        "UPDATE refresh_tokens SET revoked_at = ?1 WHERE user_id = ?2 AND revoked_at IS NULL",
        params![now, user_id],
    )?;
    Ok(())
}

/// Changes a user's role.
pub fn set_role(conn: &Connection, user_id: i64, role: Role) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE users SET role = ?1 WHERE id = ?2",
        params![role.as_str(), user_id],
    )?;
    Ok(())
}

/// Enables or disables a user.
pub fn set_disabled(conn: &Connection, user_id: i64, disabled: bool) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE users SET disabled = ?1 WHERE id = ?2",
        params![disabled, user_id],
    )?;
    Ok(())
}

/// Deletes a user with their tokens, keys and memberships.
pub fn delete(conn: &Connection, user_id: i64) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM users WHERE id = ?1", [user_id])?;
    Ok(())
}

/// All groups with their members.
pub fn list_groups(conn: &Connection) -> rusqlite::Result<Vec<Group>> {
    let mut stmt = conn.prepare("SELECT id, name FROM groups ORDER BY name COLLATE NOCASE")?;
    let groups = stmt
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    groups
        .into_iter()
        .map(|(id, name)| {
            let mut m = conn.prepare(
                "SELECT u.name FROM users u JOIN group_members gm ON gm.user_id = u.id
                 WHERE gm.group_id = ?1 ORDER BY u.name COLLATE NOCASE",
            )?;
            let members = m
                .query_map([id], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Group { id, name, members })
        })
        .collect()
}

fn group_id(conn: &Connection, name: &str) -> Result<i64, AuthError> {
    conn.query_row("SELECT id FROM groups WHERE name = ?1", [name], |r| {
        r.get(0)
    })
    .optional()?
    .ok_or_else(|| AuthError::NotFound(format!("no group named {name:?}")))
}

fn user_id(conn: &Connection, name: &str) -> Result<i64, AuthError> {
    conn.query_row("SELECT id FROM users WHERE name = ?1", [name], |r| r.get(0))
        .optional()?
        .ok_or_else(|| AuthError::NotFound(format!("no user named {name:?}")))
}

/// Creates an empty group.
pub fn create_group(conn: &Connection, name: &str) -> Result<Group, AuthError> {
    validate_name("group", name)?;
    match conn.execute(
        "INSERT INTO groups (name, created_at) VALUES (?1, ?2)",
        params![name, now_ms()],
    ) {
        Ok(_) => Ok(Group {
            id: conn.last_insert_rowid(),
            name: name.to_string(),
            members: Vec::new(),
        }),
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(AuthError::Conflict(format!(
                "a group named {name:?} already exists"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Deletes a group (members stay users).
pub fn delete_group(conn: &Connection, name: &str) -> Result<(), AuthError> {
    let id = group_id(conn, name)?;
    conn.execute("DELETE FROM groups WHERE id = ?1", [id])?;
    Ok(())
}

/// Adds a user to a group; adding a member twice is not an error.
pub fn add_member(conn: &Connection, group: &str, user: &str) -> Result<(), AuthError> {
    let g = group_id(conn, group)?;
    let u = user_id(conn, user)?;
    conn.execute(
        "INSERT OR IGNORE INTO group_members (group_id, user_id) VALUES (?1, ?2)",
        [g, u],
    )?;
    Ok(())
}

/// Removes a user from a group.
pub fn remove_member(conn: &Connection, group: &str, user: &str) -> Result<(), AuthError> {
    let g = group_id(conn, group)?;
    let u = user_id(conn, user)?;
    let n = conn.execute(
        "DELETE FROM group_members WHERE group_id = ?1 AND user_id = ?2",
        [g, u],
    )?;
    if n == 0 {
        return Err(AuthError::NotFound(format!(
            "{user:?} is not a member of {group:?}"
        )));
    }
    Ok(())
}
