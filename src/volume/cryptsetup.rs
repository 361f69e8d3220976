//! The one place that runs `cryptsetup`.
//!
//! The CLI, not libcryptsetup: the CLI is on every box that has dm-crypt (the package the
//! kernel's users install), its exit codes are documented and stable, and it needs no C
//! library at build time; the Rust bindings to libcryptsetup are thin, sparsely maintained and
//! would tie the build to one libcryptsetup version. Keys never appear on a command line: they
//! go through stdin or an anonymous in-memory file.

use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

use super::tools::find_tool;
use super::{Secret, VolumeError};

/// Key derivation settings for new key slots.
#[derive(Debug, Clone, Copy)]
pub struct Pbkdf {
    /// argon2id memory cost, KiB.
    pub memory_kib: u32,
    /// argon2id iterations; 0 lets cryptsetup benchmark.
    pub iterations: u32,
    /// argon2id threads.
    pub parallel: u32,
}

impl Pbkdf {
    /// cryptsetup's options for these settings.
    fn args(self) -> Vec<String> {
        let mut args = vec![
            "--pbkdf".into(),
            "argon2id".into(),
            "--pbkdf-memory".into(),
            self.memory_kib.to_string(),
            "--pbkdf-parallel".into(),
            self.parallel.to_string(),
        ];
        if self.iterations > 0 {
            args.push("--pbkdf-force-iterations".into());
            args.push(self.iterations.to_string());
        }
        args
    }
}

/// A key slot or token in a LUKS2 header.
#[derive(Debug, Clone, Serialize)]
pub struct Header {
    /// Key slots in use.
    pub slots: Vec<u32>,
    /// Whether a systemd-tpm2 token is enrolled.
    pub tpm2: bool,
}

/// `cryptsetup`, found on the sbin paths.
#[derive(Debug, Clone)]
pub struct Cryptsetup {
    bin: PathBuf,
}

impl Cryptsetup {
    /// Finds `cryptsetup`; a clear error when the package is not installed.
    pub fn find() -> Result<Cryptsetup, VolumeError> {
        find_tool("cryptsetup", "cryptsetup-bin").map(|bin| Cryptsetup { bin })
    }

    /// Formats `device` as LUKS2 with argon2id and `key` in slot 0.
    pub fn format(
        &self,
        device: &Path,
        label: &str,
        key: &Secret,
        pbkdf: Pbkdf,
    ) -> Result<(), VolumeError> {
        let mut args: Vec<String> = vec![
            "luksFormat".into(),
            "--type".into(),
            "luks2".into(),
            "--batch-mode".into(),
            "--label".into(),
            label.into(),
            "--key-file".into(),
            "-".into(),
        ];
        args.extend(pbkdf.args());
        args.push(device.display().to_string());
        self.run(&args, Some(key), &[], device).map(drop)
    }

    /// Opens `device` as `/dev/mapper/<mapping>` with `key`.
    pub fn open(&self, device: &Path, mapping: &str, key: &Secret) -> Result<(), VolumeError> {
        let args = [
            "open",
            "--type",
            "luks2",
            "--key-file",
            "-",
            &device.display().to_string(),
            mapping,
        ];
        self.run(&args, Some(key), &[], device).map(drop)
    }

    /// Opens `device` with an enrolled token (TPM2) instead of a passphrase.
    pub fn open_with_token(&self, device: &Path, mapping: &str) -> Result<(), VolumeError> {
        let args = [
            "open",
            "--type",
            "luks2",
            "--token-only",
            &device.display().to_string(),
            mapping,
        ];
        self.run(&args, None, &[], device).map(drop)
    }

    /// Closes the mapping.
    pub fn close(&self, mapping: &str) -> Result<(), VolumeError> {
        let path = Path::new("/dev/mapper").join(mapping);
        self.run(&["close", mapping], None, &[], &path).map(drop)
    }

    /// Checks `key` against the header without opening anything.
    pub fn test_key(&self, device: &Path, key: &Secret) -> Result<(), VolumeError> {
        let args = [
            "open",
            "--test-passphrase",
            "--key-file",
            "-",
            &device.display().to_string(),
        ];
        self.run(&args, Some(key), &[], device).map(drop)
    }

    /// The LUKS UUID of `device`.
    pub fn uuid(&self, device: &Path) -> Result<String, VolumeError> {
        let out = self.run(
            &["luksUUID", &device.display().to_string()],
            None,
            &[],
            device,
        )?;
        Ok(out.trim().to_string())
    }

    /// Key slots and tokens in the header.
    pub fn header(&self, device: &Path) -> Result<Header, VolumeError> {
        let out = self.run(
            &[
                "luksDump",
                "--dump-json-metadata",
                &device.display().to_string(),
            ],
            None,
            &[],
            device,
        )?;
        let json: serde_json::Value = serde_json::from_str(&out).map_err(|e| {
            VolumeError::Failed(format!("cannot read the LUKS2 header metadata: {e}"))
        })?;
        let mut slots: Vec<u32> = json["keyslots"]
            .as_object()
            .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
            .unwrap_or_default();
        slots.sort_unstable();
        let tpm2 = json["tokens"]
            .as_object()
            .is_some_and(|m| m.values().any(|t| t["type"] == "systemd-tpm2"));
        Ok(Header { slots, tpm2 })
    }

    /// Adds `new` in a free slot, authorised by `existing`.
    pub fn add_key(
        &self,
        device: &Path,
        existing: &Secret,
        new: &Secret,
        pbkdf: Pbkdf,
    ) -> Result<(), VolumeError> {
        self.set_key("luksAddKey", device, existing, new, pbkdf)
    }

