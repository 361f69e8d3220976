//! The store: SQLite (the source of truth), the content-addressed blob store, and the data
//! directory lock.

mod blob;
mod disk;
mod lock;
mod migrations;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::Connection;

mod private_file;
pub use blob::{BlobHold, BlobId, BlobStore, BlobWriter};
pub use disk::{DiskSpace, disk_space};
pub use lock::{
    DataDirLock, Holder, LOCK_FILE, LockError, holder as lock_holder, publish_holder,
    published_holder,
};
pub use migrations::SCHEMA_VERSION;
pub use private_file::write_private;

/// Name of the SQLite database file inside the data directory.
pub const DB_FILE: &str = "sparkbrain.db";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The database was written by a newer sparkbrain.
    #[error(
        "the database {} has schema version {found}, newer than this sparkbrain knows ({known}); \
         run the sparkbrain version that wrote it, or restore a backup made for this version",
        path.display()
    )]
    SchemaTooNew {
        /// Database path.
        path: PathBuf,
        /// Version found in the file.
        found: u32,
        /// Newest version this binary knows.
        known: u32,
    },
    /// A blocking worker panicked or was cancelled.
    #[error("database worker failed: {0}")]
    Worker(String),
}

impl StoreError {
    pub(crate) fn io(what: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The SQLite database. Cheap to clone; all clones share one connection.
///
/// One connection serialises writers, which SQLite does anyway; calls from async code go
/// through [`Store::run`] so they never block a tokio worker.
#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and applies pending migrations.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::io("cannot create data directory", data_dir, e))?;
        let path = data_dir.join(DB_FILE);
        let mut conn = Connection::open(&path)?;
        // WAL lets readers run beside the writer (and `sparkbrain user add` beside the daemon);
        // FULL makes every acknowledged commit survive power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        migrations::apply(&mut conn, &path)?;
        restrict_permissions(&path);
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` with the connection on the current thread. For CLI and blocking contexts.
    pub fn with_conn<T, E>(&self, f: impl FnOnce(&mut Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let mut guard = self
            .conn
            .lock()
            .map_err(|_| StoreError::Worker("database connection poisoned".into()))?;
        f(&mut guard)
    }

    /// Runs `f` with the connection on a blocking thread. For async contexts.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.with_conn(f))
            .await
            .map_err(|e| StoreError::Worker(e.to_string()))?
    }

    /// Like [`Store::run`], but what `f` commits is not flushed to disk before it returns: a
    /// power loss may undo it (never corrupt the database), and the next flushed commit makes
    /// it durable too. For bookkeeping a restart redoes anyway, so it does not pay an fsync
    /// on the one connection every writer waits for.
    pub async fn run_unsynced<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, E> + Send + 'static,
    {
        self.run(move |conn| {
            conn.pragma_update(None, "synchronous", "NORMAL")
                .map_err(StoreError::from)?;
            let result = f(conn);
            // Put back whether `f` succeeded or not: every other commit is flushed.
            conn.pragma_update(None, "synchronous", "FULL")
                .map_err(StoreError::from)?;
            result
        })
        .await
    }

    /// The schema version recorded in the database.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.with_conn(|c| migrations::current_version(c).map_err(StoreError::from))
    }
}

/// Reads the schema version of the database in `data_dir` without migrating or creating it.
pub fn peek_schema_version(data_dir: &Path) -> Result<Option<u32>, StoreError> {
    let path = data_dir.join(DB_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(Some(migrations::current_version(&conn)?))
}

/// Milliseconds since the Unix epoch, the store's timestamp unit.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Formats a store timestamp as RFC 3339 (UTC, millisecond precision).
pub fn format_ms(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

fn restrict_permissions(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    // The database holds password hashes: owner only. Failure (e.g. a read-only copy) is not fatal.
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_applies_migrations_and_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        let mode: String = store
            .with_conn(|c| {
                c.query_row("PRAGMA journal_mode", [], |r| r.get(0))
                    .map_err(StoreError::from)
            })
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[tokio::test]
    async fn unsynced_runs_commit_and_leave_every_other_commit_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let synchronous = |store: &Store| -> i64 {
            store
                .with_conn(|c| {
                    c.query_row("PRAGMA synchronous", [], |r| r.get(0))
                        .map_err(StoreError::from)
                })
                .unwrap()
        };
        const FULL: i64 = 2;
        assert_eq!(synchronous(&store), FULL);
        let inside = store
            .run_unsynced(|c| -> Result<i64, StoreError> {
                c.execute("CREATE TABLE t (x)", [])?;
                c.execute("INSERT INTO t VALUES (1)", [])?;
                Ok(c.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
            })
            .await
            .unwrap();
        assert_eq!(inside, 1, "NORMAL inside");
        assert_eq!(synchronous(&store), FULL);
        let failed = store
            .run_unsynced(|c| -> Result<(), StoreError> {
                c.execute("INSERT INTO missing VALUES (1)", [])?;
                Ok(())
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(synchronous(&store), FULL, "restored after a failure too");
        drop(store);
        let rows: i64 = Connection::open(dir.path().join(DB_FILE))
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 5)
            .unwrap();
        drop(conn);
        match Store::open(dir.path()) {
            Err(StoreError::SchemaTooNew { found, known, .. }) => {
                assert_eq!(found, SCHEMA_VERSION + 5);
                assert_eq!(known, SCHEMA_VERSION);
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("a newer schema was opened"),
        }
    }
}
