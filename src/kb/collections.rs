//! Collections: create, list, describe, change, share and delete.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::access::{Access, READABLE_BY_USER, access_of};
use super::index::IndexState;
use super::{KbError, KnowledgeBase, Language};
use crate::auth::Principal;
use crate::store::{format_ms, now_ms};

/// Body of `POST /api/v1/collections`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCollection {
    /// 1–64 letters, digits, `.`, `_`, `-`; unique (case-insensitive).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// The embedding model (a served model with an embedding task); fixed for life.
    pub embedding_model: Option<String>,
    /// Full-text language code; `kb.default_language` when absent.
    pub language: Option<String>,
    /// Who else may read or write it.
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// Body of `PATCH /api/v1/collections/{c}`; absent fields stay as they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionPatch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// Replaces the whole grant list.
    pub grants: Option<Vec<Grant>>,
}

/// A grant: one user or one group, with read or write access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who.
    #[serde(flatten)]
    pub to: GrantTarget,
    /// `read` or `write`.
    pub access: GrantAccess,
}

/// The grantee of a [`Grant`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantTarget {
    /// A user, by name.
    User(String),
    /// A group, by name.
    Group(String),
}

/// The access a grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantAccess {
    /// Search and read.
    Read,
    /// Also add and delete documents.
    Write,
}

/// A collection as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Collection {
    /// Numeric id.
    pub id: i64,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The owner's user name.
    pub owner: String,
    /// The embedding model, fixed at creation.
    pub embedding_model: String,
    /// Its vector dimensions.
    pub dimensions: usize,
    /// Full-text language code.
    pub language: String,
    /// What the caller may do.
    pub access: Access,
    /// Grants; shown to those who may manage the collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants: Option<Vec<Grant>>,
    /// Document and chunk counts.
    pub counts: CollectionCounts,
    /// State of the derived indexes (single-collection views only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexState>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Last change of its settings (RFC 3339).
    pub updated_at: String,
}

/// Counts of one collection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectionCounts {
    /// Documents in any state.
    pub documents: i64,
    /// Documents by status.
    pub by_status: HashMap<String, i64>,
    /// Chunks stored.
    pub chunks: i64,
    /// Bytes of original files.
    pub bytes: i64,
}