    /// Replaces the key `old` opens with `new`, in the same slot.
    pub fn change_key(
        &self,
        device: &Path,
        old: &Secret,
        new: &Secret,
        pbkdf: Pbkdf,
    ) -> Result<(), VolumeError> {
        self.set_key("luksChangeKey", device, old, new, pbkdf)
    }

    /// `luksAddKey` / `luksChangeKey`: the authorising key on stdin, the new one in memory.
    fn set_key(
        &self,
        verb: &str,
        device: &Path,
        authorising: &Secret,
        new: &Secret,
        pbkdf: Pbkdf,
    ) -> Result<(), VolumeError> {
        let new_file = SecretFile::new(new)?;
        let mut args: Vec<String> = vec![verb.into(), "--batch-mode".into()];
        args.extend(pbkdf.args());
        args.extend(["--key-file".into(), "-".into()]);
        args.push(device.display().to_string());
        args.push(new_file.path());
        self.run(&args, Some(authorising), &[&new_file], device)
            .map(drop)
    }

    /// Wipes key slot `slot`, authorised by a key that opens another slot.
    pub fn kill_slot(&self, device: &Path, slot: u32, other: &Secret) -> Result<(), VolumeError> {
        let args = [
            "luksKillSlot",
            "--key-file",
            "-",
            &device.display().to_string(),
            &slot.to_string(),
        ];
        self.run(&args, Some(other), &[], device).map(drop)
    }

    /// Writes a copy of the header (key slots included) to `file`, which must not exist.
    pub fn header_backup(&self, device: &Path, file: &Path) -> Result<(), VolumeError> {
        let args = [
            "luksHeaderBackup",
            &device.display().to_string(),
            "--header-backup-file",
            &file.display().to_string(),
        ];
        self.run(&args, None, &[], device).map(drop)
    }

    /// Runs cryptsetup, feeding `key` on stdin, and maps its exit code and message.
    fn run<S: AsRef<std::ffi::OsStr>>(
        &self,
        args: &[S],
        key: Option<&Secret>,
        inherit: &[&SecretFile],
        device: &Path,
    ) -> Result<String, VolumeError> {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .stdin(if key.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LC_ALL", "C");
        let fds: Vec<i32> = inherit.iter().map(|f| f.fd.as_raw_fd()).collect();
        // SAFETY: only async-signal-safe calls (fcntl) between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                for fd in &fds {
                    let flags = nix::libc::fcntl(*fd, nix::libc::F_GETFD);
                    if flags < 0
                        || nix::libc::fcntl(*fd, nix::libc::F_SETFD, flags & !nix::libc::FD_CLOEXEC)
                            < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| VolumeError::Failed(format!("cannot run cryptsetup: {e}")))?;
        if let (Some(key), Some(mut stdin)) = (key, child.stdin.take()) {
            // A closed pipe means cryptsetup already failed; its exit code says why.
            let _ = stdin.write_all(key.bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| VolumeError::Failed(format!("cryptsetup did not finish: {e}")))?;
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        match out.status.code() {
            Some(0) => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            code => Err(classify(code, &stderr, device)),
        }
    }
}

/// Maps cryptsetup's documented exit codes (1 wrong parameters, 2 no permission / bad
/// passphrase, 3 out of memory, 4 wrong device, 5 device exists or busy) and the messages that
/// name a missing kernel feature.
fn classify(code: Option<i32>, stderr: &str, device: &Path) -> VolumeError {
    let lower = stderr.to_lowercase();
    if lower.contains("cannot initialize device-mapper")
        || lower.contains("dm_mod")
        || lower.contains("kernel doesn't support dm-crypt")
        || lower.contains("check that kernel supports")
    {
        return VolumeError::NoDeviceMapper(stderr.to_string());
    }
    if lower.contains("is not a valid luks device") || lower.contains("not a luks device") {
        return VolumeError::NotLuks(device.display().to_string());
    }
    match code {
        Some(2) if lower.contains("no key available") || lower.is_empty() => {
            VolumeError::WrongPassphrase
        }
        Some(2) => VolumeError::Failed(format!("permission denied: {stderr}")),
        Some(4) => VolumeError::NotFound(format!("{}: {stderr}", device.display())),
        Some(5) => VolumeError::Busy(format!("{}: {stderr}", device.display())),
        Some(3) => VolumeError::Failed(format!(
            "cryptsetup ran out of memory (lower volume.pbkdf_memory_kib?): {stderr}"
        )),
        Some(c) => VolumeError::Failed(format!("cryptsetup failed (exit {c}): {stderr}")),
        None => VolumeError::Failed(format!("cryptsetup was killed: {stderr}")),
    }
}

/// A key in an anonymous in-memory file, passed to cryptsetup as `/dev/fd/N` where it needs a
/// second key beside the one on stdin.
struct SecretFile {
    fd: OwnedFd,
}

impl SecretFile {
    fn new(secret: &Secret) -> Result<SecretFile, VolumeError> {
        let fd = nix::sys::memfd::memfd_create(
            c"sparkbrain-key",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )
        .map_err(|e| VolumeError::Failed(format!("cannot hold a key in memory: {e}")))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(secret.bytes())
            .and_then(|()| file.rewind())
            .map_err(|e| VolumeError::Failed(format!("cannot hold a key in memory: {e}")))?;
        Ok(SecretFile {
            fd: OwnedFd::from(file),
        })
    }

    fn path(&self) -> String {
        format!("/dev/fd/{}", self.fd.as_raw_fd())
    }
}
