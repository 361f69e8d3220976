//! Content-addressed blob store for original files.
//!
//! A blob is named by the SHA-256 of its bytes and stored at `blobs/<aa>/<bb>/<hash>`. Writes
//! stream through a temporary file in `blobs/tmp/` that is fsynced and renamed into place, and
//! the parent directory is fsynced, so a blob is either absent or complete, even after a crash.

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::StoreError;

/// The SHA-256 of a blob's content, as lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobId(String);

impl fmt::Display for BlobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for BlobId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(BlobId(s.to_string()))
        } else {
            Err(format!("{s:?} is not a blob id (64 lowercase hex digits)"))
        }
    }
}

/// The blob store rooted at `<data_dir>/blobs`.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    /// Backups reading the store now; while there are any, removed blobs are moved aside into
    /// `blobs/held/` instead of unlinked, so a backup still finds every blob of its snapshot.
    holds: Arc<Mutex<u32>>,
}

/// Keeps removed blobs readable until dropped; see [`BlobStore::hold`].
pub struct BlobHold {
    store: BlobStore,
}

impl BlobHold {
    /// Opens a blob that was stored when the hold began, even if it was removed since.
    pub fn open(&self, id: &BlobId) -> Result<File, StoreError> {
        match File::open(self.store.path(id)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let held = self.store.held_path(id);
                File::open(&held).map_err(|e| StoreError::io("cannot open blob", &held, e))
            }
            other => other.map_err(|e| StoreError::io("cannot open blob", &self.store.path(id), e)),
        }
    }
}

impl Drop for BlobHold {
    fn drop(&mut self) {
        let Ok(mut holds) = self.store.holds.lock() else {
            return;
        };
        *holds = holds.saturating_sub(1);
        if *holds == 0 {
            let held = self.store.root.join(HELD);
            if let Err(e) = std::fs::remove_dir_all(&held)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(path = %held.display(), error = %e, "cannot remove blobs kept for a backup");
            }
        }
    }
}

/// Folder of blobs removed while a backup held the store.
const HELD: &str = "held";

impl BlobStore {
    /// Opens the blob store under `data_dir`, creating its folders and removing temporary files
    /// left by an interrupted write.
    pub fn open(data_dir: &Path) -> Result<BlobStore, StoreError> {
        let root = data_dir.join("blobs");
        // Kept only for a backup that no longer runs.
        let _ = std::fs::remove_dir_all(root.join(HELD));
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp)
            .map_err(|e| StoreError::io("cannot create blob folder", &tmp, e))?;
        let entries =
            std::fs::read_dir(&tmp).map_err(|e| StoreError::io("cannot list", &tmp, e))?;
        for entry in entries.flatten() {
            // Leftovers of writes that never reached their rename: never acknowledged.
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(BlobStore {
            root,
            holds: Arc::new(Mutex::new(0)),
        })
    }

    /// Streams `reader` into the store and returns its id and size. Storing content that is
    /// already present is cheap and leaves the existing blob untouched.
    pub fn put(&self, mut reader: impl Read) -> Result<(BlobId, u64), StoreError> {
        let mut writer = self.writer()?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| StoreError::io("cannot read blob source for", writer.tmp.path(), e))?;
            if n == 0 {
                break;
            }
            writer.write(&buf[..n])?;
        }
        writer.commit()
    }

    /// Starts a blob written piece by piece (an upload arriving from the network); nothing is
    /// stored unless [`BlobWriter::commit`] is called.
    pub fn writer(&self) -> Result<BlobWriter, StoreError> {
        let tmp_dir = self.root.join("tmp");
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(|e| StoreError::io("cannot create temporary blob in", &tmp_dir, e))?;
        Ok(BlobWriter {
            tmp,
            hasher: Sha256::new(),
            size: 0,
            store: self.clone(),
        })
    }

    /// Every stored blob (walks the folders; for start-up housekeeping, not hot paths).
    pub fn ids(&self) -> Vec<BlobId> {
        let mut out = Vec::new();
        let dirs = |p: &Path| {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .collect::<Vec<_>>()
        };
        for first in dirs(&self.root) {
            if first.file_name().is_some_and(|n| n == "tmp" || n == HELD) {
                continue;
            }
            for second in dirs(&first) {
                for file in dirs(&second) {
                    if let Some(id) = file
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(|n| n.parse::<BlobId>().ok())
                    {
                        out.push(id);
                    }
                }
            }
        }
        out
    }

    /// Where a blob lives on disk (for readers that need a path, such as the extractor).
    pub fn path_of(&self, id: &BlobId) -> PathBuf {
        self.path(id)
    }

    /// Opens a stored blob for reading.
    pub fn open_blob(&self, id: &BlobId) -> Result<File, StoreError> {
        let path = self.path(id);
        File::open(&path).map_err(|e| StoreError::io("cannot open blob", &path, e))
    }

    /// Whether the blob is stored.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.path(id).is_file()
    }

    /// Keeps every blob stored now readable through the returned hold until it is dropped,
    /// whatever is removed meanwhile: what a backup needs to copy a snapshot's blobs while
    /// the daemon keeps serving.
    pub fn hold(&self) -> BlobHold {
        if let Ok(mut holds) = self.holds.lock() {
            *holds += 1;
        }
        BlobHold {
            store: self.clone(),
        }
    }

    /// Removes a blob; removing an absent blob is not an error.
    pub fn remove(&self, id: &BlobId) -> Result<(), StoreError> {
        let path = self.path(id);
        let holds = self
            .holds
            .lock()
            .map_err(|_| StoreError::Worker("blob hold count poisoned".into()))?;
        if *holds > 0 {
            let held = self.held_path(id);
            let parent = self.root.join(HELD);
            std::fs::create_dir_all(&parent)
                .map_err(|e| StoreError::io("cannot create", &parent, e))?;
            return match std::fs::rename(&path, &held) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(StoreError::io("cannot move aside blob", &path, e)),
            };
        }
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(path.parent().unwrap_or(&self.root)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("cannot remove blob", &path, e)),
        }
    }

    fn path(&self, id: &BlobId) -> PathBuf {
        self.root.join(&id.0[..2]).join(&id.0[2..4]).join(&id.0)
    }

    fn held_path(&self, id: &BlobId) -> PathBuf {
        self.root.join(HELD).join(&id.0)
    }
}

