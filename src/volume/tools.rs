//! The system tools volumes need besides cryptsetup (blkid, wipefs, mkfs.ext4,
//! systemd-cryptenroll): where they are, and running them with one error shape.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::VolumeError;

/// Finds a system tool on the sbin and bin paths; names the Debian package when it is missing.
pub fn find_tool(name: &str, package: &str) -> Result<PathBuf, VolumeError> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| VolumeError::MissingTool {
            tool: name.to_string(),
            package: package.to_string(),
        })
}

/// Runs `tool` (found with [`find_tool`]) to completion with `args` and extra environment
/// `env`; a non-zero exit is a [`VolumeError::Failed`] carrying its standard error.
pub fn run_tool<S: AsRef<OsStr>>(
    tool: &str,
    package: &str,
    args: &[S],
    env: &[(&str, &str)],
) -> Result<(), VolumeError> {
    let out = Command::new(find_tool(tool, package)?)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VolumeError::Failed(format!("cannot run {tool}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(VolumeError::Failed(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}
