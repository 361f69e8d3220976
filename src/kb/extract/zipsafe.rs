//! Reading entries of ZIP-based documents (DOCX, ODT, EPUB) within a decompression budget.
//!
//! A zip bomb declares small sizes or honest huge ones; either way we stop reading as soon as
//! the bytes actually produced exceed what is left of [`Limits::max_decompressed_bytes`], so
//! memory stays bounded whatever the headers claim. Encrypted entries are refused rather than
//! read as garbage.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use zip::ZipArchive;
use zip::result::ZipError;

use super::{ExtractError, FailureReason, Limits, human_bytes, io_error};

/// An opened archive plus what is left of its decompression budget.
pub(crate) struct SafeZip {
    archive: ZipArchive<BufReader<File>>,
    remaining: u64,
    limit: u64,
    /// "DOCX", "ODT" or "EPUB", for messages.
    what: &'static str,
}

impl SafeZip {
    /// Opens `path`, mapping an unreadable central directory to Truncated or Corrupt.
    pub(crate) fn open(
        path: &Path,
        limits: &Limits,
        what: &'static str,
    ) -> Result<SafeZip, ExtractError> {
        let file = File::open(path).map_err(|e| io_error(path, &e))?;
        let archive = ZipArchive::new(BufReader::new(file)).map_err(|e| zip_error(e, what))?;
        Ok(SafeZip {
            archive,
            remaining: limits.max_decompressed_bytes,
            limit: limits.max_decompressed_bytes,
            what,
        })
    }

    /// Whether the archive has an entry of this exact name.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.archive.index_for_name(name).is_some()
    }

    /// Reads one entry fully, or `None` when there is no such entry.
    pub(crate) fn read(&mut self, name: &str) -> Result<Option<Vec<u8>>, ExtractError> {
        let Some(index) = self.archive.index_for_name(name) else {
            return Ok(None);
        };
        let (encrypted, declared) = {
            let entry = self
                .archive
                .by_index_data(index)
                .map_err(|e| zip_error(e, self.what))?;
            (entry.encrypted(), entry.size())
        };
        if encrypted {
            return Err(ExtractError::new(
                FailureReason::Encrypted,
                format!(
                    "the {} is password-protected ({name} is encrypted); save it without a password",
                    self.what
                ),
            ));
        }
        if declared > self.remaining {
            return Err(self.bomb());
        }
        let what = self.what;
        let remaining = self.remaining;
        let mut entry = self
            .archive
            .by_index(index)
            .map_err(|e| zip_error(e, what))?;
        // The declared size is only a hint for the allocation; the `take` is the real bound.
        let mut bytes = Vec::with_capacity(declared.min(remaining).min(16 << 20) as usize);
        let read = (&mut entry)
            .take(remaining.saturating_add(1))
            .read_to_end(&mut bytes);
        drop(entry);
        read.map_err(|e| read_error(&e, name, what))?;
        if bytes.len() as u64 > remaining {
            return Err(self.bomb());
        }
        self.remaining -= bytes.len() as u64;
        Ok(Some(bytes))
    }

    /// Reads one entry as text (XML parts are UTF-8 in practice; UTF-16 with a BOM is allowed
    /// by XML and handled too).
    pub(crate) fn read_text(&mut self, name: &str) -> Result<Option<String>, ExtractError> {
        let Some(bytes) = self.read(name)? else {
            return Ok(None);
        };
        Ok(Some(xml_text(&bytes)))
    }

    fn bomb(&self) -> ExtractError {
        ExtractError::new(
            FailureReason::TooLarge,
            format!(
                "the {} decompresses to more than {} (a zip bomb, or too large a document)",
                self.what,
                human_bytes(self.limit)
            ),
        )
    }
}

/// Decodes an XML part: BOM-declared UTF-16, else UTF-8 (invalid bytes become U+FFFD rather than
/// failing the document over one bad character).
pub(crate) fn xml_text(bytes: &[u8]) -> String {
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(bytes) {
        return encoding
            .decode_without_bom_handling(&bytes[bom..])
            .0
            .into_owned();
    }
    String::from_utf8_lossy(bytes).into_owned()
}

/// Maps the zip crate's errors to what they mean for the person uploading.
fn zip_error(err: ZipError, what: &str) -> ExtractError {
    match err {
        ZipError::UnsupportedArchive(msg) if msg == ZipError::PASSWORD_REQUIRED => {
            ExtractError::new(
                FailureReason::Encrypted,
                format!("the {what} is password-protected; save it without a password"),
            )
        }
        ZipError::InvalidPassword => ExtractError::new(
            FailureReason::Encrypted,
            format!("the {what} is password-protected; save it without a password"),
        ),
        ZipError::CompressionMethodNotSupported(method) => ExtractError::new(
            FailureReason::Corrupt,
            format!(
                "the {what} uses ZIP compression method {method}, which is not supported (only stored and deflate)"
            ),
        ),
        ZipError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => truncated(what),
        ZipError::InvalidArchive(msg) => {
            let lower = msg.to_ascii_lowercase();
            // Without its end-of-central-directory record, the archive was cut short.
            if lower.contains("eocd") || lower.contains("central directory end") {
                truncated(what)
            } else {
                ExtractError::new(
                    FailureReason::Corrupt,
                    format!("the {what} is not a valid ZIP archive: {msg}"),
                )
            }
        }
        other => ExtractError::new(
            FailureReason::Corrupt,
            format!("the {what} could not be read as a ZIP archive: {other}"),
        ),
    }
}

