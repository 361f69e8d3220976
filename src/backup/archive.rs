//! Writing and reading archives: tar members hashed as they stream through zstd (and age).

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use super::BackupError;
use super::crypto::{self, Decryption, EncryptingWriter, Encryption};
use super::format::{
    self, DATA_PREFIX, FORMAT_VERSION, HEADER_MEMBER, Header, MANIFEST_MEMBER, Manifest, Member,
};
use crate::store::{DB_FILE, SCHEMA_VERSION};

/// The first bytes of a zstd frame.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// zstd level: the CLI's default, fast enough to keep up with a disk.
const ZSTD_LEVEL: i32 = 3;
const COPY_BUFFER: usize = 256 * 1024;

type Sink = zstd::stream::write::Encoder<'static, EncryptingWriter<BufWriter<File>>>;

/// An archive being written to a file.
pub(crate) struct ArchiveWriter {
    tar: tar::Builder<Sink>,
    members: Vec<Member>,
    mtime: u64,
}

impl ArchiveWriter {
    /// Starts an archive at `path` (created, never overwritten) with its header.
    pub fn create(
        path: &Path,
        encryption: &Encryption,
        header: &Header,
    ) -> Result<ArchiveWriter, BackupError> {
        // Readable by root only: it holds every document.
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| BackupError::io_at("cannot create the archive", path, e))?;
        let out = encryption.wrap(BufWriter::with_capacity(COPY_BUFFER, file))?;
        let mut zstd = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL)
            .map_err(|e| BackupError::io("cannot start compression", e))?;
        // Truncation and bit rot are then caught by the decompressor too, frame by frame.
        zstd.include_checksum(true)
            .map_err(|e| BackupError::io("cannot start compression", e))?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
        if workers > 1 {
            zstd.multithread(workers)
                .map_err(|e| BackupError::io("cannot start compression", e))?;
        }
        let mut tar = tar::Builder::new(zstd);
        tar.mode(tar::HeaderMode::Deterministic);
        let mut writer = ArchiveWriter {
            tar,
            members: Vec::new(),
            mtime: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let json =
            serde_json::to_vec_pretty(header).map_err(|e| BackupError::Internal(e.to_string()))?;
        writer.add_bytes(HEADER_MEMBER, &json)?;
        Ok(writer)
    }

    /// Adds a member from bytes in memory.
    pub fn add_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), BackupError> {
        self.add_reader(name, bytes.len() as u64, bytes)
    }

    /// Adds a member from a file on disk, streamed.
    pub fn add_file(&mut self, name: &str, path: &Path) -> Result<(), BackupError> {
        let file = File::open(path).map_err(|e| BackupError::io_at("cannot read", path, e))?;
        self.add_open_file(name, file, path)
    }

    /// Adds a member from a file already open (a blob that may be unlinked meanwhile).
    pub fn add_open_file(
        &mut self,
        name: &str,
        file: File,
        path: &Path,
    ) -> Result<(), BackupError> {
        let size = file
            .metadata()
            .map_err(|e| BackupError::io_at("cannot read", path, e))?
            .len();
        self.add_reader(name, size, file)
    }

    fn add_reader(
        &mut self,
        name: &str,
        size: u64,
        mut reader: impl Read,
    ) -> Result<(), BackupError> {
        let mut header = tar::Header::new_gnu();
        header.set_size(size);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        // The tar crate needs the whole content up front for its own header; stream it
        // through a hashing reader instead of buffering.
        // Large reads: tar copies through an 8 KiB buffer otherwise, a zstd call each.
        let mut buffered = std::io::BufReader::with_capacity(
            COPY_BUFFER.min(size.max(1) as usize),
            HashingReader {
                inner: &mut reader,
                hash: Sha256::new(),
                read: 0,
                limit: size,
            },
        );
        self.tar
            .append_data(&mut header, name, &mut buffered)
            .map_err(|e| BackupError::io(format!("cannot write member {name}"), e))?;
        let hashing = buffered.into_inner();
        if hashing.read != size {
            return Err(BackupError::Internal(format!(
                "{name} changed size while it was being archived"
            )));
        }
        self.members.push(Member {
            path: name.to_string(),
            size,
            sha256: hex::encode(hashing.hash.finalize()),
        });
        Ok(())
    }

    /// Writes the manifest, closes every layer and makes the file durable; returns its size.
    pub fn finish(mut self, path: &Path) -> Result<u64, BackupError> {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            members: std::mem::take(&mut self.members),
        };
        let json = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| BackupError::Internal(e.to_string()))?;
        let mut header = tar::Header::new_gnu();
        header.set_size(json.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        self.tar
            .append_data(&mut header, MANIFEST_MEMBER, json.as_slice())
            .map_err(|e| BackupError::io("cannot write the manifest", e))?;
        let zstd = self
            .tar
            .into_inner()
            .map_err(|e| BackupError::io("cannot finish the archive", e))?;
        let encrypting = zstd
            .finish()
            .map_err(|e| BackupError::io("cannot finish compression", e))?;
        let mut buffered = encrypting
            .finish()
            .map_err(|e| BackupError::io("cannot finish encryption", e))?;
        buffered
            .flush()
            .map_err(|e| BackupError::io_at("cannot write", path, e))?;
        let file = buffered
            .into_inner()
            .map_err(|e| BackupError::io_at("cannot write", path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| BackupError::io_at("cannot sync", path, e))?;
        Ok(file
            .metadata()
            .map_err(|e| BackupError::io_at("cannot read", path, e))?
            .len())
    }
}

