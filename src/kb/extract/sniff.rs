//! Deciding a file's format from its first bytes.
//!
//! The bytes decide; the file name and the declared content type are only hints. They choose
//! between Markdown, HTML and plain text (which the bytes cannot tell apart reliably), and they
//! make us refuse a file whose bytes contradict them: a `.pdf` that is really a ZIP archive is
//! more likely a mistake (or an attempt to slip something past a filter) than a document the
//! person meant to upload.

use std::fmt;

use super::{Format, format_label};

/// Why a file was refused before extraction; the message says what the file is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SniffError(pub String);

impl fmt::Display for SniffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SniffError {}

/// The list every refusal ends with.
const SUPPORTED: &str = "supported: PDF, DOCX, ODT, EPUB, HTML, Markdown and plain text";

/// Decides the format from the content (sniff the bytes; never trust the extension alone).
/// `head` = the first up-to-8 KiB of the file; `filename` and `declared` (multipart content-type)
/// are hints only used to tell Markdown from plain text, and to REFUSE a mislabelled file (e.g. a
/// .pdf name whose bytes are a zip, or declared application/pdf but bytes are text) with a clear
/// message.
pub fn sniff(
    head: &[u8],
    filename: Option<&str>,
    declared: Option<&str>,
) -> Result<Format, SniffError> {
    let subject = match filename {
        Some(name) if !name.is_empty() => format!("“{name}”"),
        _ => "the file".to_string(),
    };
    let by_name = filename.and_then(format_from_name);
    let by_type = declared.and_then(format_from_media_type);

    let content = match content_kind(head) {
        Content::Format(f) => f,
        Content::Refuse(what) => {
            return Err(SniffError(format!("{subject} is {what}; {SUPPORTED}")));
        }
        Content::Text => {
            // Text formats: the hints choose, a binary hint is a contradiction.
            for (hint, how) in [(by_name, "named like"), (by_type, "declared as")] {
                if let Some(h) = hint
                    && is_binary_format(h)
                {
                    return Err(SniffError(format!(
                        "{subject} is {how} {} {}, but its bytes are text; upload the original {} file",
                        article(h),
                        format_label(h),
                        format_label(h),
                    )));
                }
            }
            let hinted = by_name.or(by_type);
            match hinted {
                Some(f @ (Format::Markdown | Format::Html | Format::Text)) => f,
                _ if looks_like_html(head) => Format::Html,
                _ => Format::Text,
            }
        }
    };

    if is_binary_format(content) {
        for (hint, how) in [(by_name, "named like"), (by_type, "declared as")] {
            if let Some(h) = hint
                && h != content
            {
                return Err(SniffError(format!(
                    "{subject} is {how} {} {}, but its bytes are {} {} document; rename it or upload the intended file",
                    article(h),
                    format_label(h),
                    article(content),
                    format_label(content),
                )));
            }
        }
    }
    Ok(content)
}

/// "a" or "an" before a format's name.
fn article(format: Format) -> &'static str {
    match format {
        Format::Odt | Format::Epub | Format::Html => "an",
        _ => "a",
    }
}

fn is_binary_format(format: Format) -> bool {
    matches!(
        format,
        Format::Pdf | Format::Docx | Format::Odt | Format::Epub
    )
}

/// What the bytes say.
enum Content {
    /// A format we read.
    Format(Format),
    /// Text of some kind (which one is up to the hints and [`looks_like_html`]).
    Text,
    /// Something we do not read, described for the refusal ("an RTF document").
    Refuse(String),
}

fn content_kind(head: &[u8]) -> Content {
    // PDF readers accept the header anywhere in the first KiB (some files carry junk before it).
    if find(&head[..head.len().min(1024)], b"%PDF-").is_some() {
        return Content::Format(Format::Pdf);
    }
    if head.starts_with(b"PK\x03\x04") {
        return zip_kind(head);
    }
    if head.starts_with(b"PK\x05\x06") {
        return Content::Refuse("an empty ZIP archive".into());
    }
    // Byte-order marks settle it before anything that looks at raw bytes.
    if head.starts_with(b"\xEF\xBB\xBF")
        || head.starts_with(b"\xFF\xFE")
        || head.starts_with(b"\xFE\xFF")
    {
        return Content::Text;
    }
    if let Some(what) = known_binary(head) {
        return Content::Refuse(what.into());
    }
    if head.is_empty() {
        return Content::Refuse("empty".into());
    }
    if head.contains(&0) || control_share(head) > 0.05 {
        return Content::Refuse("binary data in a format we do not recognise".into());
    }
    Content::Text
}

