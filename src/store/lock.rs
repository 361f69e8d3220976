//! The data-directory lock: one daemon per data directory.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the data directory.
pub const LOCK_FILE: &str = "sparkbrain.lock";

/// Why the lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "the data directory {} is in use by another sparkbrain daemon (PID {}); stop it first \
         (e.g. `systemctl stop sparkbrain`) or start this one with another --data-dir",
        dir.display(),
        pid.map(|p| p.to_string()).unwrap_or_else(|| "unknown".into())
    )]
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's PID as it wrote it, if readable.
        pid: Option<u32>,
    },
    /// The lock file could not be created or written.
    #[error("cannot lock the data directory {}: {source}", dir.display())]
    Io {
        /// The data directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// An exclusive `flock` on `<data_dir>/sparkbrain.lock`, holding the owner's PID and, once it
/// listens, its URL. Released when dropped or when the process dies.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
}

/// The daemon holding a data directory, as it described itself in the lock file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its PID.
    pub pid: u32,
    /// Where it listens (`http://…` or `https://…`), once it does.
    pub url: Option<String>,
}

impl DataDirLock {
    /// Takes the lock or reports who holds it. Creates the directory if needed.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let io = |source| LockError::Io {
            dir: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_FILE))
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: read_holder(&mut file).map(|h| h.pid),
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
        let mut lock = DataDirLock { file };
        lock.describe(None).map_err(io)?;
        Ok(lock)
    }

    /// Records where the daemon listens, for `sparkbrain status`.
    pub fn record_url(&mut self, url: &str) -> std::io::Result<()> {
        self.describe(Some(url))
    }

    fn describe(&mut self, url: Option<&str>) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        writeln!(self.file, "{}", std::process::id())?;
        if let Some(url) = url {
            writeln!(self.file, "{url}")?;
        }
        self.file.sync_data()
    }
}

/// The file in the daemon's runtime directory that says which data directory it serves.
pub const RUNTIME_HOLDER_FILE: &str = "daemon";

/// Records in `runtime_dir` (systemd's `/run/sparkbrain`) the daemon's PID, URL and data
/// directory: what host commands read when the data volume is mounted only in the daemon's
/// mount namespace and the lock there is out of their sight.
pub fn publish_holder(runtime_dir: &Path, data_dir: &Path, url: &str) -> std::io::Result<()> {
    let text = format!("{}\n{url}\n{}\n", std::process::id(), data_dir.display());
    super::write_private(&runtime_dir.join(RUNTIME_HOLDER_FILE), text.as_bytes())
}

/// The daemon that [`publish_holder`] recorded in `runtime_dir` for `data_dir`, if it still
/// runs.
pub fn published_holder(runtime_dir: &Path, data_dir: &Path) -> Option<Holder> {
    let text = std::fs::read_to_string(runtime_dir.join(RUNTIME_HOLDER_FILE)).ok()?;
    let mut lines = text.lines();
    let pid: u32 = lines.next()?.trim().parse().ok()?;
    let url = lines.next().map(|u| u.trim().to_string());
    if lines.next().map(str::trim) != Some(data_dir.to_str()?) {
        return None;
    }
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok();
    alive.then_some(Holder { pid, url })
}

/// The daemon holding the lock on `dir`, or `None` if no daemon holds it.
pub fn holder(dir: &Path) -> Option<Holder> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir.join(LOCK_FILE))
        .ok()?;
    match file.try_lock() {
        Ok(()) => None,
        Err(TryLockError::WouldBlock) => read_holder(&mut file),
        Err(TryLockError::Error(_)) => None,
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let url = lines
        .next()
        .map(|u| u.trim().to_string())
        .filter(|u| !u.is_empty());
    Some(Holder { pid, url })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_holder() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = DataDirLock::acquire(dir.path()).unwrap();
        // flock locks belong to the open file description, so a second open in the same process
        // conflicts just as another process would.
        match DataDirLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        let me = std::process::id();
        assert_eq!(holder(dir.path()), Some(Holder { pid: me, url: None }));
        first.record_url("https://0.0.0.0:8470").unwrap();
        let url = Some("https://0.0.0.0:8470".to_string());
        assert_eq!(holder(dir.path()), Some(Holder { pid: me, url }));
    }

    #[test]
    fn lock_is_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        drop(DataDirLock::acquire(dir.path()).unwrap());
        assert_eq!(holder(dir.path()), None);
        DataDirLock::acquire(dir.path()).unwrap();
    }
}
