//! Mounting a volume's mapping at its mount point, and proving a path lies on that mapping.

use std::ffi::OsStr;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use super::VolumeError;
use super::tools::run_tool;

/// Makes an ext4 filesystem on the (opened) mapping.
pub fn make_filesystem(mapper: &Path, label: &str) -> Result<(), VolumeError> {
    let mut args = vec![
        OsStr::new("-q"),
        OsStr::new("-F"),
        OsStr::new("-L"),
        OsStr::new(label),
    ];
    args.push(mapper.as_os_str());
    run_tool("mkfs.ext4", "e2fsprogs", &args, &[])
}

/// Mounts the mapping at `target` (created if missing), without device files, set-uid
/// programs or executables: the volume holds data only.
pub fn mount(mapper: &Path, target: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(target).map_err(|e| {
        VolumeError::Failed(format!(
            "cannot create the mount point {}: {e}",
            target.display()
        ))
    })?;
    nix::mount::mount(
        Some(mapper),
        target,
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EBUSY => VolumeError::Busy(format!(
            "{} is already mounted or {} is busy",
            mapper.display(),
            target.display()
        )),
        nix::errno::Errno::EPERM => VolumeError::Failed(format!(
            "mounting {} needs root (CAP_SYS_ADMIN)",
            mapper.display()
        )),
        e => VolumeError::Failed(format!(
            "cannot mount {} at {}: {e}",
            mapper.display(),
            target.display()
        )),
    })?;
    // 0700: the daemon runs as root; nobody else reads the data.
    let _ = std::fs::set_permissions(target, std::os::unix::fs::PermissionsExt::from_mode(0o700));
    Ok(())
}

/// Unmounts `target`; busy means a process still has files open there.
pub fn unmount(target: &Path) -> Result<(), VolumeError> {
    nix::mount::umount2(target, MntFlags::empty()).map_err(|e| match e {
        nix::errno::Errno::EBUSY => VolumeError::Busy(format!(
            "{} is in use: a process has files open there (the daemon? stop it first: systemctl stop sparkbrain)",
            target.display()
        )),
        e => VolumeError::Failed(format!("cannot unmount {}: {e}", target.display())),
    })
}

/// Where the mapping is mounted, if anywhere (from this process's mount table).
pub fn mounted_at(mapper: &Path) -> Option<String> {
    let rdev = std::fs::metadata(mapper).ok()?.rdev();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let wanted = format!("{}:{}", major(rdev), minor(rdev));
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // Field 3 is MAJ:MIN of the mounted device, field 5 the mount point (mountinfo(5)).
        (fields.get(2) == Some(&wanted.as_str()) && fields.get(3) == Some(&"/"))
            .then(|| unescape(fields.get(4).copied().unwrap_or_default()))
    })
}

/// Whether `path` lies on the filesystem of the dm-crypt mapping `mapper` — checked by device
/// numbers and the kernel's dm UUID, not by names, so a look-alike folder cannot pass.
pub fn on_crypt_mapping(path: &Path, mapper: &Path) -> Result<(), String> {
    let mapper_meta = std::fs::metadata(mapper)
        .map_err(|_| format!("{} does not exist (the volume is locked)", mapper.display()))?;
    if !mapper_meta.file_type().is_block_device() {
        return Err(format!("{} is not a block device", mapper.display()));
    }
    let rdev = mapper_meta.rdev();
    let uuid_file = format!("/sys/dev/block/{}:{}/dm/uuid", major(rdev), minor(rdev));
    let uuid = std::fs::read_to_string(&uuid_file).unwrap_or_default();
    if !uuid.starts_with("CRYPT-LUKS2-") {
        return Err(format!(
            "{} is not a LUKS2 dm-crypt mapping (dm uuid {:?})",
            mapper.display(),
            uuid.trim()
        ));
    }
    let path_meta = std::fs::metadata(path).map_err(|_| {
        format!(
            "{} does not exist: the volume is open but not mounted there",
            path.display()
        )
    })?;
    if path_meta.dev() != rdev {
        return Err(format!(
            "{} is not on {}: the volume is open but not mounted there",
            path.display(),
            mapper.display()
        ));
    }
    Ok(())
}

fn major(dev: u64) -> u64 {
    nix::sys::stat::major(dev)
}

fn minor(dev: u64) -> u64 {
    nix::sys::stat::minor(dev)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
