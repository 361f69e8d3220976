//! What is on a device before it is formatted, and whether anything uses it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::VolumeError;
use super::tools::find_tool;

/// Signatures `blkid` finds on `device`: filesystems, partition tables, LUKS headers, swap,
/// RAID members, each described for a person (e.g. "an ext4 filesystem").
pub fn signatures(device: &Path) -> Result<Vec<String>, VolumeError> {
    let blkid = find_tool("blkid", "util-linux")?;
    let out = Command::new(blkid)
        .args(["-p", "-o", "export"])
        .arg(device)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| VolumeError::Failed(format!("cannot run blkid: {e}")))?;
    match out.status.code() {
        // 2: nothing found.
        Some(2) => return Ok(Vec::new()),
        Some(0) => {}
        _ => {
            return Err(VolumeError::Failed(format!(
                "blkid cannot probe {}: {}",
                device.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut found = Vec::new();
    for line in text.lines() {
        if let Some(kind) = line.strip_prefix("PTTYPE=") {
            found.push(format!("a {kind} partition table"));
        } else if let Some(kind) = line.strip_prefix("TYPE=") {
            found.push(match kind {
                "crypto_LUKS" => "a LUKS header".to_string(),
                "swap" => "swap space".to_string(),
                k if k.ends_with("_member") => format!("a {k} (RAID/LVM member)"),
                k => format!("{} {k} filesystem", article(k)),
            });
        }
    }
    Ok(found)
}

/// "an ext4", "an xfs", "a btrfs".
fn article(word: &str) -> &'static str {
    match word.chars().next() {
        Some('a' | 'e' | 'i' | 'o' | 'u' | 'x') => "an",
        _ => "a",
    }
}

/// Why `device` is in use, if it is: mounted (itself or a partition), held by a device-mapper
/// mapping (an open LUKS volume, LVM), or used as swap.
pub fn in_use(device: &Path) -> Result<Option<String>, VolumeError> {
    let real = std::fs::canonicalize(device)
        .map_err(|e| VolumeError::NotFound(format!("{}: {e}", device.display())))?;
    let real_str = real.display().to_string();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let mut parts = line.split(" - ");
        let (Some(left), Some(right)) = (parts.next(), parts.next()) else {
            continue;
        };
        let source = right.split_whitespace().nth(1).unwrap_or("");
        let target = left.split_whitespace().nth(4).unwrap_or("");
        if is_same_or_partition(source, &real_str) {
            return Ok(Some(format!("{} is mounted at {target}", device.display())));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    if swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .any(|s| is_same_or_partition(s, &real_str))
    {
        return Ok(Some(format!("{} is in use as swap", device.display())));
    }
    if let Some(name) = real.file_name().and_then(|n| n.to_str()) {
        let holders = PathBuf::from("/sys/class/block").join(name).join("holders");
        if let Some(holder) = std::fs::read_dir(&holders)
            .ok()
            .and_then(|mut entries| entries.find_map(Result::ok))
        {
            let dm_name = std::fs::read_to_string(holder.path().join("dm/name"))
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| holder.file_name().to_string_lossy().into_owned());
            return Ok(Some(format!(
                "{} is in use by the device-mapper device {dm_name} (an open volume?)",
                device.display()
            )));
        }
    }
    Ok(None)
}

/// `/dev/vdb1` and `/dev/nvme0n1p1` are partitions of `/dev/vdb` and `/dev/nvme0n1`.
fn is_same_or_partition(source: &str, device: &str) -> bool {
    let canonical = std::fs::canonicalize(source)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| source.to_string());
    canonical == device
        || canonical.strip_prefix(device).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .trim_start_matches('p')
                    .chars()
                    .all(|c| c.is_ascii_digit())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_belong_to_their_disk() {
        assert!(is_same_or_partition("/dev/vdb1", "/dev/vdb"));
        assert!(is_same_or_partition("/dev/nvme0n1p2", "/dev/nvme0n1"));
        assert!(!is_same_or_partition("/dev/vdba", "/dev/vdb"));
        assert!(!is_same_or_partition("/dev/vdc", "/dev/vdb"));
    }
}
