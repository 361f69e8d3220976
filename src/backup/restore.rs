//! Restoring an archive: everything is read and checked into `<data_dir>/.restore-new` first;
//! only a complete, verified copy is swapped in. The swap is journalled, so a restore killed
//! at any moment leaves the old data (journal not yet written) or rolls forward to the new
//! (journal written), never a mix: the next restore or daemon start finishes it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::archive::{self, MemberSink};
use super::crypto::Decryption;
use super::format::{DATA_PREFIX, Header, SYSTEM_PREFIX};
use super::{BackupError, RESTORE_JOURNAL, RESTORE_NEW, RESTORE_OLD};
use crate::config::Config;
use crate::store::{DB_FILE, DataDirLock};

/// Where system files (configuration, volume registry, keys) are unpacked before they are
/// put in place.
const RESTORE_SYSTEM: &str = ".restore-system";
/// Top-level entries of the data directory a swap leaves where they are.
const KEPT_IN_PLACE: &[&str] = &[
    crate::store::LOCK_FILE,
    RESTORE_NEW,
    RESTORE_OLD,
    RESTORE_JOURNAL,
    RESTORE_SYSTEM,
    // ext4's own folder at the root of a volume's filesystem.
    "lost+found",
];

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// The key of an encrypted archive.
    pub key: Decryption,
    /// Also put back the configuration file, volume registry and key files.
    pub with_system_files: bool,
}

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Restored {
    /// The archive's header.
    pub header: Header,
    /// The data directory now holding the restored data.
    pub data_dir: PathBuf,
    /// Where the previous data waits until the restored daemon is ready.
    pub kept_aside: Option<PathBuf>,
    /// System files written (with --with-system-files).
    pub system_files: Vec<String>,
    /// System files in the archive that were not written.
    pub system_files_skipped: usize,
    /// How long it took.
    pub duration_ms: u64,
}

/// Restores `archive` into `config.data_dir`; the daemon must be stopped (the data directory
/// lock is taken for the whole restore).
pub fn restore(
    config: &Config,
    config_file: Option<&Path>,
    archive: &Path,
    options: &RestoreOptions,
) -> Result<Restored, BackupError> {
    let started = Instant::now();
    let data_dir = &config.data_dir;
    let _lock = DataDirLock::acquire(data_dir).map_err(|e| {
        BackupError::Refused(format!(
            "{e}; or let `sparkbrain backup restore --stop-service` stop and start the service"
        ))
    })?;
    recover_interrupted_restore(data_dir)?;
    let old = data_dir.join(RESTORE_OLD);
    if old.exists() {
        return Err(BackupError::Refused(format!(
            "the data replaced by an earlier restore is still kept at {}: start the daemon once so it confirms that restore (it removes the folder when ready), or remove the folder yourself",
            old.display()
        )));
    }
    let new = data_dir.join(RESTORE_NEW);
    let system = data_dir.join(RESTORE_SYSTEM);
    remove_if_present(&new)?;
    remove_if_present(&system)?;
    create_private_dir(&new)?;
    let mut sink = ExtractSink {
        data: &new,
        system: &system,
        system_files: Vec::new(),
        made: std::collections::HashSet::new(),
        blobs: std::collections::HashSet::new(),
        buf: vec![0u8; 256 * 1024],
    };
    let read = archive::read_archive(archive, &options.key, &mut sink).and_then(|(h, _, _)| {
        let blobs = &sink.blobs;
        archive::check_database(&new.join(DB_FILE), false, |sha| blobs.contains(sha))?;
        Ok(h)
    });
    let system_files = std::mem::take(&mut sink.system_files);
    let header = match read {
        Ok(h) => h,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&new);
            let _ = std::fs::remove_dir_all(&system);
            return Err(e);
        }
    };
    // Everything unpacked reaches the disk before the journal says it is complete.
    sync_filesystem(&new)?;
    swap(data_dir)?;
    let (written, skipped) = if options.with_system_files {
        (
            place_system_files(config, config_file, &system, &system_files)?,
            0,
        )
    } else {
        (Vec::new(), system_files.len())
    };
    let _ = std::fs::remove_dir_all(&system);
    Ok(Restored {
        header,
        data_dir: data_dir.clone(),
        kept_aside: old.exists().then_some(old),
        system_files: written,
        system_files_skipped: skipped,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

struct ExtractSink<'a> {
    data: &'a Path,
    system: &'a Path,
    system_files: Vec<String>,
    /// Folders made so far: a knowledge base has a hundred thousand blobs in a few thousand.
    made: std::collections::HashSet<PathBuf>,
    /// Names of the blobs unpacked, for the check that every document has its file.
    blobs: std::collections::HashSet<String>,
    buf: Vec<u8>,
}

impl MemberSink for ExtractSink<'_> {
    fn member(
        &mut self,
        path: &str,
        _size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackupError> {
        // Paths were checked by the reader: relative, no `..`, under data/ or system/.
        let (root, rel) = if let Some(rel) = path.strip_prefix(DATA_PREFIX) {
            if let Some(blob) = rel
                .strip_prefix("blobs/")
                .and_then(|b| b.rsplit('/').next())
            {
                self.blobs.insert(blob.to_string());
            }
            (self.data, rel)
        } else if let Some(rel) = path.strip_prefix(SYSTEM_PREFIX) {
            self.system_files.push(rel.to_string());
            (self.system, rel)
        } else {
            return Err(BackupError::Corrupt(format!("unexpected member {path}")));
        };
        let dest = root.join(rel);
        if let Some(parent) = dest.parent()
            && !self.made.contains(parent)
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| BackupError::io_at("cannot create", parent, e))?;
            self.made.insert(parent.to_path_buf());
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&dest)
            .map_err(|e| BackupError::io_at("cannot write", &dest, e))?;
        loop {
            let n = content
                .read(&mut self.buf)
                .map_err(|e| BackupError::Corrupt(format!("cannot read member {path}: {e}")))?;
            if n == 0 {
                break;
            }
            out.write_all(&self.buf[..n])
                .map_err(|e| BackupError::io_at("cannot write", &dest, e))?;
        }
        Ok(())
    }
}