struct HashingReader<'a, R: Read> {
    inner: &'a mut R,
    hash: Sha256,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Never more than the size the tar header announced, even if the file grew.
        let room = (self.limit - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.hash.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// What [`read_archive`] hands each data member to.
pub(crate) trait MemberSink {
    /// Receives one member's content; must read it all.
    fn member(&mut self, path: &str, size: u64, content: &mut dyn Read) -> Result<(), BackupError>;
}

/// Reads a whole archive, passing members to `sink`, and checks every size and checksum
/// against the manifest. Fails if the header is newer than this binary, if anything does not
/// match, or if the archive ends early. Returns the header and manifest.
pub(crate) fn read_archive(
    path: &Path,
    key: &Decryption,
    sink: &mut dyn MemberSink,
) -> Result<(Header, Manifest, bool), BackupError> {
    let file = File::open(path).map_err(|e| BackupError::io_at("cannot open", path, e))?;
    let (plain, encrypted) =
        crypto::open_reader(std::io::BufReader::with_capacity(COPY_BUFFER, file), key)?;
    let mut plain = plain;
    let mut magic = [0u8; 4];
    let got = crypto::read_up_to(&mut plain, &mut magic)?;
    if magic[..got] != ZSTD_MAGIC[..] {
        return Err(BackupError::Corrupt(format!(
            "{} is not a sparkbrain archive: it is neither zstd-compressed nor age-encrypted",
            path.display()
        )));
    }
    let plain = std::io::Cursor::new(magic).chain(plain);
    let zstd = zstd::stream::read::Decoder::new(plain)
        .map_err(|e| BackupError::Corrupt(format!("cannot start decompression: {e}")))?;
    let mut tar = tar::Archive::new(zstd);
    let entries = tar.entries().map_err(damaged)?;
    let mut header: Option<Header> = None;
    let mut seen: Vec<Member> = Vec::new();
    let mut manifest: Option<Manifest> = None;
    let mut buf = vec![0u8; COPY_BUFFER];
    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_str()
            .ok_or_else(|| BackupError::Corrupt("a member name is not UTF-8".into()))?
            .to_string();
        if manifest.is_some() {
            return Err(BackupError::Corrupt(format!(
                "member {name} follows the manifest"
            )));
        }
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(BackupError::Corrupt(format!(
                "member {name} is not a regular file"
            )));
        }
        format::check_member_path(&name).map_err(BackupError::Corrupt)?;
        let size = entry.size();
        if header.is_none() && name != HEADER_MEMBER {
            return Err(BackupError::Corrupt(format!(
                "the first member is {name}, not {HEADER_MEMBER}: this is not a sparkbrain backup"
            )));
        }
        if name == HEADER_MEMBER || name == MANIFEST_MEMBER {
            if size > 64 << 20 {
                return Err(BackupError::Corrupt(format!("{name} is implausibly large")));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry.read_to_end(&mut bytes).map_err(damaged)?;
            if name == MANIFEST_MEMBER {
                manifest = Some(serde_json::from_slice(&bytes).map_err(|e| {
                    BackupError::Corrupt(format!("the manifest is not readable: {e}"))
                })?);
                continue;
            }
            if header.is_some() {
                return Err(BackupError::Corrupt(format!(
                    "{HEADER_MEMBER} appears twice"
                )));
            }
            let h = parse_header(&bytes)?;
            seen.push(Member {
                path: name,
                size,
                sha256: hex::encode(Sha256::digest(&bytes)),
            });
            header = Some(h);
            continue;
        }
        let mut hashing = HashingReader {
            inner: &mut entry,
            hash: Sha256::new(),
            read: 0,
            limit: size,
        };
        sink.member(&name, size, &mut hashing)?;
        // Whatever the sink left unread still counts towards the checksum.
        loop {
            let n = hashing.read(&mut buf).map_err(damaged)?;
            if n == 0 {
                break;
            }
        }
        if hashing.read != size {
            return Err(BackupError::Corrupt(format!("member {name} is cut short")));
        }
        seen.push(Member {
            path: name,
            size,
            sha256: hex::encode(hashing.hash.finalize()),
        });
    }
    let header = header
        .ok_or_else(|| BackupError::Corrupt("the archive is empty: no sparkbrain header".into()))?;
    let manifest = manifest.ok_or_else(|| {
        BackupError::Corrupt(
            "the archive ends before its manifest: it is truncated or was not finished".into(),
        )
    })?;
    compare(&seen, &manifest)?;
    Ok((header, manifest, encrypted))
}

