//! Taking a consistent snapshot of a data directory and writing it as an archive.
//!
//! The order makes it one instant: the indexes are linked first (between two applier rounds),
//! then SQLite is copied with its online backup API, then the blobs the copy references are
//! read under a [`BlobHold`]. The indexes can only be behind the database copy, never ahead,
//! and the daemon replays what they miss from the copy's change log when it opens them, as it
//! does after a crash.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::{Connection, OpenFlags};
use walkdir::WalkDir;

use super::archive::ArchiveWriter;
use super::format::{self, DATA_PREFIX, FORMAT_VERSION, Header, SYSTEM_PREFIX};
use super::{BackupError, CreateOptions, Created, IndexMode, STAGING, target};
use crate::config::Config;
use crate::kb::{INDEX_DIR, KnowledgeBase};
use crate::store::{BlobHold, BlobId, BlobStore, DB_FILE, DataDirLock};

/// Extensions of model weights: left out unless model files are asked for.
const MODEL_FILE_EXTENSIONS: &[&str] = &[
    "onnx",
    "data",
    "plan",
    "engine",
    "bin",
    "safetensors",
    "pt",
    "pb",
    "gguf",
];

/// The running daemon's parts a snapshot needs.
pub(crate) struct Live<'a> {
    /// The knowledge base, whose applier must pause while its index files are linked.
    pub kb: Option<&'a KnowledgeBase>,
    /// The blob store, held while blobs are read.
    pub blobs: &'a BlobStore,
}

