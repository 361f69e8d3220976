//! The record of volumes `sparkbrain volume create` made: a small TOML file on the root
//! filesystem (it must be readable while every volume is locked).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::VolumeError;

/// One recorded volume.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The device as given at creation (a stable /dev/disk/by-id path is best).
    pub device: PathBuf,
    /// LUKS UUID: finds the device again if its name changes, and proves it is the same one.
    pub uuid: String,
    /// Where the volume is mounted when unlocked.
    pub mount: PathBuf,
    /// When it was created (RFC 3339).
    pub created: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    volumes: BTreeMap<String, Record>,
}

/// Reads every record; a missing file is an empty registry.
pub fn load(path: &Path) -> Result<BTreeMap<String, Record>, VolumeError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => {
            return Err(VolumeError::Failed(format!(
                "cannot read the volume registry {}: {e}",
                path.display()
            )));
        }
    };
    let file: File = toml::from_str(&text).map_err(|e| {
        VolumeError::Failed(format!(
            "the volume registry {} is malformed: {e}",
            path.display()
        ))
    })?;
    Ok(file.volumes)
}

/// Adds or replaces one record, writing the file atomically (0600).
pub fn save(path: &Path, name: &str, record: Record) -> Result<(), VolumeError> {
    let mut volumes = load(path)?;
    volumes.insert(name.to_string(), record);
    let text = toml::to_string_pretty(&File { volumes })
        .map_err(|e| VolumeError::Failed(format!("cannot encode the volume registry: {e}")))?;
    let text = format!(
        "# Volumes made by `sparkbrain volume create`; read by the daemon and the CLI.\n{text}"
    );
    crate::store::write_private(path, text.as_bytes()).map_err(|e| {
        VolumeError::Failed(format!(
            "cannot write the volume registry {}: {e}",
            path.display()
        ))
    })
}