/// The journal's two phases: moving the old entries out, then the new ones in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Out,
    In,
}

fn swap(data_dir: &Path) -> Result<(), BackupError> {
    write_journal(data_dir, Phase::Out)?;
    finish_swap(data_dir, Phase::Out)
}

fn finish_swap(data_dir: &Path, phase: Phase) -> Result<(), BackupError> {
    if phase == Phase::Out {
        let old = data_dir.join(RESTORE_OLD);
        create_private_dir(&old)?;
        for name in top_level(data_dir)? {
            rename(&data_dir.join(&name), &old.join(&name))?;
        }
        sync_dir(&old)?;
        write_journal(data_dir, Phase::In)?;
    }
    let new = data_dir.join(RESTORE_NEW);
    for name in top_level(&new)? {
        rename(&new.join(&name), &data_dir.join(&name))?;
    }
    sync_dir(data_dir)?;
    let journal = data_dir.join(RESTORE_JOURNAL);
    std::fs::remove_file(&journal).map_err(|e| BackupError::io_at("cannot remove", &journal, e))?;
    let _ = std::fs::remove_dir(&new);
    sync_dir(data_dir)
}

/// Finishes a restore that was killed after its archive was fully unpacked and checked (the
/// journal exists); otherwise removes what an unfinished one left. The daemon calls this
/// before it opens the data directory; so does every restore.
pub fn recover_interrupted_restore(data_dir: &Path) -> Result<(), BackupError> {
    let journal = data_dir.join(RESTORE_JOURNAL);
    match std::fs::read_to_string(&journal) {
        Ok(text) => {
            let phase = match text.trim() {
                "out" => Phase::Out,
                "in" => Phase::In,
                other => {
                    return Err(BackupError::Refused(format!(
                        "{} says {other:?}, which is not a restore phase; move the data directory's .restore-* folders aside by hand",
                        journal.display()
                    )));
                }
            };
            tracing::warn!(
                data_dir = %data_dir.display(),
                "a restore was interrupted while swapping the data in; finishing it"
            );
            finish_swap(data_dir, phase)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // An unpack that never completed: the old data was never touched.
            for leftover in [RESTORE_NEW, RESTORE_SYSTEM] {
                remove_if_present(&data_dir.join(leftover))?;
            }
            Ok(())
        }
        Err(e) => Err(BackupError::io_at("cannot read", &journal, e)),
    }
}

/// Removes the data a restore kept aside; the daemon calls it once it is ready on the
/// restored data. Returns whether there was any.
pub fn confirm_restore(data_dir: &Path) -> Result<bool, BackupError> {
    let old = data_dir.join(RESTORE_OLD);
    match std::fs::remove_dir_all(&old) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BackupError::io_at("cannot remove", &old, e)),
    }
}

fn write_journal(data_dir: &Path, phase: Phase) -> Result<(), BackupError> {
    let journal = data_dir.join(RESTORE_JOURNAL);
    let tmp = data_dir.join(format!("{RESTORE_JOURNAL}.tmp"));
    let text = match phase {
        Phase::Out => "out\n",
        Phase::In => "in\n",
    };
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &journal)
    };
    write().map_err(|e| BackupError::io_at("cannot write", &journal, e))?;
    sync_dir(data_dir)
}