/// Writes an archive of `config.data_dir` at `path`. Blocking.
pub(crate) fn write(
    config: &Config,
    config_file: Option<&Path>,
    live: &Live<'_>,
    options: &CreateOptions,
    path: &Path,
) -> Result<(Header, u64), BackupError> {
    let data_dir = &config.data_dir;
    let staging_root = data_dir.join(STAGING);
    // Only one backup runs at a time (the daemon and the data directory lock see to it), so
    // anything here is left over from one that was interrupted.
    let _ = std::fs::remove_dir_all(&staging_root);
    let staging = staging_root.join(format!("{}", std::process::id()));
    std::fs::create_dir_all(&staging)
        .map_err(|e| BackupError::io_at("cannot create", &staging, e))?;
    let result = write_staged(config, config_file, live, options, path, &staging);
    let _ = std::fs::remove_dir_all(&staging_root);
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

fn write_staged(
    config: &Config,
    config_file: Option<&Path>,
    live: &Live<'_>,
    options: &CreateOptions,
    path: &Path,
    staging: &Path,
) -> Result<(Header, u64), BackupError> {
    let data_dir = &config.data_dir;
    let encrypted = options.encryption.is_encrypted();
    let index_copy = staging.join("indexes");
    if options.indexes == IndexMode::Include {
        match live.kb {
            Some(kb) => kb.snapshot_indexes(&index_copy),
            None => crate::kb::snapshot_index_files(&data_dir.join(INDEX_DIR), &index_copy),
        }
        .map_err(|e| BackupError::Internal(format!("cannot snapshot the indexes: {e}")))?;
    }
    let hold = live.blobs.hold();
    let db_copy = staging.join(DB_FILE);
    copy_database(&data_dir.join(DB_FILE), &db_copy, encrypted)?;
    let (schema_version, documents, chunks, shas) = describe(&db_copy)?;

    let created = SystemTime::now();
    let header = Header {
        format_version: FORMAT_VERSION,
        sparkbrain_version: env!("CARGO_PKG_VERSION").to_string(),
        schema_version,
        created_at: humantime::format_rfc3339_seconds(created).to_string(),
        hostname: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        secrets_included: encrypted,
        indexes_included: options.indexes == IndexMode::Include,
        models_included: options.include_models,
        documents,
        chunks,
    };
    let mut archive = ArchiveWriter::create(path, &options.encryption, &header)?;
    archive.add_file(&format!("{DATA_PREFIX}{DB_FILE}"), &db_copy)?;
    add_blobs(&mut archive, &hold, data_dir, live.blobs, &shas)?;
    drop(hold);
    if options.indexes == IndexMode::Include {
        add_tree(
            &mut archive,
            &index_copy,
            &format!("{DATA_PREFIX}{INDEX_DIR}"),
            |_| true,
        )?;
    }
    let repository = config.repository();
    let models_prefix = match repository.strip_prefix(data_dir) {
        Ok(rel) => format!("{DATA_PREFIX}{}", rel.display()),
        Err(_) => format!("{SYSTEM_PREFIX}models"),
    };
    add_tree(&mut archive, &repository, &models_prefix, |p| {
        options.include_models || !is_model_file(p)
    })?;
    if encrypted {
        let secrets = data_dir.join("secrets");
        add_tree(
            &mut archive,
            &secrets,
            &format!("{DATA_PREFIX}secrets"),
            |p| p.file_name().is_some_and(|n| n == "jwt.key"),
        )?;
        add_tree(
            &mut archive,
            &data_dir.join("tls"),
            &format!("{DATA_PREFIX}tls"),
            |_| true,
        )?;
        add_optional_file(
            &mut archive,
            &config.volume.registry,
            &format!("{SYSTEM_PREFIX}volumes.toml"),
        )?;
        add_tree(
            &mut archive,
            &config.volume.keys_dir,
            &format!("{SYSTEM_PREFIX}keys"),
            |_| true,
        )?;
    }
    if let Some(file) = config_file {
        add_optional_file(&mut archive, file, &format!("{SYSTEM_PREFIX}config.toml"))?;
    }
    let size = archive.finish(path)?;
    Ok((header, size))
}

/// Copies the live database with SQLite's online backup API through a connection of its own,
/// so writers go on (WAL) while it reads one consistent version. Without encryption, the
/// copy loses API key hashes and sessions, overwritten on disk, not only unlinked.
fn copy_database(source: &Path, dest: &Path, keep_secrets: bool) -> Result<(), BackupError> {
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    src.busy_timeout(Duration::from_secs(30))?;
    let mut dst = Connection::open(dest)?;
    {
        use rusqlite::backup::StepResult;
        let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
        // All pages in one step (-1): one read transaction, so one version of the database.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked
                    if std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    return Err(BackupError::Internal(
                        "the database stayed busy for a minute; try again".into(),
                    ));
                }
            }
        }
    }
    dst.pragma_update(None, "journal_mode", "DELETE")?;
    if !keep_secrets {
        dst.pragma_update(None, "secure_delete", true)?;
        dst.execute_batch("DELETE FROM api_keys; DELETE FROM refresh_tokens;")?;
    }
    dst.close().map_err(|(_, e)| BackupError::Sqlite(e))?;
    Ok(())
}

/// Schema version, document and chunk counts, and the blobs the copy references.
fn describe(db: &Path) -> Result<(u32, u64, u64, Vec<String>), BackupError> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let documents: i64 = conn.query_row("SELECT COUNT(*) FROM documents", [], |r| r.get(0))?;
    let chunks: i64 = conn.query_row("SELECT COUNT(*) FROM chunks", [], |r| r.get(0))?;
    let mut stmt = conn.prepare("SELECT DISTINCT sha256 FROM documents ORDER BY sha256")?;
    let shas = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok((version, documents as u64, chunks as u64, shas))
}

fn add_blobs(
    archive: &mut ArchiveWriter,
    hold: &BlobHold,
    data_dir: &Path,
    blobs: &BlobStore,
    shas: &[String],
) -> Result<(), BackupError> {
    for sha in shas {
        let id: BlobId = sha
            .parse()
            .map_err(|e: String| BackupError::Internal(format!("the database names {e}")))?;
        let path = blobs.path_of(&id);
        let name = path.strip_prefix(data_dir).map_err(|_| {
            BackupError::Internal("the blob store is outside the data directory".into())
        })?;
        let file = hold.open(&id).map_err(|e| {
            BackupError::Internal(format!(
                "a document's file is missing from the blob store ({e}); run `sparkbrain doctor`"
            ))
        })?;
        archive.add_open_file(&format!("{DATA_PREFIX}{}", name.display()), file, &path)?;
    }
    Ok(())
}

