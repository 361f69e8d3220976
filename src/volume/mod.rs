//! LUKS2-encrypted volumes: create, unlock, lock, keys, and the check that the data directory
//! really lies on the encrypted volume before anything is written there.
//!
//! Every volume is a LUKS2 container (argon2id) holding one ext4 filesystem, opened as
//! `/dev/mapper/sparkbrain-NAME` and mounted at its recorded mount point (the data directory
//! for the data volume). Keys: passphrases, key files under `volume.keys_dir` for unattended
//! unlock, and TPM2 through `systemd-cryptenroll` where the box has a TPM.

mod cryptsetup;
mod mount;
mod probe;
mod registry;
mod tools;

use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::{Config, VolumeConfig};
use cryptsetup::{Cryptsetup, Pbkdf};
pub use registry::Record;

/// A passphrase or key file's bytes, wiped from memory when dropped.
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps key bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether two secrets hold the same bytes (a typed passphrase and its repetition).
    pub fn matches(&self, other: &Secret) -> bool {
        self.0 == other.0
    }
}

/// Why a volume operation failed. Each kind has its own exit code for scripts.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// The operation would destroy or disturb something; the message says how to insist.
    #[error("{0}")]
    Refused(String),
    /// No key slot opens with the passphrase or key given.
    #[error("wrong passphrase: no key slot of the volume opens with it")]
    WrongPassphrase,
    /// The device carries no LUKS header.
    #[error("{0} is not a LUKS device")]
    NotLuks(String),
    /// The device or mapping is in use.
    #[error("busy: {0}")]
    Busy(String),
    /// A system tool is not installed.
    #[error("{tool} is not installed (install the Debian package {package})")]
    MissingTool {
        /// The tool.
        tool: String,
        /// The package that ships it.
        package: String,
    },
    /// The kernel has no device-mapper or no dm-crypt.
    #[error(
        "the kernel offers no device-mapper/dm-crypt (load the dm_mod and dm_crypt modules; a container may not allow it): {0}"
    )]
    NoDeviceMapper(String),
    /// An unknown volume or a missing device.
    #[error("not found: {0}")]
    NotFound(String),
    /// Anything else, with the tool's own words.
    #[error("{0}")]
    Failed(String),
}

impl VolumeError {
    /// The process exit code `sparkbrain volume …` ends with.
    pub fn exit_code(&self) -> u8 {
        match self {
            VolumeError::Refused(_) => 10,
            VolumeError::WrongPassphrase => 11,
            VolumeError::NotLuks(_) => 12,
            VolumeError::Busy(_) => 13,
            VolumeError::MissingTool { .. } => 14,
            VolumeError::NoDeviceMapper(_) => 15,
            VolumeError::NotFound(_) => 16,
            VolumeError::Failed(_) => 1,
        }
    }
}

/// Whether `name` can name a volume (it becomes part of a device-mapper name and a file name).
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// The device-mapper name of a volume.
pub fn mapping_name(name: &str) -> String {
    format!("sparkbrain-{name}")
}

fn mapper_path(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(mapping_name(name))
}

/// What `volume status` shows of one volume.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeStatus {
    /// The volume's name.
    pub name: String,
    /// The device it was created on.
    pub device: PathBuf,
    /// LUKS UUID.
    pub uuid: String,
    /// Whether the device is present now.
    pub present: bool,
    /// Whether the mapping is open.
    pub unlocked: bool,
    /// Where it is mounted, if it is.
    pub mounted_at: Option<String>,
    /// Its recorded mount point.
    pub mount: PathBuf,
    /// Whether it is the configured data volume.
    pub data: bool,
    /// Key slots in use (absent when the header cannot be read).
    pub key_slots: Option<Vec<u32>>,
    /// Whether a key file for unattended unlock exists.
    pub key_file: bool,
    /// Whether a TPM2 key is enrolled.
    pub tpm2_enrolled: bool,
    /// When it was created.
    pub created: String,
}

/// Where the data directory stands with respect to the configured data volume.
#[derive(Debug, Clone, PartialEq)]
pub enum DataVolume {
    /// No data volume is configured: data lives wherever `data_dir` is.
    NotRequired,
    /// The data directory lies on the unlocked, mounted data volume.
    Ready,
    /// The data must not be opened: locked, not created, not mounted, or not where it should be.
    Locked(String),
}

/// The volume capability over the configuration.
pub struct Volumes {
    config: VolumeConfig,
    data_dir: PathBuf,
}