/// A blob being written; dropped without [`BlobWriter::commit`], it leaves nothing behind.
pub struct BlobWriter {
    tmp: tempfile::NamedTempFile,
    hasher: Sha256,
    size: u64,
    store: BlobStore,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.hasher.update(bytes);
        self.tmp
            .write_all(bytes)
            .map_err(|e| StoreError::io("cannot write", self.tmp.path(), e))?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Makes the blob durable (fsync, rename, fsync of the folder) and returns its id and size.
    pub fn commit(self) -> Result<(BlobId, u64), StoreError> {
        let BlobWriter {
            tmp,
            hasher,
            size,
            store,
        } = self;
        tmp.as_file()
            .sync_all()
            .map_err(|e| StoreError::io("cannot sync", tmp.path(), e))?;
        let id = BlobId(hex::encode(hasher.finalize()));
        let dest = store.path(&id);
        if dest.exists() {
            return Ok((id, size));
        }
        let parent = dest.parent().unwrap_or(&store.root).to_path_buf();
        std::fs::create_dir_all(&parent)
            .map_err(|e| StoreError::io("cannot create blob folder", &parent, e))?;
        tmp.persist(&dest)
            .map_err(|e| StoreError::io("cannot move blob into", &dest, e.error))?;
        sync_dir(&parent)?;
        Ok((id, size))
    }
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("cannot sync folder", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_keeps_removed_blobs_readable_until_it_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (id, _) = store.put(&b"kept for the backup"[..]).unwrap();
        let hold = store.hold();
        store.remove(&id).unwrap();
        assert!(!store.contains(&id));
        let mut text = String::new();
        hold.open(&id).unwrap().read_to_string(&mut text).unwrap();
        assert_eq!(text, "kept for the backup");
        assert!(
            store.ids().is_empty(),
            "held blobs are not listed as stored"
        );
        drop(hold);
        assert!(hold_dir_gone(dir.path()));
        // Without a hold, a remove unlinks at once.
        let (id, _) = store.put(&b"gone"[..]).unwrap();
        store.remove(&id).unwrap();
        assert!(store.hold().open(&id).is_err());
    }

    fn hold_dir_gone(data: &Path) -> bool {
        !data.join("blobs").join(HELD).exists()
    }

    #[test]
    fn put_is_content_addressed_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let (id, size) = store.put(&b"hello world"[..]).unwrap();
        assert_eq!(
            id.to_string(),
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(size, 11);
        let (again, _) = store.put(&b"hello world"[..]).unwrap();
        assert_eq!(again, id);
        let mut text = String::new();
        store
            .open_blob(&id)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello world");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
        store.remove(&id).unwrap();
        assert!(!store.contains(&id));
        store.remove(&id).unwrap();
    }

    #[test]
    fn failed_read_leaves_no_blob() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
                Err(std::io::Error::other("disk on fire"))
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        assert!(store.put(Broken).is_err());
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs/tmp"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn blob_id_rejects_paths() {
        assert!("../../etc/passwd".parse::<BlobId>().is_err());
        assert!("B94D".parse::<BlobId>().is_err());
    }
}
