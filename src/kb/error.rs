//! Errors of the knowledge base, each with the HTTP status it maps to.

use crate::store::StoreError;

/// Why a knowledge-base operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KbError {
    /// No such collection or document, or the caller may not see it.
    #[error("{0}")]
    NotFound(String),
    /// The caller sees it but may not change it.
    #[error("{0}")]
    Forbidden(String),
    /// Well-formed but invalid (422).
    #[error("{0}")]
    Invalid(String),
    /// Conflicts with what exists (409).
    #[error("{0}")]
    Conflict(String),
    /// Over a configured size limit (413).
    #[error("{0}")]
    TooLarge(String),
    /// A format the knowledge base cannot read, or a mislabelled file (415).
    #[error("{0}")]
    Unsupported(String),
    /// The disk is full (507); nothing was stored.
    #[error("{0}")]
    NoSpace(String),
    /// A dependency (the embedding model) is not available now (503).
    #[error("{0}")]
    Unavailable(String),
    /// A fault on the daemon's side.
    #[error("{0}")]
    Internal(String),
    /// The language model writing an answer failed or refused the request.
    #[error(transparent)]
    Generation(#[from] crate::inference::generate::GenerateError),
}

impl From<StoreError> for KbError {
    fn from(e: StoreError) -> Self {
        match &e {
            StoreError::Io { source, what, .. } if is_no_space(source) => {
                tracing::warn!(error = %e, "disk full");
                KbError::NoSpace(format!(
                    "the disk holding the data directory is full ({what}); free space and retry"
                ))
            }
            StoreError::Sqlite(s) => KbError::from_sqlite(s),
            _ => KbError::Internal(e.to_string()),
        }
    }
}

impl From<rusqlite::Error> for KbError {
    fn from(e: rusqlite::Error) -> Self {
        KbError::from_sqlite(&e)
    }
}

impl KbError {
    fn from_sqlite(e: &rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(f, _) = e
            && f.code == rusqlite::ErrorCode::DiskFull
        {
            return KbError::NoSpace(
                "the disk holding the data directory is full; free space and retry".into(),
            );
        }
        KbError::Internal(format!("database error: {e}"))
    }

    /// Maps a filesystem error, telling a full disk apart.
    pub fn io(what: &str, e: &std::io::Error) -> Self {
        if is_no_space(e) {
            KbError::NoSpace(format!(
                "{what}: the disk holding the data directory is full; free space and retry"
            ))
        } else {
            KbError::Internal(format!("{what}: {e}"))
        }
    }
}

fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
    )
}