fn truncated(what: &str) -> ExtractError {
    ExtractError::new(
        FailureReason::Truncated,
        format!("the {what} ends early (an incomplete upload or copy); upload it again"),
    )
}

/// An entry that fails while decompressing: cut short, or damaged.
fn read_error(err: &std::io::Error, name: &str, what: &str) -> ExtractError {
    if err.kind() == std::io::ErrorKind::UnexpectedEof {
        return truncated(what);
    }
    if err.kind() == std::io::ErrorKind::OutOfMemory {
        // `read_to_end` reports a failed allocation instead of aborting: the sandbox's memory
        // limit was reached.
        return ExtractError::new(
            FailureReason::TooLarge,
            format!("the {what} needs more memory to decompress than extraction may use"),
        );
    }
    ExtractError::new(
        FailureReason::Corrupt,
        format!("the {what} is damaged: {name} cannot be decompressed ({err})"),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn write_zip(entries: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        {
            let mut zip = zip::ZipWriter::new(file.as_file_mut());
            for (name, data) in entries {
                zip.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                zip.write_all(data).unwrap();
            }
            zip.finish().unwrap();
        }
        file
    }

    fn limits(max: u64) -> Limits {
        Limits {
            max_decompressed_bytes: max,
            ..Limits::default()
        }
    }

    #[test]
    fn reads_within_budget() {
        let file = write_zip(&[("a.xml", b"<a/>".to_vec()), ("b.xml", b"<b/>".to_vec())]);
        let mut zip = SafeZip::open(file.path(), &limits(8), "DOCX").unwrap();
        assert!(zip.contains("a.xml"));
        assert_eq!(zip.read_text("a.xml").unwrap().unwrap(), "<a/>");
        assert_eq!(zip.read("missing").unwrap(), None);
        assert_eq!(zip.read("b.xml").unwrap().unwrap(), b"<b/>");
    }

    #[test]
    fn budget_is_shared_across_entries() {
        let file = write_zip(&[("a", vec![b'a'; 600]), ("b", vec![b'b'; 600])]);
        let mut zip = SafeZip::open(file.path(), &limits(1000), "DOCX").unwrap();
        zip.read("a").unwrap();
        let err = zip.read("b").unwrap_err();
        assert_eq!(err.reason, FailureReason::TooLarge);
        assert!(
            err.message.contains("decompresses to more than 1000 bytes"),
            "{err}"
        );
    }

    /// A bomb that lies about its size in both headers: the actual bytes are what stops it.
    #[test]
    fn lying_sizes_are_caught_while_reading() {
        let file = write_zip(&[("word/document.xml", vec![b' '; 1 << 20])]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        // Patch the uncompressed size in the local header (offset 22) and the central
        // directory entry (offset 24) to 10 bytes.
        let patch = |bytes: &mut Vec<u8>, sig: &[u8], offset: usize| {
            let at = bytes.windows(4).position(|w| w == sig).unwrap();
            bytes[at + offset..at + offset + 4].copy_from_slice(&10u32.to_le_bytes());
        };
        patch(&mut bytes, b"PK\x03\x04", 22);
        patch(&mut bytes, b"PK\x01\x02", 24);
        std::fs::write(file.path(), &bytes).unwrap();
        let mut zip = SafeZip::open(file.path(), &limits(64 * 1024), "DOCX").unwrap();
        match zip.read("word/document.xml") {
            Err(err) => assert!(
                matches!(err.reason, FailureReason::TooLarge | FailureReason::Corrupt),
                "{err:?}"
            ),
            // The zip crate may stop at the declared size itself: then we got at most that.
            Ok(Some(data)) => assert!(data.len() <= 64 * 1024),
            Ok(None) => panic!("entry vanished"),
        }
    }

    /// An entry flagged as encrypted (general-purpose bit 0 in both headers) is refused
    /// before any attempt to decompress it.
    #[test]
    fn encrypted_entries_are_refused() {
        let file = write_zip(&[("content.xml", b"<x/>".to_vec())]);
        let mut bytes = std::fs::read(file.path()).unwrap();
        for (sig, offset) in [(b"PK\x03\x04", 6), (b"PK\x01\x02", 8)] {
            let at = bytes.windows(4).position(|w| w == sig).unwrap();
            bytes[at + offset] |= 1;
        }
        std::fs::write(file.path(), &bytes).unwrap();
        let mut zip = SafeZip::open(file.path(), &limits(1 << 20), "ODT").unwrap();
        let err = zip.read("content.xml").unwrap_err();
        assert_eq!(err.reason, FailureReason::Encrypted, "{err:?}");
        assert!(err.message.contains("password-protected"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_archives() {
        let file = write_zip(&[("a", vec![b'a'; 5000])]);
        let bytes = std::fs::read(file.path()).unwrap();
        std::fs::write(file.path(), &bytes[..bytes.len() / 2]).unwrap();
        let err = SafeZip::open(file.path(), &limits(1 << 20), "DOCX")
            .err()
            .unwrap();
        assert_eq!(err.reason, FailureReason::Truncated, "{err:?}");
        std::fs::write(file.path(), b"PK\x03\x04 this is not a zip at all").unwrap();
        let err = SafeZip::open(file.path(), &limits(1 << 20), "DOCX")
            .err()
            .unwrap();
        assert!(
            matches!(
                err.reason,
                FailureReason::Truncated | FailureReason::Corrupt
            ),
            "{err:?}"
        );
    }
}
