//! The audit log: every denied auth decision and every admin action, in SQLite.

use rusqlite::{Connection, params_from_iter};
use serde::Serialize;

use crate::store::{format_ms, now_ms};

/// How an audited decision ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The action was allowed and done.
    Allowed,
    /// The request was refused (authentication or authorisation).
    Denied,
    /// The action was allowed but failed (e.g. a conflict).
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// One event to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// Who acted (user name, `key:<id>` suffix for API keys, `local:<uid>` for the CLI), if known.
    pub actor: Option<String>,
    /// What was attempted, e.g. `user.create`, `auth.login`.
    pub action: &'static str,
    /// What it was done to, e.g. a user name.
    pub target: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Source address of the request, if any.
    pub source: Option<String>,
    /// Why (for denials) or what changed; never a secret.
    pub detail: Option<String>,
}

/// A stored audit row.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Row id; increasing.
    pub id: i64,
    /// RFC 3339 time.
    pub at: String,
    /// Who acted.
    pub actor: Option<String>,
    /// What was attempted.
    pub action: String,
    /// What it was done to.
    pub target: Option<String>,
    /// `allowed`, `denied` or `failed`.
    pub outcome: String,
    /// Source address.
    pub source: Option<String>,
    /// Reason or change.
    pub detail: Option<String>,
}

/// Filters for listing the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only rows with an id below this (for paging).
    pub before_id: Option<i64>,
    /// Only this actor.
    pub actor: Option<String>,
    /// Only this action.
    pub action: Option<String>,
    /// Only this outcome.
    pub outcome: Option<String>,
    /// At most this many rows.
    pub limit: u32,
}

/// Appends an event.
pub fn record(conn: &Connection, e: &AuditEvent) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO audit_log (at, actor, action, target, outcome, source, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        (
            now_ms(),
            &e.actor,
            e.action,
            &e.target,
            e.outcome.as_str(),
            &e.source,
            &e.detail,
        ),
    )?;
    Ok(())
}

/// Lists events matching `q`, newest first.
pub fn list(conn: &Connection, q: &AuditQuery) -> rusqlite::Result<Vec<AuditEntry>> {
    let mut sql = String::from(
        "SELECT id, at, actor, action, target, outcome, source, detail FROM audit_log WHERE 1=1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    if let Some(id) = q.before_id {
        sql.push_str(" AND id < ?");
        args.push(id.into());
    }
    for (column, value) in [
        ("actor", &q.actor),
        ("action", &q.action),
        ("outcome", &q.outcome),
    ] {
        if let Some(v) = value {
            sql.push_str(&format!(" AND {column} = ?"));
            args.push(v.clone().into());
        }
    }
    sql.push_str(" ORDER BY id DESC LIMIT ?");
    args.push(i64::from(q.limit).into());
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        Ok(AuditEntry {
            id: r.get(0)?,
            at: format_ms(r.get(1)?),
            actor: r.get(2)?,
            action: r.get(3)?,
            target: r.get(4)?,
            outcome: r.get(5)?,
            source: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    rows.collect()
}