/// What `create` needs.
pub struct CreateRequest<'a> {
    /// The block device to format.
    pub device: &'a Path,
    /// The volume's name.
    pub name: &'a str,
    /// Where to mount it; `None` is the data directory.
    pub mount: Option<&'a Path>,
    /// Destroy existing signatures (filesystem, partition table, LUKS header).
    pub force: bool,
    /// The first passphrase.
    pub passphrase: &'a Secret,
}

impl Volumes {
    /// The capability for this configuration.
    pub fn new(config: &Config) -> Volumes {
        Volumes {
            config: config.volume.clone(),
            data_dir: config.data_dir.clone(),
        }
    }

    fn pbkdf(&self) -> Pbkdf {
        Pbkdf {
            memory_kib: self.config.pbkdf_memory_kib,
            iterations: self.config.pbkdf_iterations,
            parallel: self.config.pbkdf_parallel,
        }
    }

    /// The configured data volume's name, if any.
    pub fn data_volume(&self) -> Option<&str> {
        self.config.required().then_some(self.config.data.as_str())
    }

    /// The key file that unlocks `name` unattended.
    pub fn key_file(&self, name: &str) -> PathBuf {
        self.config.keys_dir.join(format!("{name}.key"))
    }

    /// The admins who may unlock the data volume over the API while it is locked.
    pub fn unlockers_file(&self) -> PathBuf {
        self.config.keys_dir.join("admins.json")
    }

    /// Refuses with the reason when a data volume is configured and `data_dir` is not on it,
    /// so that nothing opens (and creates) a store on the unencrypted disk.
    pub fn require_data(&self) -> Result<(), VolumeError> {
        match self.data_state() {
            DataVolume::Locked(why) => Err(VolumeError::Refused(format!(
                "{why}; unlock it first (`sparkbrain volume unlock {}`): nothing is written on the unencrypted disk",
                self.config.data
            ))),
            DataVolume::NotRequired | DataVolume::Ready => Ok(()),
        }
    }

    fn record(&self, name: &str) -> Result<Record, VolumeError> {
        registry::load(&self.config.registry)?
            .remove(name)
            .ok_or_else(|| {
                VolumeError::NotFound(format!(
                    "no volume named {name:?} in {} (create it with `sparkbrain volume create DEVICE --name {name}`)",
                    self.config.registry.display()
                ))
            })
    }

    /// The device of a recorded volume: found by its LUKS UUID when udev knows it, and checked
    /// to carry that UUID, so a renumbered disk is never mistaken for the volume.
    fn device_of(
        &self,
        cs: &Cryptsetup,
        name: &str,
        record: &Record,
    ) -> Result<PathBuf, VolumeError> {
        let by_uuid = Path::new("/dev/disk/by-uuid").join(&record.uuid);
        let device = if by_uuid.exists() {
            by_uuid
        } else {
            record.device.clone()
        };
        if !device.exists() {
            return Err(VolumeError::NotFound(format!(
                "the device of volume {name:?} ({}, LUKS UUID {}) is not present",
                record.device.display(),
                record.uuid
            )));
        }
        let uuid = cs.uuid(&device)?;
        if uuid != record.uuid {
            return Err(VolumeError::Refused(format!(
                "{} carries LUKS UUID {uuid}, not volume {name:?}'s {}: the disk was replaced or renamed",
                device.display(),
                record.uuid
            )));
        }
        Ok(device)
    }

    /// Formats `device` as a new LUKS2 volume with an ext4 filesystem, records it, and leaves it
    /// unlocked and mounted.
    pub fn create(&self, req: &CreateRequest<'_>) -> Result<VolumeStatus, VolumeError> {
        if !valid_name(req.name) {
            return Err(VolumeError::Refused(format!(
                "{:?} cannot name a volume: use 1 to 32 lowercase letters, digits, '-' or '_'",
                req.name
            )));
        }
        if let Some(existing) = registry::load(&self.config.registry)?.get(req.name) {
            return Err(VolumeError::Refused(format!(
                "a volume named {:?} already exists on {} (created {}); choose another name",
                req.name,
                existing.device.display(),
                existing.created
            )));
        }
        if !req.device.exists() {
            return Err(VolumeError::NotFound(format!(
                "{} does not exist",
                req.device.display()
            )));
        }
        if let Some(why) = probe::in_use(req.device)? {
            return Err(VolumeError::Refused(format!(
                "{why}; a device in use is never formatted"
            )));
        }
        let found = probe::signatures(req.device)?;
        if !found.is_empty() && !req.force {
            return Err(VolumeError::Refused(format!(
                "{} holds {}: creating a volume destroys it (add --force if that is what you want)",
                req.device.display(),
                found.join(" and ")
            )));
        }
        let cs = Cryptsetup::find()?;
        if !found.is_empty() {
            wipe_signatures(req.device)?;
        }
        let mapping = mapping_name(req.name);
        cs.format(req.device, &mapping, req.passphrase, self.pbkdf())?;
        let uuid = cs.uuid(req.device)?;
        cs.open(req.device, &mapping, req.passphrase)?;
        let mount_point = req.mount.unwrap_or(&self.data_dir).to_path_buf();
        let made = mount::make_filesystem(&mapper_path(req.name), &mapping)
            .and_then(|()| mount::mount(&mapper_path(req.name), &mount_point));
        if let Err(e) = made {
            // Leave nothing half-open; the header stays, so a retry needs --force.
            let _ = cs.close(&mapping);
            return Err(e);
        }
        registry::save(
            &self.config.registry,
            req.name,
            Record {
                device: req.device.to_path_buf(),
                uuid,
                mount: mount_point,
                created: humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    .to_string(),
            },
        )?;
        self.status_of(req.name)
    }

