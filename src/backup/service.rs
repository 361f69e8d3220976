//! The daemon's backup handle: one backup at a time, results kept for the API, the console and
//! `/metrics`, and logged to the journal.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::snapshot::{self, Live};
use super::{ArchiveInfo, BackupError, CreateOptions, Created, Encryption, IndexMode, Target};
use crate::config::Config;
use crate::kb::KnowledgeBase;
use crate::store::BlobStore;
use crate::telemetry::metrics::BackupMetrics;

/// What a caller may choose for one backup; the rest comes from `[backup]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A folder or `s3://bucket/prefix` instead of the configured target.
    pub target: Option<String>,
    /// Encrypt with the passphrase in this file (on the daemon's machine).
    pub passphrase_file: Option<PathBuf>,
    /// Or to these age public keys.
    pub recipients: Option<Vec<String>>,
    /// Include model files.
    pub include_models: Option<bool>,
    /// Include the indexes or have them rebuilt.
    pub indexes: Option<IndexMode>,
}

/// The last successful backup.
#[derive(Debug, Clone, Serialize)]
pub struct LastSuccess {
    /// When it finished (RFC 3339).
    pub at: String,
    /// Archive name.
    pub name: String,
    /// Where it went.
    pub location: String,
    /// Archive size.
    pub size_bytes: u64,
    /// How long it took (absent when read back from the target at start).
    pub duration_ms: Option<u64>,
}

/// The last failed backup.
#[derive(Debug, Clone, Serialize)]
pub struct LastFailure {
    /// When it failed (RFC 3339).
    pub at: String,
    /// Why.
    pub error: String,
}

/// What `GET /api/v1/backups` shows.
#[derive(Debug, Clone, Serialize)]
pub struct BackupStatus {
    /// The configured target, if any.
    pub target: Option<String>,
    /// Whether archives to it are encrypted.
    pub encrypted: bool,
    /// Whether a backup is running now.
    pub running: bool,
    /// The last success since start (or the newest archive at the target).
    pub last_success: Option<LastSuccess>,
    /// The last failure since start.
    pub last_failure: Option<LastFailure>,
    /// Failures since start.
    pub failures_total: u64,
    /// Archives at the configured target, newest first.
    pub backups: Vec<ArchiveInfo>,
    /// Why the target could not be listed.
    pub list_error: Option<String>,
}

#[derive(Default)]
struct History {
    last_success: Option<LastSuccess>,
    last_failure: Option<LastFailure>,
}

/// Backups of the running daemon.
pub struct Backups {
    config: Config,
    config_file: Option<PathBuf>,
    running: tokio::sync::Mutex<()>,
    history: Mutex<History>,
    metrics: BackupMetrics,
}