/// Adds every regular file under `root` (if it exists) that `keep` accepts, in a stable order.
fn add_tree(
    archive: &mut ArchiveWriter,
    root: &Path,
    prefix: &str,
    keep: impl Fn(&Path) -> bool,
) -> Result<(), BackupError> {
    if !root.is_dir() {
        return Ok(());
    }
    for entry in WalkDir::new(root).sort_by_file_name() {
        let entry = entry
            .map_err(|e| BackupError::Internal(format!("cannot list {}: {e}", root.display())))?;
        if !entry.file_type().is_file() || !keep(entry.path()) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(root) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            tracing::warn!(path = %entry.path().display(), "not archived: the name is not UTF-8");
            continue;
        };
        archive.add_file(&format!("{prefix}/{rel}"), entry.path())?;
    }
    Ok(())
}

fn add_optional_file(
    archive: &mut ArchiveWriter,
    path: &Path,
    name: &str,
) -> Result<(), BackupError> {
    if path.is_file() {
        archive.add_file(name, path)?;
    }
    Ok(())
}

fn is_model_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MODEL_FILE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Creates an archive with the daemon stopped: takes the data directory lock (so no daemon
/// starts meanwhile), writes the archive, sends it to the target and applies retention.
pub fn create_offline(
    config: &Config,
    config_file: Option<&Path>,
    options: &CreateOptions,
) -> Result<Created, BackupError> {
    let lock =
        DataDirLock::acquire(&config.data_dir).map_err(|e| BackupError::Refused(e.to_string()))?;
    if !config.data_dir.join(DB_FILE).is_file() {
        return Err(BackupError::Refused(format!(
            "{} holds no sparkbrain database; nothing to back up",
            config.data_dir.display()
        )));
    }
    let blobs =
        BlobStore::open(&config.data_dir).map_err(|e| BackupError::Internal(e.to_string()))?;
    let live = Live {
        kb: None,
        blobs: &blobs,
    };
    let created = run(config, config_file, &live, options)?;
    drop(lock);
    Ok(created)
}

/// Writes an archive to a local file, hands it to the target, applies retention. Blocking.
pub(crate) fn run(
    config: &Config,
    config_file: Option<&Path>,
    live: &Live<'_>,
    options: &CreateOptions,
) -> Result<Created, BackupError> {
    let started = Instant::now();
    options.encryption.check()?;
    let name = format::archive_name(
        &format::stamp(SystemTime::now()),
        options.encryption.is_encrypted(),
    );
    let local_dir: PathBuf = match &options.target {
        target::Target::Dir(dir) => {
            std::fs::create_dir_all(dir)
                .map_err(|e| BackupError::io_at("cannot create the backup folder", dir, e))?;
            dir.clone()
        }
        // Written next to the data first, then uploaded.
        target::Target::S3(_) => config.data_dir.clone(),
    };
    let partial = local_dir.join(format!(".{name}.partial"));
    let _ = std::fs::remove_file(&partial);
    let (header, size) = write(config, config_file, live, options, &partial)?;
    let location = options.target.store(&partial, &name)?;
    let pruned = options
        .target
        .prune(options.keep_last, options.keep_days, SystemTime::now())?;
    Ok(Created {
        name,
        location,
        size_bytes: size,
        encrypted: options.encryption.is_encrypted(),
        secrets_included: header.secrets_included,
        indexes: options.indexes,
        created_at: header.created_at,
        duration_ms: started.elapsed().as_millis() as u64,
        documents: header.documents,
        chunks: header.chunks,
        pruned,
    })
}