fn parse_header(bytes: &[u8]) -> Result<Header, BackupError> {
    // The version fields first, so a newer archive gets "too new", not "unreadable".
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| BackupError::Corrupt(format!("the header is not JSON: {e}")))?;
    let number = |key: &str| value.get(key).and_then(serde_json::Value::as_u64);
    let written_by = value
        .get("sparkbrain_version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("an unknown version");
    if let Some(v) = number("format_version")
        && v > u64::from(FORMAT_VERSION)
    {
        return Err(BackupError::TooNew(format!(
            "the archive has format version {v}, written by sparkbrain {written_by}; this sparkbrain {} reads up to version {FORMAT_VERSION}: restore it with sparkbrain {written_by} or newer",
            env!("CARGO_PKG_VERSION")
        )));
    }
    if let Some(v) = number("schema_version")
        && v > u64::from(SCHEMA_VERSION)
    {
        return Err(BackupError::TooNew(format!(
            "the archive's database has schema version {v}, written by sparkbrain {written_by}; this sparkbrain {} knows up to version {SCHEMA_VERSION}: restore it with sparkbrain {written_by} or newer",
            env!("CARGO_PKG_VERSION")
        )));
    }
    serde_json::from_value(value)
        .map_err(|e| BackupError::Corrupt(format!("the header is not readable: {e}")))
}

fn compare(seen: &[Member], manifest: &Manifest) -> Result<(), BackupError> {
    if manifest.members.len() != seen.len() {
        return Err(BackupError::Corrupt(format!(
            "the manifest lists {} members, the archive holds {}",
            manifest.members.len(),
            seen.len()
        )));
    }
    for (found, listed) in seen.iter().zip(&manifest.members) {
        if found.path != listed.path {
            return Err(BackupError::Corrupt(format!(
                "the manifest lists {} where the archive holds {}",
                listed.path, found.path
            )));
        }
        if found.size != listed.size || found.sha256 != listed.sha256 {
            return Err(BackupError::Corrupt(format!(
                "member {} does not match its checksum (SHA-256 {} recorded, {} found)",
                found.path, listed.sha256, found.sha256
            )));
        }
    }
    Ok(())
}