    /// Opens and mounts a volume with `key`, or with its key file or TPM2 token when `key` is
    /// `None`. An already open volume is only mounted.
    pub fn unlock(&self, name: &str, key: Option<&Secret>) -> Result<VolumeStatus, VolumeError> {
        let record = self.record(name)?;
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &record)?;
        let mapper = mapper_path(name);
        match key {
            // Already open (by another tool): the key must still be right.
            Some(key) if mapper.exists() => cs.test_key(&device, key)?,
            Some(key) => cs.open(&device, &mapping_name(name), key)?,
            None if mapper.exists() => {}
            None => self.open_unattended(&cs, name, &device)?,
        }
        if mount::mounted_at(&mapper).is_none() {
            mount::mount(&mapper, &record.mount)?;
        }
        self.status_of(name)
    }

    fn open_unattended(
        &self,
        cs: &Cryptsetup,
        name: &str,
        device: &Path,
    ) -> Result<(), VolumeError> {
        let key_file = self.key_file(name);
        if key_file.exists() {
            let bytes = std::fs::read(&key_file).map_err(|e| {
                VolumeError::Failed(format!(
                    "cannot read the key file {}: {e}",
                    key_file.display()
                ))
            })?;
            return cs.open(device, &mapping_name(name), &Secret::new(bytes));
        }
        if cs.header(device)?.tpm2 {
            return cs.open_with_token(device, &mapping_name(name));
        }
        Err(VolumeError::Refused(format!(
            "volume {name:?} has no key file ({}) and no TPM2 key: give its passphrase",
            key_file.display()
        )))
    }

    /// Unmounts and closes a volume. The caller makes sure the daemon no longer uses it.
    pub fn lock(&self, name: &str) -> Result<VolumeStatus, VolumeError> {
        self.record(name)?;
        let mapper = mapper_path(name);
        if let Some(at) = mount::mounted_at(&mapper) {
            mount::unmount(Path::new(&at))?;
        }
        if mapper.exists() {
            Cryptsetup::find()?.close(&mapping_name(name))?;
        }
        self.status_of(name)
    }

    /// Every recorded volume's state.
    pub fn status(&self) -> Result<Vec<VolumeStatus>, VolumeError> {
        registry::load(&self.config.registry)?
            .keys()
            .map(|name| self.status_of(name))
            .collect()
    }

    /// One volume's state.
    pub fn status_of(&self, name: &str) -> Result<VolumeStatus, VolumeError> {
        let record = self.record(name)?;
        let mapper = mapper_path(name);
        let header = Cryptsetup::find()
            .ok()
            .and_then(|cs| self.device_of(&cs, name, &record).ok().map(|d| (cs, d)))
            .and_then(|(cs, d)| cs.header(&d).ok());
        Ok(VolumeStatus {
            name: name.to_string(),
            present: record.device.exists()
                || Path::new("/dev/disk/by-uuid").join(&record.uuid).exists(),
            unlocked: mapper.exists(),
            mounted_at: mount::mounted_at(&mapper),
            data: self.data_volume() == Some(name),
            key_slots: header.as_ref().map(|h| h.slots.clone()),
            key_file: self.key_file(name).exists(),
            tpm2_enrolled: header.is_some_and(|h| h.tpm2),
            device: record.device,
            uuid: record.uuid,
            mount: record.mount,
            created: record.created,
        })
    }

    /// Adds `new` as a key, authorised by `existing`.
    pub fn add_key(&self, name: &str, existing: &Secret, new: &Secret) -> Result<(), VolumeError> {
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &self.record(name)?)?;
        cs.add_key(&device, existing, new, self.pbkdf())
    }

    /// Generates a random key file (0400 in `keys_dir`) and adds it as a key, authorised by
    /// `existing`; the daemon and `volume unlock` then open the volume unattended.
    pub fn add_key_file(&self, name: &str, existing: &Secret) -> Result<PathBuf, VolumeError> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let path = self.key_file(name);
        if path.exists() {
            return Err(VolumeError::Refused(format!(
                "{} already exists; remove its key slot and the file first",
                path.display()
            )));
        }
        let mut key = vec![0u8; 64];
        getrandom::fill(&mut key)
            .map_err(|e| VolumeError::Failed(format!("no randomness available: {e}")))?;
        let key = Secret::new(key);
        self.add_key(name, existing, &key)?;
        let write_err = |e: std::io::Error| {
            VolumeError::Failed(format!("cannot write {}: {e}", path.display()))
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.config.keys_dir)
            .map_err(write_err)?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(write_err)?;
        file.write_all(key.bytes())
            .and_then(|()| file.sync_all())
            .map_err(write_err)?;
        Ok(path)
    }

    /// Wipes key slot `slot`, authorised by a key of another slot; the last slot is never wiped.
    pub fn remove_key(&self, name: &str, slot: u32, other: &Secret) -> Result<(), VolumeError> {
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &self.record(name)?)?;
        let header = cs.header(&device)?;
        if !header.slots.contains(&slot) {
            return Err(VolumeError::NotFound(format!(
                "volume {name:?} has no key in slot {slot} (slots in use: {:?})",
                header.slots
            )));
        }
        if header.slots.len() == 1 {
            return Err(VolumeError::Refused(format!(
                "slot {slot} holds the last key of volume {name:?}; wiping it would lose the data for good"
            )));
        }
        cs.kill_slot(&device, slot, other)
    }

    /// Changes the passphrase `old` to `new`.
    pub fn change_passphrase(
        &self,
        name: &str,
        old: &Secret,
        new: &Secret,
    ) -> Result<(), VolumeError> {
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &self.record(name)?)?;
        cs.change_key(&device, old, new, self.pbkdf())
    }

    /// Writes the LUKS2 header (with its key slots) to `file`, which must not exist yet.
    pub fn header_backup(&self, name: &str, file: &Path) -> Result<(), VolumeError> {
        if file.exists() {
            return Err(VolumeError::Refused(format!(
                "{} already exists; choose a new file",
                file.display()
            )));
        }
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &self.record(name)?)?;
        cs.header_backup(&device, file)
    }

    /// Whether this box has a TPM2 that `systemd-cryptenroll` can bind keys to.
    pub fn tpm2_available() -> bool {
        Path::new("/sys/class/tpm/tpm0").exists() && Path::new("/dev/tpmrm0").exists()
    }

    /// Binds a key to this box's TPM2 with `systemd-cryptenroll`, authorised by `existing`.
    pub fn enroll_tpm2(&self, name: &str, existing: &Secret) -> Result<(), VolumeError> {
        if !Self::tpm2_available() {
            return Err(VolumeError::NotFound(
                "this box has no TPM2 (/sys/class/tpm/tpm0, /dev/tpmrm0); use a passphrase or a key file".into(),
            ));
        }
        let cs = Cryptsetup::find()?;
        let device = self.device_of(&cs, name, &self.record(name)?)?;
        // systemd 252 reads the existing passphrase from $PASSWORD (no stdin option).
        let passphrase = String::from_utf8_lossy(existing.bytes());
        tools::run_tool(
            "systemd-cryptenroll",
            "systemd",
            &[
                std::ffi::OsStr::new("--tpm2-device=auto"),
                device.as_os_str(),
            ],
            &[("PASSWORD", passphrase.as_ref())],
        )
    }

    /// Checks whether the data directory may be opened: with a data volume configured, only
    /// when it lies on that volume's unlocked dm-crypt mapping.
    pub fn data_state(&self) -> DataVolume {
        let Some(name) = self.data_volume() else {
            return DataVolume::NotRequired;
        };
        if let Err(e) = self.record(name) {
            return DataVolume::Locked(format!("data volume {name:?} is not created: {e}"));
        }
        match mount::on_crypt_mapping(&self.data_dir, &mapper_path(name)) {
            Ok(()) => DataVolume::Ready,
            Err(why) => DataVolume::Locked(format!("data volume {name:?} is locked: {why}")),
        }
    }
}

/// Removes filesystem, partition-table and LUKS signatures before formatting (`--force`), so
/// that no stale backup GPT or superblock survives past the new header.
fn wipe_signatures(device: &Path) -> Result<(), VolumeError> {
    tools::run_tool(
        "wipefs",
        "util-linux",
        &[std::ffi::OsStr::new("--all"), device.as_os_str()],
        &[],
    )
}