/// Entries of a folder the swap moves, in a stable order.
fn top_level(dir: &Path) -> Result<Vec<String>, BackupError> {
    let mut names = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| BackupError::io_at("cannot list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::io_at("cannot list", dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !KEPT_IN_PLACE.contains(&name.as_str()) && !name.starts_with(".restore-journal") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn place_system_files(
    config: &Config,
    config_file: Option<&Path>,
    unpacked: &Path,
    files: &[String],
) -> Result<Vec<String>, BackupError> {
    let mut written = Vec::new();
    for rel in files {
        let dest = if rel == "config.toml" {
            config_file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(crate::config::SYSTEM_CONFIG_PATH))
        } else if rel == "volumes.toml" {
            config.volume.registry.clone()
        } else if let Some(key) = rel.strip_prefix("keys/") {
            config.volume.keys_dir.join(key)
        } else if let Some(model) = rel.strip_prefix("models/") {
            config.repository().join(model)
        } else {
            continue;
        };
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| BackupError::io_at("cannot create", parent, e))?;
        }
        if dest.exists() {
            let aside = PathBuf::from(format!("{}.before-restore", dest.display()));
            rename(&dest, &aside)?;
        }
        std::fs::copy(unpacked.join(rel), &dest)
            .map_err(|e| BackupError::io_at("cannot write", &dest, e))?;
        written.push(dest.display().to_string());
    }
    Ok(written)
}

fn rename(from: &Path, to: &Path) -> Result<(), BackupError> {
    std::fs::rename(from, to).map_err(|e| {
        BackupError::io(
            format!("cannot move {} to {}", from.display(), to.display()),
            e,
        )
    })
}

fn remove_if_present(path: &Path) -> Result<(), BackupError> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BackupError::io_at("cannot remove", path, e)),
    }
}

fn create_private_dir(path: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| BackupError::io_at("cannot create", path, e))
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BackupError::io_at("cannot sync", dir, e))
}

fn sync_filesystem(path: &Path) -> Result<(), BackupError> {
    let dir = File::open(path).map_err(|e| BackupError::io_at("cannot open", path, e))?;
    nix::unistd::syncfs(&dir).map_err(|e| BackupError::io_at("cannot sync", path, e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = walkdir::WalkDir::new(dir)
            .into_iter()
            .flatten()
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                (
                    e.path().strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// A swap interrupted after each of its steps finishes to the new data on recovery.
    #[test]
    fn an_interrupted_swap_rolls_forward_to_the_new_data() {
        for phase in [Phase::Out, Phase::In] {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            std::fs::write(d.join("sparkbrain.db"), "old db").unwrap();
            std::fs::create_dir_all(d.join("blobs")).unwrap();
            std::fs::write(d.join("blobs/a"), "old blob").unwrap();
            std::fs::write(d.join(crate::store::LOCK_FILE), "").unwrap();
            std::fs::create_dir_all(d.join(RESTORE_NEW).join("blobs")).unwrap();
            std::fs::write(d.join(RESTORE_NEW).join("sparkbrain.db"), "new db").unwrap();
            std::fs::write(d.join(RESTORE_NEW).join("blobs/b"), "new blob").unwrap();
            write_journal(d, Phase::Out).unwrap();
            if phase == Phase::In {
                // Killed after moving the old data out and half of the new in.
                std::fs::create_dir_all(d.join(RESTORE_OLD)).unwrap();
                for name in ["sparkbrain.db", "blobs"] {
                    std::fs::rename(d.join(name), d.join(RESTORE_OLD).join(name)).unwrap();
                }
                write_journal(d, Phase::In).unwrap();
                std::fs::rename(d.join(RESTORE_NEW).join("blobs"), d.join("blobs")).unwrap();
            } else {
                // Killed after moving half of the old data out.
                std::fs::create_dir_all(d.join(RESTORE_OLD)).unwrap();
                std::fs::rename(d.join("blobs"), d.join(RESTORE_OLD).join("blobs")).unwrap();
            }
            recover_interrupted_restore(d).unwrap();
            let live: Vec<_> = tree(d)
                .into_iter()
                .filter(|(p, _)| !p.starts_with(RESTORE_OLD) && p != crate::store::LOCK_FILE)
                .collect();
            assert_eq!(
                live,
                [
                    ("blobs/b".to_string(), "new blob".to_string()),
                    ("sparkbrain.db".to_string(), "new db".to_string())
                ],
                "{phase:?}"
            );
            assert_eq!(
                tree(&d.join(RESTORE_OLD)),
                [
                    ("blobs/a".to_string(), "old blob".to_string()),
                    ("sparkbrain.db".to_string(), "old db".to_string())
                ]
            );
            assert!(!d.join(RESTORE_JOURNAL).exists());
            assert!(confirm_restore(d).unwrap());
            assert!(!d.join(RESTORE_OLD).exists());
        }
    }

    #[test]
    fn an_unpack_that_never_finished_leaves_the_old_data() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("sparkbrain.db"), "old db").unwrap();
        std::fs::create_dir_all(d.join(RESTORE_NEW)).unwrap();
        std::fs::write(d.join(RESTORE_NEW).join("sparkbrain.db"), "half").unwrap();
        recover_interrupted_restore(d).unwrap();
        assert_eq!(
            tree(d),
            [("sparkbrain.db".to_string(), "old db".to_string())]
        );
    }
}
