//! Backups: consistent online snapshots of everything the appliance needs to come back, in a
//! versioned, checksummed, optionally encrypted archive; verification; restore into a fresh
//! folder swapped in atomically; targets on disk or S3 with retention.
//!
//! The format is in [`format`]. [`Backups`] is the daemon's handle (the API and the scheduled
//! backups go through it); `sparkbrain backup` calls [`create_offline`], [`verify`] and
//! [`restore`] directly when the daemon is stopped.

mod archive;
pub mod crypto;
pub mod format;
mod restore;
mod service;
mod snapshot;
mod target;

use std::path::Path;

pub use archive::{Verified, verify};
pub use crypto::{Decryption, Encryption};
pub use restore::{
    RestoreOptions, Restored, confirm_restore, recover_interrupted_restore, restore,
};
pub use service::{BackupStatus, Backups, CreateRequest, LastFailure, LastSuccess, options_from};
pub use snapshot::create_offline;
pub use target::{ArchiveInfo, Target, split_s3_url};

pub use crate::config::IndexMode;

/// What to put in an archive and where.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Where the archive goes.
    pub target: Target,
    /// Encryption; secrets go in only when encrypted.
    pub encryption: Encryption,
    /// Include model files, not only their configs.
    pub include_models: bool,
    /// Indexes in the archive or rebuilt.
    pub indexes: IndexMode,
    /// Keep this many newest archives at the target after writing (0 = all).
    pub keep_last: u32,
    /// Remove archives older than this many days after writing (0 = none).
    pub keep_days: u32,
}

/// What one backup produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Created {
    /// Archive file name.
    pub name: String,
    /// Where it is: a path or `s3://bucket/key`.
    pub location: String,
    /// Archive size in bytes.
    pub size_bytes: u64,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// Whether secrets are inside (only when encrypted).
    pub secrets_included: bool,
    /// `include` or `rebuild`.
    pub indexes: IndexMode,
    /// When the snapshot was taken (RFC 3339).
    pub created_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Documents in the snapshot.
    pub documents: u64,
    /// Chunks in the snapshot.
    pub chunks: u64,
    /// Archives removed by the retention rules.
    pub pruned: Vec<String>,
}

/// Errors of backup, verify and restore.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database could not be read or written.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The archive is damaged: a checksum, size, structure or truncation problem.
    #[error("the archive is damaged: {0}")]
    Corrupt(String),
    /// The archive was written by a newer sparkbrain (format or schema).
    #[error("{0}")]
    TooNew(String),
    /// The archive is encrypted and no usable key was given, or a key file is unusable.
    #[error("{0}")]
    KeyNeeded(String),
    /// The key given does not decrypt the archive.
    #[error("{0}")]
    WrongKey(String),
    /// Encryption could not be set up.
    #[error("cannot encrypt: {0}")]
    Encryption(String),
    /// The request is not possible now (daemon running, no target, bad settings).
    #[error("{0}")]
    Refused(String),
    /// Another backup is running.
    #[error("{0}")]
    Busy(String),
    /// The target (folder or S3) failed.
    #[error("backup target {target}: {detail}")]
    Target {
        /// The target.
        target: String,
        /// What failed.
        detail: String,
    },
    /// Something the knowledge base or store reported.
    #[error("{0}")]
    Internal(String),
}

impl BackupError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> BackupError {
        BackupError::Io {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io_at(what: &str, path: &Path, source: std::io::Error) -> BackupError {
        BackupError::Io {
            what: format!("{what} {}", path.display()),
            source,
        }
    }

    /// The exit status of `sparkbrain backup`: 20 damaged, 21 too new, 22 key needed or wrong,
    /// 23 refused, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            BackupError::Corrupt(_) => 20,
            BackupError::TooNew(_) => 21,
            BackupError::KeyNeeded(_) | BackupError::WrongKey(_) => 22,
            BackupError::Refused(_) | BackupError::Busy(_) => 23,
            _ => 1,
        }
    }
}

/// Folders in the data directory a restore or backup keeps to itself.
pub(crate) const RESTORE_NEW: &str = ".restore-new";
pub(crate) const RESTORE_OLD: &str = ".restore-old";
pub(crate) const RESTORE_JOURNAL: &str = ".restore-journal";
pub(crate) const STAGING: &str = ".backup-staging";