/// A collection row, before the caller's view is added.
pub(super) struct Row {
    pub id: i64,
    pub name: String,
    pub description: String,
    pub owner: String,
    pub embedding_model: String,
    pub dimensions: usize,
    pub language: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const SELECT_ROW: &str = "SELECT c.id, c.name, c.description, u.name, c.embedding_model, \
     c.dimensions, c.language, c.created_at, c.updated_at \
     FROM collections c JOIN users u ON u.id = c.owner_id";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        description: r.get(2)?,
        owner: r.get(3)?,
        embedding_model: r.get(4)?,
        dimensions: r.get::<_, i64>(5)? as usize,
        language: r.get(6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// Checks a collection name (the same rule as user and group names, so it fits a URL).
pub fn validate_name(name: &str) -> Result<(), KbError> {
    crate::auth::users::validate_name("collection", name)
        .map_err(|e| KbError::Invalid(e.to_string()))
}

fn not_found(name: &str) -> KbError {
    KbError::NotFound(format!("no collection named {name:?}"))
}

/// Finds a collection the caller may see, by name; 404 otherwise, whether it exists or not.
pub(super) fn resolve(
    conn: &Connection,
    who: &Principal,
    name: &str,
) -> Result<(Row, Access), KbError> {
    let row = conn
        .query_row(&format!("{SELECT_ROW} WHERE c.name = ?1"), [name], read_row)
        .optional()?
        .ok_or_else(|| not_found(name))?;
    let access = access_of(conn, who, row.id)?.ok_or_else(|| not_found(name))?;
    Ok((row, access))
}

/// Like [`resolve`], and refuses (403) a caller below `needed`.
pub(super) fn resolve_for(
    conn: &Connection,
    who: &Principal,
    name: &str,
    needed: Access,
) -> Result<Row, KbError> {
    let (row, access) = resolve(conn, who, name)?;
    if access < needed {
        return Err(KbError::Forbidden(match needed {
            Access::Write => format!(
                "you may read collection {name:?} but not change its documents; ask its owner for write access"
            ),
            _ => {
                format!("only the owner of collection {name:?} or an admin may change its settings")
            }
        }));
    }
    Ok(row)
}

/// Ids of the collections the caller may read.
pub(super) fn readable_ids(conn: &Connection, who: &Principal) -> rusqlite::Result<Vec<i64>> {
    let sql = if who.is_admin() {
        "SELECT c.id FROM collections c WHERE ?1 = ?1 ORDER BY c.id".to_string()
    } else {
        format!("SELECT c.id FROM collections c WHERE {READABLE_BY_USER} ORDER BY c.id")
    };
    let mut stmt = conn.prepare(&sql)?;
    stmt.query_map([who.user_id], |r| r.get(0))?.collect()
}

fn counts(conn: &Connection, id: i64) -> rusqlite::Result<CollectionCounts> {
    let mut counts = CollectionCounts::default();
    let mut stmt = conn.prepare_cached(
        "SELECT status, COUNT(*), COALESCE(SUM(chunks), 0), COALESCE(SUM(size), 0)
         FROM documents WHERE collection_id = ?1 GROUP BY status",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    for row in rows {
        let (status, n, chunks, bytes) = row?;
        counts.documents += n;
        counts.chunks += chunks;
        counts.bytes += bytes;
        counts.by_status.insert(status, n);
    }
    Ok(counts)
}

fn grants(conn: &Connection, id: i64) -> rusqlite::Result<Vec<Grant>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.name, gr.name, g.access FROM collection_grants g
         LEFT JOIN users u ON u.id = g.user_id
         LEFT JOIN groups gr ON gr.id = g.group_id
         WHERE g.collection_id = ?1 ORDER BY u.name, gr.name",
    )?;
    stmt.query_map([id], |r| {
        let user: Option<String> = r.get(0)?;
        let group: Option<String> = r.get(1)?;
        let access: String = r.get(2)?;
        Ok(Grant {
            to: match (user, group) {
                (Some(u), _) => GrantTarget::User(u),
                (None, g) => GrantTarget::Group(g.unwrap_or_default()),
            },
            access: if access == "write" {
                GrantAccess::Write
            } else {
                GrantAccess::Read
            },
        })
    })?
    .collect()
}

fn set_grants(tx: &Transaction<'_>, id: i64, list: &[Grant]) -> Result<(), KbError> {
    tx.execute(
        "DELETE FROM collection_grants WHERE collection_id = ?1",
        [id],
    )?;
    for grant in list {
        let access = match grant.access {
            GrantAccess::Read => "read",
            GrantAccess::Write => "write",
        };
        let (sql, name, kind) = match &grant.to {
            GrantTarget::User(n) => (
                "INSERT INTO collection_grants (collection_id, user_id, access)
                 SELECT ?1, id, ?3 FROM users WHERE name = ?2
                 ON CONFLICT DO UPDATE SET access = MAX(access, excluded.access)",
                n,
                "user",
            ),
            GrantTarget::Group(n) => (
                "INSERT INTO collection_grants (collection_id, group_id, access)
                 SELECT ?1, id, ?3 FROM groups WHERE name = ?2
                 ON CONFLICT DO UPDATE SET access = MAX(access, excluded.access)",
                n,
                "group",
            ),
        };
        if tx.execute(sql, params![id, name, access])? == 0 {
            return Err(KbError::Invalid(format!(
                "cannot share with {kind} {name:?}: there is no such {kind}"
            )));
        }
    }
    Ok(())
}