fn damaged(e: std::io::Error) -> BackupError {
    let text = e.to_string();
    if e.kind() == std::io::ErrorKind::UnexpectedEof || text.contains("unexpected end") {
        BackupError::Corrupt("the archive ends early: it is truncated".into())
    } else {
        BackupError::Corrupt(format!("cannot read the archive: {text}"))
    }
}

/// What `sparkbrain backup verify` found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Verified {
    /// The archive's header.
    pub header: Header,
    /// Members, header included, manifest not.
    pub members: usize,
    /// Bytes of member content.
    pub content_bytes: u64,
    /// Whether the archive is encrypted.
    pub encrypted: bool,
}

/// Checks an archive end to end without restoring: decryption, every checksum, the header's
/// versions, and that its database is intact and references only blobs it carries.
pub fn verify(path: &Path, key: &Decryption) -> Result<Verified, BackupError> {
    let scratch = tempfile::Builder::new()
        .prefix("sparkbrain-verify-")
        .tempdir()
        .map_err(|e| BackupError::io("cannot create a scratch folder", e))?;
    let mut sink = VerifySink {
        dir: scratch.path(),
        blobs: std::collections::HashSet::new(),
        db: false,
    };
    let (header, manifest, encrypted) = read_archive(path, key, &mut sink)?;
    if !sink.db {
        return Err(BackupError::Corrupt(format!(
            "the archive holds no {DATA_PREFIX}{DB_FILE}"
        )));
    }
    check_database(&scratch.path().join(DB_FILE), true, |sha| {
        sink.blobs.contains(sha)
    })?;
    Ok(Verified {
        header,
        members: manifest.members.len(),
        content_bytes: manifest.members.iter().map(|m| m.size).sum(),
        encrypted,
    })
}

struct VerifySink<'a> {
    dir: &'a Path,
    blobs: std::collections::HashSet<String>,
    db: bool,
}

impl MemberSink for VerifySink<'_> {
    fn member(
        &mut self,
        path: &str,
        _size: u64,
        content: &mut dyn Read,
    ) -> Result<(), BackupError> {
        if path == format!("{DATA_PREFIX}{DB_FILE}") {
            let target = self.dir.join(DB_FILE);
            let mut out = File::create(&target)
                .map_err(|e| BackupError::io_at("cannot write", &target, e))?;
            std::io::copy(content, &mut out).map_err(damaged)?;
            self.db = true;
        } else if let Some(rest) = path.strip_prefix("data/blobs/")
            && let Some(name) = rest.rsplit('/').next()
        {
            self.blobs.insert(name.to_string());
        }
        Ok(())
    }
}

/// Checks a restored or verified database: SQLite's integrity check (`thorough`, for
/// `verify`) or its quick check (for a restore, whose checksums already prove the copy is the
/// one taken), a schema this binary knows, and every document's blob present (`has_blob`
/// answers by SHA-256).
pub(crate) fn check_database(
    path: &Path,
    thorough: bool,
    has_blob: impl Fn(&str) -> bool,
) -> Result<(), BackupError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let check = if thorough {
        "PRAGMA integrity_check"
    } else {
        "PRAGMA quick_check"
    };
    let verdict: String = conn.query_row(check, [], |r| r.get(0))?;
    if verdict != "ok" {
        return Err(BackupError::Corrupt(format!(
            "the database in the archive fails SQLite's integrity check: {verdict}"
        )));
    }
    let version: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(BackupError::TooNew(format!(
            "the archive's database has schema version {version}; this sparkbrain knows up to {SCHEMA_VERSION}"
        )));
    }
    let mut stmt = conn.prepare("SELECT DISTINCT sha256 FROM documents")?;
    let shas: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let missing: Vec<&String> = shas.iter().filter(|s| !has_blob(s)).collect();
    if let Some(first) = missing.first() {
        return Err(BackupError::Corrupt(format!(
            "{} document file(s) are missing from the archive, e.g. blob {first}",
            missing.len()
        )));
    }
    Ok(())
}
