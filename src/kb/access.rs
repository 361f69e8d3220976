//! Who may do what with a collection.

use rusqlite::{Connection, OptionalExtension, params};

use crate::auth::{Principal, Role};

/// What a caller may do with one collection; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Search it and read its documents.
    Read,
    /// Also add and delete documents.
    Write,
    /// Also rename, describe, share and delete it: its owner and admins.
    Manage,
}

/// The caller's access to collection `id`, or `None` when the caller may not even know it
/// exists (the routes then answer 404, never 403).
pub fn access_of(
    conn: &Connection,
    who: &Principal,
    collection: i64,
) -> rusqlite::Result<Option<Access>> {
    let owner: Option<i64> = conn
        .query_row(
            "SELECT owner_id FROM collections WHERE id = ?1",
            [collection],
            |r| r.get(0),
        )
        .optional()?;
    let Some(owner) = owner else {
        return Ok(None);
    };
    if who.is_admin() {
        return Ok(Some(Access::Manage));
    }
    if owner == who.user_id {
        // An owner demoted to viewer keeps reading what they own, and only that.
        return Ok(Some(if who.role == Role::Viewer {
            Access::Read
        } else {
            Access::Manage
        }));
    }
    let granted: Option<String> = conn
        .query_row(
            "SELECT MAX(access) FROM collection_grants g
             WHERE g.collection_id = ?1
               AND (g.user_id = ?2
                    OR g.group_id IN (SELECT group_id FROM group_members WHERE user_id = ?2))",
            params![collection, who.user_id],
            |r| r.get(0),
        )
        .optional()?
        .flatten();
    // 'write' > 'read' as text, so MAX picks the strongest grant; a viewer reads only,
    // whatever a grant says.
    Ok(match granted.as_deref() {
        Some("write") if who.role != Role::Viewer => Some(Access::Write),
        Some("write" | "read") => Some(Access::Read),
        _ => None,
    })
}

/// SQL condition (on `collections c`, parameter `?1` = the caller's user id) selecting the
/// collections a non-admin caller may read.
pub const READABLE_BY_USER: &str = "(c.owner_id = ?1 OR EXISTS (
        SELECT 1 FROM collection_grants g
        WHERE g.collection_id = c.id
          AND (g.user_id = ?1
               OR g.group_id IN (SELECT group_id FROM group_members WHERE user_id = ?1))))";