impl Backups {
    /// The handle; reads the newest archive at the configured target in the background so the
    /// metrics tell how old the last backup is from the first scrape.
    pub fn new(
        config: &Config,
        config_file: Option<PathBuf>,
        metrics: BackupMetrics,
    ) -> Arc<Backups> {
        let backups = Arc::new(Backups {
            config: config.clone(),
            config_file,
            running: tokio::sync::Mutex::new(()),
            history: Mutex::new(History::default()),
            metrics,
        });
        if let Some(target) = backups.configured_target() {
            let me = backups.clone();
            tokio::task::spawn_blocking(move || match target.list() {
                Ok(list) => {
                    if let Some(newest) = list.first() {
                        me.metrics
                            .last_success
                            .set(super::format::name_timestamp(&newest.name).unwrap_or_default());
                        me.metrics.last_size.set(newest.size_bytes as i64);
                        if let Ok(mut h) = me.history.lock()
                            && h.last_success.is_none()
                        {
                            h.last_success = Some(LastSuccess {
                                at: newest.created_at.clone(),
                                name: newest.name.clone(),
                                location: newest.location.clone(),
                                size_bytes: newest.size_bytes,
                                duration_ms: None,
                            });
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot list the backup target"),
            });
        }
        backups
    }

    fn configured_target(&self) -> Option<Target> {
        let text = self.config.backup.target.trim();
        (!text.is_empty())
            .then(|| Target::parse(text, &self.config.backup.s3).ok())
            .flatten()
    }

    fn configured_encryption(&self) -> Encryption {
        let b = &self.config.backup;
        if !b.passphrase_file.as_os_str().is_empty() {
            Encryption::Passphrase(b.passphrase_file.clone())
        } else if !b.recipients.is_empty() {
            Encryption::Recipients(b.recipients.clone())
        } else {
            Encryption::None
        }
    }

    /// The options of one backup: the request over the configuration.
    pub fn options(&self, request: &CreateRequest) -> Result<CreateOptions, BackupError> {
        options_from(&self.config, request)
    }

    /// Takes a backup while the daemon serves. 409-style refusal when one is running.
    pub async fn create(
        &self,
        kb: Option<Arc<KnowledgeBase>>,
        blobs: BlobStore,
        request: CreateRequest,
    ) -> Result<Created, BackupError> {
        let options = self.options(&request)?;
        let _running = self.running.try_lock().map_err(|_| {
            BackupError::Busy("a backup is already running; wait for it to finish".into())
        })?;
        let config = self.config.clone();
        let config_file = self.config_file.clone();
        let target = options.target.display();
        tracing::info!(target = %target, "backup started");
        let result = tokio::task::spawn_blocking(move || {
            let live = Live {
                kb: kb.as_deref(),
                blobs: &blobs,
            };
            snapshot::run(&config, config_file.as_deref(), &live, &options)
        })
        .await
        .unwrap_or_else(|e| {
            Err(BackupError::Internal(format!(
                "the backup task failed: {e}"
            )))
        });
        let now = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        match &result {
            Ok(created) => {
                tracing::info!(
                    target = %target,
                    archive = %created.location,
                    size_bytes = created.size_bytes,
                    duration_ms = created.duration_ms,
                    documents = created.documents,
                    encrypted = created.encrypted,
                    pruned = created.pruned.len(),
                    "backup succeeded"
                );
                self.metrics.last_success.set(
                    SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64),
                );
                self.metrics.last_size.set(created.size_bytes as i64);
                if let Ok(mut h) = self.history.lock() {
                    h.last_success = Some(LastSuccess {
                        at: now,
                        name: created.name.clone(),
                        location: created.location.clone(),
                        size_bytes: created.size_bytes,
                        duration_ms: Some(created.duration_ms),
                    });
                }
            }
            Err(e) => {
                tracing::error!(target = %target, error = %e, "backup failed");
                self.metrics.failures.inc();
                if let Ok(mut h) = self.history.lock() {
                    h.last_failure = Some(LastFailure {
                        at: now,
                        error: e.to_string(),
                    });
                }
            }
        }
        result
    }

    /// The state shown by the API and the console; lists the configured target.
    pub async fn status(&self) -> BackupStatus {
        let target = self.configured_target();
        let (backups, list_error) = match target.clone() {
            Some(t) => match tokio::task::spawn_blocking(move || t.list()).await {
                Ok(Ok(list)) => (list, None),
                Ok(Err(e)) => (Vec::new(), Some(e.to_string())),
                Err(e) => (Vec::new(), Some(e.to_string())),
            },
            None => (Vec::new(), None),
        };
        let (last_success, last_failure) = self
            .history
            .lock()
            .map(|h| (h.last_success.clone(), h.last_failure.clone()))
            .unwrap_or_default();
        BackupStatus {
            target: target.map(|t| t.display()),
            encrypted: self.configured_encryption().is_encrypted(),
            running: self.running.try_lock().is_err(),
            last_success,
            last_failure,
            failures_total: self.metrics.failures.get(),
            backups,
            list_error,
        }
    }
}

/// The options of one backup: the request (or command line) over `[backup]`.
pub fn options_from(
    config: &Config,
    request: &CreateRequest,
) -> Result<CreateOptions, BackupError> {
    let b = &config.backup;
    let target_text = request.target.as_deref().unwrap_or(&b.target);
    let target = Target::parse(target_text, &b.s3)?;
    let encryption = match (&request.passphrase_file, &request.recipients) {
        (Some(_), Some(_)) => {
            return Err(BackupError::Refused(
                "give a passphrase file or recipients, not both".into(),
            ));
        }
        (Some(file), None) => Encryption::Passphrase(file.clone()),
        (None, Some(keys)) => Encryption::Recipients(keys.clone()),
        (None, None) if !b.passphrase_file.as_os_str().is_empty() => {
            Encryption::Passphrase(b.passphrase_file.clone())
        }
        (None, None) if !b.recipients.is_empty() => Encryption::Recipients(b.recipients.clone()),
        (None, None) => Encryption::None,
    };
    Ok(CreateOptions {
        target,
        encryption,
        include_models: request.include_models.unwrap_or(b.include_models),
        indexes: request.indexes.unwrap_or(b.indexes),
        keep_last: b.keep_last,
        keep_days: b.keep_days,
    })
}