/// Share of bytes that are control characters text never has (NUL..BS, SO..US except ESC, DEL).
fn control_share(head: &[u8]) -> f64 {
    let odd = head
        .iter()
        .filter(|&&b| matches!(b, 0..=8 | 0x0E..=0x1A | 0x1C..=0x1F | 0x7F))
        .count();
    odd as f64 / head.len().max(1) as f64
}

/// Magic numbers of files people upload by mistake, described for the refusal.
fn known_binary(head: &[u8]) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (
            b"{\\rtf",
            "an RTF document (RTF is not supported; save it as DOCX, ODT or PDF)",
        ),
        (
            b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1",
            "a legacy Microsoft Office file (.doc/.xls/.ppt) or a password-protected Office document (save it unprotected as DOCX or PDF)",
        ),
        (b"\x89PNG", "a PNG image"),
        (b"\xFF\xD8\xFF", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"II*\x00", "a TIFF image"),
        (b"MM\x00*", "a TIFF image"),
        (b"\x1F\x8B", "a gzip archive"),
        (b"BZh", "a bzip2 archive"),
        (b"\xFD7zXZ\x00", "an xz archive"),
        (b"\x28\xB5\x2F\xFD", "a zstd archive"),
        (b"7z\xBC\xAF\x27\x1C", "a 7-Zip archive"),
        (b"Rar!\x1A\x07", "a RAR archive"),
        (b"\x7FELF", "an executable program"),
        (b"SQLite format 3\x00", "an SQLite database"),
        (b"%!PS", "a PostScript file"),
        (b"ID3", "an MP3 audio file"),
        (b"OggS", "an Ogg media file"),
        (b"fLaC", "a FLAC audio file"),
    ];
    if let Some((_, what)) = MAGIC.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(what);
    }
    if head.starts_with(b"RIFF") && head.len() >= 12 {
        return Some("a RIFF media file (WAV, AVI or WebP)");
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some("an MP4/QuickTime media file");
    }
    None
}

/// Tells DOCX, ODT and EPUB apart by the entries the head of the archive names.
///
/// ODF and EPUB put a stored `mimetype` entry first whose content names the type; DOCX, and
/// EPUBs that skip the `mimetype` convention, are recognised by their well-known entry names. We
/// scan for every local-file-header signature in the head rather than walking the headers,
/// because entries written with data descriptors do not say how long their data is.
fn zip_kind(head: &[u8]) -> Content {
    let names = local_names(head);
    if let Some(pos) = names.iter().position(|(n, _)| n == "mimetype") {
        let data = names[pos].1;
        let mime = String::from_utf8_lossy(&data[..data.len().min(80)]).to_string();
        if mime.starts_with("application/epub+zip") {
            return Content::Format(Format::Epub);
        }
        if mime.starts_with("application/vnd.oasis.opendocument.text") {
            return Content::Format(Format::Odt);
        }
        if let Some(kind) = mime.strip_prefix("application/vnd.oasis.opendocument.") {
            let kind: String = kind
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            return Content::Refuse(format!(
                "an OpenDocument {kind} file, not a text document (ODT)"
            ));
        }
    }
    let has = |prefix: &str| names.iter().any(|(n, _)| n.starts_with(prefix));
    if has("word/") {
        return Content::Format(Format::Docx);
    }
    if has("xl/") {
        return Content::Refuse("an Excel spreadsheet (XLSX), not a Word document".into());
    }
    if has("ppt/") {
        return Content::Refuse("a PowerPoint presentation (PPTX), not a Word document".into());
    }
    if has("META-INF/container.xml") || has("OEBPS/") {
        return Content::Format(Format::Epub);
    }
    if has("content.xml") && (has("META-INF/manifest.xml") || has("meta.xml")) {
        return Content::Format(Format::Odt);
    }
    if has("[Content_Types].xml") {
        // An Office Open XML package whose parts lie beyond the head: DOCX is by far the
        // likeliest; extraction reports a clear error if the Word part is missing.
        return Content::Format(Format::Docx);
    }
    Content::Refuse("a ZIP archive that is neither DOCX, ODT nor EPUB".into())
}

