//! Space on the filesystem that holds the data directory, for `doctor` and `/api/v1/status`.

use std::path::{Path, PathBuf};

use serde::Serialize;

/// Size and free space of a filesystem.
#[derive(Debug, Clone, Serialize)]
pub struct DiskSpace {
    /// The folder measured: the data directory, or its nearest existing parent.
    pub path: PathBuf,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Space an unprivileged writer may still use.
    pub available_bytes: u64,
}

/// Measures the filesystem holding `dir`, or its nearest existing parent when `dir` does not
/// exist yet (a data directory that the first start will create).
pub fn disk_space(dir: &Path) -> Result<DiskSpace, String> {
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let s = nix::sys::statvfs::statvfs(existing)
        .map_err(|e| format!("cannot measure free space at {}: {e}", existing.display()))?;
    Ok(DiskSpace {
        path: existing.to_path_buf(),
        total_bytes: s.blocks() * s.fragment_size(),
        available_bytes: s.blocks_available() * s.fragment_size(),
    })
}