/// The caller's view of a collection; `index` only for single-collection views.
fn view(
    conn: &Connection,
    row: Row,
    access: Access,
    index: Option<IndexState>,
) -> Result<Collection, KbError> {
    Ok(Collection {
        counts: counts(conn, row.id)?,
        grants: if access == Access::Manage {
            Some(grants(conn, row.id)?)
        } else {
            None
        },
        index,
        id: row.id,
        name: row.name,
        description: row.description,
        owner: row.owner,
        embedding_model: row.embedding_model,
        dimensions: row.dimensions,
        language: row.language,
        access,
        created_at: format_ms(row.created_at),
        updated_at: format_ms(row.updated_at),
    })
}

impl KnowledgeBase {
    /// Creates a collection owned by the caller (editors and admins).
    pub async fn create_collection(
        &self,
        who: &Principal,
        req: NewCollection,
    ) -> Result<Collection, KbError> {
        if who.role == crate::auth::Role::Viewer {
            return Err(KbError::Forbidden(
                "viewers cannot create collections; ask an admin for the editor role".into(),
            ));
        }
        validate_name(&req.name)?;
        let language = match &req.language {
            Some(code) => Language::parse(code).ok_or_else(|| {
                KbError::Invalid(format!(
                    "unknown language {code:?}: use one of {}",
                    Language::NAMES.join(", ")
                ))
            })?,
            None => Language::parse(&self.config.default_language).unwrap_or(Language::None),
        };
        let model = req
            .embedding_model
            .clone()
            .unwrap_or_else(|| self.default_model.clone());
        let dimensions = self.model_dimensions(&model).await?;
        let who = who.clone();
        let created = self
            .store
            .run(move |conn| -> Result<(i64, Access), KbError> {
                let tx = conn.transaction()?;
                let now = now_ms();
                let inserted = tx.execute(
                    "INSERT INTO collections (name, description, owner_id, embedding_model,
                         dimensions, language, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7) ON CONFLICT (name) DO NOTHING",
                    params![
                        req.name,
                        req.description,
                        who.user_id,
                        model,
                        dimensions as i64,
                        language.code(),
                        now
                    ],
                )?;
                if inserted == 0 {
                    return Err(KbError::Conflict(format!(
                        "a collection named {:?} already exists",
                        req.name
                    )));
                }
                let id = tx.last_insert_rowid();
                set_grants(&tx, id, &req.grants)?;
                tx.commit()?;
                Ok((id, Access::Manage))
            })
            .await?;
        self.collection_by_id(created.0, created.1).await
    }

    async fn collection_by_id(&self, id: i64, access: Access) -> Result<Collection, KbError> {
        let index = self.indexes.state(id);
        self.store
            .run(move |conn| -> Result<Collection, KbError> {
                let row =
                    conn.query_row(&format!("{SELECT_ROW} WHERE c.id = ?1"), [id], read_row)?;
                view(conn, row, access, index)
            })
            .await
    }

    /// The collections the caller may read.
    pub async fn list_collections(&self, who: &Principal) -> Result<Vec<Collection>, KbError> {
        let who = who.clone();
        self.store
            .run(move |conn| -> Result<Vec<Collection>, KbError> {
                let ids = readable_ids(conn, &who)?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    let row =
                        conn.query_row(&format!("{SELECT_ROW} WHERE c.id = ?1"), [id], read_row)?;
                    if let Some(access) = access_of(conn, &who, id)? {
                        out.push(view(conn, row, access, None)?);
                    }
                }
                Ok(out)
            })
            .await
    }

    /// One collection the caller may read, with its index state.
    pub async fn get_collection(&self, who: &Principal, name: &str) -> Result<Collection, KbError> {
        let (who, name) = (who.clone(), name.to_string());
        let indexes = self.indexes.clone();
        self.store
            .run(move |conn| -> Result<Collection, KbError> {
                let (row, access) = resolve(conn, &who, &name)?;
                let index = indexes.state(row.id);
                view(conn, row, access, index)
            })
            .await
    }

    /// Renames, describes or re-shares a collection (owner or admin).
    pub async fn update_collection(
        &self,
        who: &Principal,
        name: &str,
        patch: CollectionPatch,
    ) -> Result<Collection, KbError> {
        if let Some(n) = &patch.name {
            validate_name(n)?;
        }
        let (who2, name) = (who.clone(), name.to_string());
        let id = self
            .store
            .run(move |conn| -> Result<i64, KbError> {
                let row = resolve_for(conn, &who2, &name, Access::Manage)?;
                let tx = conn.transaction()?;
                if let Some(new_name) = &patch.name {
                    let clash: Option<i64> = tx
                        .query_row(
                            "SELECT id FROM collections WHERE name = ?1 AND id <> ?2",
                            params![new_name, row.id],
                            |r| r.get(0),
                        )
                        .optional()?;
                    if clash.is_some() {
                        return Err(KbError::Conflict(format!(
                            "a collection named {new_name:?} already exists"
                        )));
                    }
                    tx.execute(
                        "UPDATE collections SET name = ?1 WHERE id = ?2",
                        params![new_name, row.id],
                    )?;
                }
                if let Some(d) = &patch.description {
                    tx.execute(
                        "UPDATE collections SET description = ?1 WHERE id = ?2",
                        params![d, row.id],
                    )?;
                }
                if let Some(list) = &patch.grants {
                    set_grants(&tx, row.id, list)?;
                }
                tx.execute(
                    "UPDATE collections SET updated_at = ?1 WHERE id = ?2",
                    params![now_ms(), row.id],
                )?;
                tx.commit()?;
                Ok(row.id)
            })
            .await?;
        self.collection_by_id(id, Access::Manage).await
    }

    /// Deletes a collection with its documents, chunks, blobs and indexes (owner or admin).
    pub async fn delete_collection(&self, who: &Principal, name: &str) -> Result<(), KbError> {
        let (who, name) = (who.clone(), name.to_string());
        let _guard = self.blob_guard.lock().await;
        let (id, blobs) = self
            .store
            .run(move |conn| -> Result<(i64, Vec<String>), KbError> {
                let row = resolve_for(conn, &who, &name, Access::Manage)?;
                let tx = conn.transaction()?;
                let blobs = {
                    let mut stmt = tx.prepare(
                        "SELECT DISTINCT sha256 FROM documents d WHERE collection_id = ?1
                         AND NOT EXISTS (SELECT 1 FROM documents o
                                         WHERE o.sha256 = d.sha256 AND o.collection_id <> ?1)",
                    )?;
                    stmt.query_map([row.id], |r| r.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()?
                };
                // Chunks and documents go by cascade; the index log of a gone collection is
                // useless, and its index folder is removed below (or swept at the next start).
                tx.execute(
                    "DELETE FROM index_changes WHERE collection_id = ?1",
                    [row.id],
                )?;
                tx.execute("DELETE FROM collections WHERE id = ?1", [row.id])?;
                tx.commit()?;
                Ok((row.id, blobs))
            })
            .await?;
        self.remove_blobs_locked(blobs);
        drop(_guard);
        self.indexes.drop_collection(id);
        Ok(())
    }

    /// The vector size of an embedding model, by embedding a probe; refuses models that do not
    /// embed.
    async fn model_dimensions(&self, model: &str) -> Result<usize, KbError> {
        let served = self.embedding_model(model)?;
        let (vectors, _) = served
            .embed(&["dimension probe".to_string()], None)
            .await
            .map_err(|e| {
                KbError::Invalid(format!("cannot use model {model:?} for embeddings: {e}"))
            })?;
        vectors
            .first()
            .map(Vec::len)
            .filter(|&n| n > 0)
            .ok_or_else(|| KbError::Invalid(format!("model {model:?} returned no vector")))
    }
}