/// The entry names (and the start of their data) of every local file header found in `head`.
fn local_names(head: &[u8]) -> Vec<(String, &[u8])> {
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = find(&head[from..], b"PK\x03\x04") {
        let start = from + at;
        from = start + 4;
        let Some(fixed) = head.get(start..start + 30) else {
            break;
        };
        let name_len = u16::from_le_bytes([fixed[26], fixed[27]]) as usize;
        let extra_len = u16::from_le_bytes([fixed[28], fixed[29]]) as usize;
        let name_end = start + 30 + name_len;
        let Some(name) = head.get(start + 30..name_end) else {
            break;
        };
        let data = head.get(name_end + extra_len..).unwrap_or(&[]);
        names.push((String::from_utf8_lossy(name).into_owned(), data));
    }
    names
}

/// The WHATWG MIME-sniffing rule for HTML: after leading whitespace, one of a few tags that only
/// HTML starts with.
fn looks_like_html(head: &[u8]) -> bool {
    let head = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = head
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(head.len());
    let rest = &head[start..];
    const TAGS: &[&[u8]] = &[
        b"<!doctype html",
        b"<html",
        b"<head",
        b"<script",
        b"<iframe",
        b"<h1",
        b"<div",
        b"<font",
        b"<table",
        b"<a",
        b"<style",
        b"<title",
        b"<b",
        b"<body",
        b"<br",
        b"<p",
        b"<!--",
    ];
    let starts_with_tag = TAGS.iter().any(|tag| {
        rest.len() > tag.len()
            && rest[..tag.len()].eq_ignore_ascii_case(tag)
            && (tag == b"<!--" || matches!(rest[tag.len()], b' ' | b'>' | b'\t' | b'\n' | b'\r'))
    });
    if starts_with_tag {
        return true;
    }
    // XHTML: an XML declaration followed by an html root element.
    rest.starts_with(b"<?xml") && find(&head.to_ascii_lowercase(), b"<html").is_some()
}

/// The format a file name's extension suggests.
fn format_from_name(name: &str) -> Option<Format> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => Format::Pdf,
        "docx" | "docm" | "dotx" | "dotm" => Format::Docx,
        "odt" | "ott" => Format::Odt,
        "epub" => Format::Epub,
        "html" | "htm" | "xhtml" | "xht" => Format::Html,
        "md" | "markdown" | "mdown" | "mkd" | "mkdn" => Format::Markdown,
        "txt" | "text" => Format::Text,
        _ => return None,
    })
}

/// The format a declared media type names; generic types (octet-stream, zip) say nothing.
fn format_from_media_type(declared: &str) -> Option<Format> {
    let essence = declared
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    Some(match essence.as_str() {
        "application/pdf" | "application/x-pdf" => Format::Pdf,
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document" => Format::Docx,
        "application/vnd.oasis.opendocument.text" => Format::Odt,
        "application/epub+zip" => Format::Epub,
        "text/html" | "application/xhtml+xml" => Format::Html,
        "text/markdown" | "text/x-markdown" => Format::Markdown,
        "text/plain" => Format::Text,
        _ => return None,
    })
}

