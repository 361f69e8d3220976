//! The archive format, version 1.
//!
//! An archive is a tar stream compressed with zstd (with frame checksums), optionally wrapped
//! in age encryption. Its first member is [`HEADER_MEMBER`] (what wrote it, so an incompatible
//! archive is refused before anything is read), its last is [`MANIFEST_MEMBER`] (the size and
//! SHA-256 of every other member, so damage anywhere is found). Between them:
//!
//! - `data/sparkbrain.db`: the database, copied with SQLite's online backup API;
//! - `data/blobs/<aa>/<bb>/<sha256>`: the original files every document references;
//! - `data/kb/collections/<id>/…`: the vector and text indexes, unless they are to be rebuilt;
//! - `data/models/…`: the model repository when it lives in the data directory;
//! - `data/secrets/jwt.key`, `data/tls/…`: only in encrypted archives;
//! - `system/config.toml`, `system/volumes.toml`, `system/keys/…`: the configuration, and
//!   (encrypted archives only) the volume registry and key files.

use serde::{Deserialize, Serialize};

/// The format this binary writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// First member: [`Header`] as JSON.
pub const HEADER_MEMBER: &str = "sparkbrain-backup.json";
/// Last member: [`Manifest`] as JSON.
pub const MANIFEST_MEMBER: &str = "MANIFEST.json";
/// Members under this prefix are restored into the data directory.
pub const DATA_PREFIX: &str = "data/";
/// Members under this prefix are the host's files outside the data directory.
pub const SYSTEM_PREFIX: &str = "system/";
/// File extension of a plain archive.
pub const PLAIN_SUFFIX: &str = ".tar.zst";
/// File extension of an encrypted archive.
pub const ENCRYPTED_SUFFIX: &str = ".tar.zst.age";
/// Every archive name starts with this.
pub const NAME_PREFIX: &str = "sparkbrain-";

/// What wrote the archive; read before anything else.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    /// [`FORMAT_VERSION`] of the writer.
    pub format_version: u32,
    /// The sparkbrain version that wrote it.
    pub sparkbrain_version: String,
    /// The database schema version of the snapshot.
    pub schema_version: u32,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// Host name of the machine it was taken on.
    pub hostname: String,
    /// Whether the JWT key, TLS key, API key hashes, sessions and volume keys are inside.
    pub secrets_included: bool,
    /// Whether the vector and text indexes are inside; otherwise the daemon rebuilds them.
    pub indexes_included: bool,
    /// Whether model files (not only configs) are inside.
    pub models_included: bool,
    /// Documents and chunks in the snapshot, for listings.
    pub documents: u64,
    /// Chunks in the snapshot.
    pub chunks: u64,
}

/// One member of the archive as the manifest records it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    /// Path inside the archive.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// The last member: every other member, in archive order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// Same as the header's.
    pub format_version: u32,
    /// The members between header and manifest, header first.
    pub members: Vec<Member>,
}

/// Checks a member path read from an archive: relative, no `..`, no empty or odd parts, and
/// under a known prefix. A hostile archive cannot write outside the restore folder.
pub fn check_member_path(path: &str) -> Result<(), String> {
    if path == HEADER_MEMBER || path == MANIFEST_MEMBER {
        return Ok(());
    }
    if !(path.starts_with(DATA_PREFIX) || path.starts_with(SYSTEM_PREFIX)) {
        return Err(format!("member {path:?} is outside data/ and system/"));
    }
    let ok = path.split('/').all(|part| {
        !part.is_empty()
            && part != "."
            && part != ".."
            && !part.contains('\\')
            && !part.chars().any(char::is_control)
    });
    if ok {
        Ok(())
    } else {
        Err(format!("member path {path:?} is not a plain relative path"))
    }
}

/// Whether a file name looks like an archive this tool wrote.
pub fn is_archive_name(name: &str) -> bool {
    name.starts_with(NAME_PREFIX)
        && (name.ends_with(PLAIN_SUFFIX) || name.ends_with(ENCRYPTED_SUFFIX))
}

/// The name of an archive taken at `stamp` (`yyyymmddThhmmssZ`).
pub fn archive_name(stamp: &str, encrypted: bool) -> String {
    let suffix = if encrypted {
        ENCRYPTED_SUFFIX
    } else {
        PLAIN_SUFFIX
    };
    format!("{NAME_PREFIX}{stamp}{suffix}")
}

/// The moment encoded in an archive name, as seconds since the epoch.
pub fn name_timestamp(name: &str) -> Option<i64> {
    let stamp = name.strip_prefix(NAME_PREFIX)?.get(..16)?;
    let t = humantime::parse_rfc3339(&format!(
        "{}-{}-{}T{}:{}:{}Z",
        stamp.get(0..4)?,
        stamp.get(4..6)?,
        stamp.get(6..8)?,
        stamp.get(9..11)?,
        stamp.get(11..13)?,
        stamp.get(13..15)?
    ))
    .ok()?;
    Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as i64)
}

/// `yyyymmddThhmmssZ` for a moment.
pub fn stamp(at: std::time::SystemTime) -> String {
    let rfc = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-11-28T08:30:00Z → 20261128T083000Z
    rfc.chars().filter(|c| *c != '-' && *c != ':').collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_that_escape_are_refused() {
        for bad in [
            "../etc/passwd",
            "data/../../etc/passwd",
            "/data/x",
            "data//x",
            "data/./x",
            "other/x",
            "data/a\\b",
            "data/a\nb",
        ] {
            assert!(check_member_path(bad).is_err(), "{bad}");
        }
        for good in [
            "data/sparkbrain.db",
            "data/blobs/aa/bb/cc",
            "system/config.toml",
        ] {
            assert!(check_member_path(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn names_round_trip_their_moment() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let name = archive_name(&stamp(at), true);
        assert!(is_archive_name(&name), "{name}");
        assert!(name.ends_with(".tar.zst.age"));
        assert_eq!(name_timestamp(&name), Some(1_795_000_000));
        assert!(!is_archive_name("sparkbrain-x.zip"));
    }
}