/// Position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn zip_with(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        let mut zip = zip::ZipWriter::new(&mut out);
        for (name, data) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored);
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.finish().unwrap();
        out.into_inner()
    }

    #[test]
    fn pdf_by_magic() {
        assert_eq!(sniff(b"%PDF-1.7\n...", None, None), Ok(Format::Pdf));
        assert_eq!(
            sniff(b"junk\n%PDF-1.4\n", Some("a.pdf"), Some("application/pdf")),
            Ok(Format::Pdf)
        );
    }

    #[test]
    fn zip_flavours() {
        let odt = zip_with(&[
            ("mimetype", b"application/vnd.oasis.opendocument.text"),
            ("content.xml", b"<x/>"),
        ]);
        assert_eq!(sniff(&odt, Some("a.odt"), None), Ok(Format::Odt));
        let epub = zip_with(&[("mimetype", b"application/epub+zip")]);
        assert_eq!(sniff(&epub, None, None), Ok(Format::Epub));
        let epub2 = zip_with(&[("META-INF/container.xml", b"<x/>")]);
        assert_eq!(sniff(&epub2, None, None), Ok(Format::Epub));
        let docx = zip_with(&[
            ("[Content_Types].xml", b"<x/>"),
            ("word/document.xml", b"<x/>"),
        ]);
        assert_eq!(sniff(&docx, Some("a.docx"), None), Ok(Format::Docx));
        let ods = zip_with(&[(
            "mimetype",
            b"application/vnd.oasis.opendocument.spreadsheet",
        )]);
        let err = sniff(&ods, None, None).unwrap_err().to_string();
        assert!(err.contains("OpenDocument spreadsheet"), "{err}");
        let xlsx = zip_with(&[("xl/workbook.xml", b"<x/>")]);
        assert!(sniff(&xlsx, None, None).unwrap_err().0.contains("Excel"));
    }

    #[test]
    fn plain_zip_is_refused_with_the_supported_list() {
        let zip = zip_with(&[("photo.jpg", b"...")]);
        let err = sniff(&zip, Some("stuff.zip"), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is a ZIP archive that is neither DOCX, ODT nor EPUB; supported:"),
            "{err}"
        );
    }

    #[test]
    fn mislabelled_files_are_refused() {
        let docx = zip_with(&[("word/document.xml", b"<x/>")]);
        let err = sniff(&docx, Some("report.pdf"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("named like a PDF"), "{err}");
        assert!(err.contains("a DOCX document"), "{err}");
        let err = sniff(b"hello there", None, Some("application/pdf"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("declared as a PDF, but its bytes are text"),
            "{err}"
        );
        // Generic types say nothing.
        assert_eq!(
            sniff(b"%PDF-1.4", Some("x"), Some("application/octet-stream")),
            Ok(Format::Pdf)
        );
    }

    #[test]
    fn text_family_follows_the_hints() {
        assert_eq!(
            sniff(b"# Title\n", Some("a.md"), None),
            Ok(Format::Markdown)
        );
        assert_eq!(
            sniff(b"# Title\n", None, Some("text/markdown; charset=utf-8")),
            Ok(Format::Markdown)
        );
        assert_eq!(sniff(b"# Title\n", None, None), Ok(Format::Text));
        assert_eq!(
            sniff(b"  <!DOCTYPE html><html>", None, None),
            Ok(Format::Html)
        );
        assert_eq!(sniff(b"<p>hi</p>", Some("a.htm"), None), Ok(Format::Html));
        assert_eq!(sniff(b"<p>hi</p>", Some("a.txt"), None), Ok(Format::Text));
        assert_eq!(
            sniff(b"<?xml version=\"1.0\"?>\n<html xmlns=\"x\">", None, None),
            Ok(Format::Html)
        );
        assert_eq!(sniff(b"\xFF\xFEh\x00i\x00", None, None), Ok(Format::Text));
    }

    #[test]
    fn binaries_are_named() {
        let err = sniff(b"{\\rtf1\\ansi hello}", Some("a.rtf"), None).unwrap_err();
        assert!(err.0.contains("RTF is not supported"), "{err}");
        assert!(err.0.contains(SUPPORTED));
        assert!(
            sniff(b"\x89PNG\r\n\x1a\n", None, None)
                .unwrap_err()
                .0
                .contains("PNG")
        );
        assert!(
            sniff(b"abc\x00\x01\x02", None, None)
                .unwrap_err()
                .0
                .contains("binary data")
        );
        assert!(sniff(b"", None, None).unwrap_err().0.contains("empty"));
    }
}
