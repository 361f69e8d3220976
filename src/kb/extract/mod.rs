//! Document text extraction: turns one uploaded file into a [`Document`] of structured text
//! blocks (headings, paragraphs, list items, code, table rows) for the knowledge base to chunk
//! and index.
//!
//! [`sniff`] decides the [`Format`] from the bytes, [`extract`] reads the file in-process, and
//! [`sandbox::extract_isolated`] runs the same extraction in a child process with time and memory
//! bounds, which is what the daemon uses for uploads: parsers of hostile files can loop, blow up
//! memory or crash, and none of that may take the daemon down.
//!
//! Everything here is pure and synchronous, with no global state, so it can run on any thread.

mod epub;
mod html;
mod markdown;
mod office;
mod pdf;
pub mod sandbox;
mod sniff;
mod text;
mod xml;
mod zipsafe;

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use sniff::{SniffError, sniff};

/// A document format the knowledge base can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Portable Document Format.
    Pdf,
    /// Office Open XML word-processing document (Word 2007 and later).
    Docx,
    /// OpenDocument text (LibreOffice Writer).
    Odt,
    /// EPUB 2 or 3 e-book.
    Epub,
    /// HTML or XHTML page.
    Html,
    /// CommonMark / GitHub-flavoured Markdown.
    Markdown,
    /// Plain text in any encoding we can decode.
    Text,
}

impl Format {
    /// Every format, in the order messages list them.
    pub const ALL: [Format; 7] = [
        Format::Pdf,
        Format::Docx,
        Format::Odt,
        Format::Epub,
        Format::Html,
        Format::Markdown,
        Format::Text,
    ];

    /// The lowercase name used in JSON, on the command line and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Pdf => "pdf",
            Format::Docx => "docx",
            Format::Odt => "odt",
            Format::Epub => "epub",
            Format::Html => "html",
            Format::Markdown => "markdown",
            Format::Text => "text",
        }
    }

    /// The IANA media type of the format.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Pdf => "application/pdf",
            Format::Docx => {
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            }
            Format::Odt => "application/vnd.oasis.opendocument.text",
            Format::Epub => "application/epub+zip",
            Format::Html => "text/html",
            Format::Markdown => "text/markdown",
            Format::Text => "text/plain",
        }
    }

    /// Parses [`Format::as_str`] back (used by the `__extract` child's command line).
    pub fn parse(name: &str) -> Option<Format> {
        Format::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Bounds applied to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Most bytes read from the file or, for ZIP-based formats, decompressed from it in total.
    pub max_decompressed_bytes: u64,
    /// Most bytes of extracted text (sum over all blocks).
    pub max_text_bytes: u64,
    /// Most pages a PDF may have.
    pub max_pages: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_decompressed_bytes: 512 * MIB,
            max_text_bytes: 64 * MIB,
            max_pages: 5000,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Formats a byte count for messages: whole MiB when it is one, bytes otherwise.
pub(crate) fn human_bytes(n: u64) -> String {
    if n >= MIB && n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else if n >= MIB {
        format!("{:.1} MiB", n as f64 / MIB as f64)
    } else {
        format!("{n} bytes")
    }
}

/// The structured text of one document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    /// The title from the document's metadata, or its first top-level heading.
    pub title: Option<String>,
    /// Number of pages, for paginated formats (PDF) only.
    pub pages: Option<u32>,
    /// The text, in reading order.
    pub blocks: Vec<Block>,
}

impl Document {
    /// All block texts joined by blank lines: what tests and benchmarks compare.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for block in &self.blocks {
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(&block.text);
        }
        out
    }
}

/// One unit of text: a heading, a paragraph, a list item, a code block or a table row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Block {
    /// What the text is.
    pub kind: BlockKind,
    /// The text; whitespace is collapsed to single spaces except in [`BlockKind::Code`].
    pub text: String,
    /// The 1-based page it starts on, for PDFs only.
    pub page: Option<u32>,
}

/// What a [`Block`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockKind {
    /// A heading of the given level, 1 being the top.
    Heading(u8),
    /// Running text.
    Paragraph,
    /// One item of a bulleted or numbered list (nested items are items too).
    ListItem,
    /// Preformatted text: line breaks and indentation are kept.
    Code,
    /// One table row, its cells joined by `" | "`.
    Table,
}

/// Why a file could not be extracted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ExtractError {
    /// The class of failure, for the UI and metrics.
    pub reason: FailureReason,
    /// What happened, phrased for the person who uploaded the file.
    pub message: String,
}

impl ExtractError {
    /// An error of the given class.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        ExtractError {
            reason,
            message: message.into(),
        }
    }
}

/// The class of an [`ExtractError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// The file is password-protected.
    Encrypted,
    /// The file is damaged or not what its format says.
    Corrupt,
    /// The file ends early (an incomplete upload or copy).
    Truncated,
    /// The file exceeds a [`Limits`] bound or the memory bound of the sandbox.
    TooLarge,
    /// Extraction took longer than the sandbox allows.
    Timeout,
    /// The text is in an encoding we cannot decode, or is binary data.
    Encoding,
    /// The file holds no extractable text (e.g. a scanned PDF without a text layer).
    NoText,
    /// The extractor itself could not run (not the file's fault); retrying may help.
    Internal,
}

impl FailureReason {
    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Encrypted => "encrypted",
            FailureReason::Corrupt => "corrupt",
            FailureReason::Truncated => "truncated",
            FailureReason::TooLarge => "too_large",
            FailureReason::Timeout => "timeout",
            FailureReason::Encoding => "encoding",
            FailureReason::NoText => "no_text",
            FailureReason::Internal => "internal",
        }
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Extracts structured text.  Pure, synchronous, no global state.
///
/// `format` should come from [`sniff`]; a file whose bytes do not match it fails as
/// [`FailureReason::Corrupt`]. Hostile input cannot make this panic, but it can take long or use
/// much memory inside a PDF's compressed streams: the daemon runs it through
/// [`sandbox::extract_isolated`].
pub fn extract(path: &Path, format: Format, limits: &Limits) -> Result<Document, ExtractError> {
    let doc = match format {
        Format::Pdf => pdf::extract(path, limits)?,
        Format::Docx => office::extract_docx(path, limits)?,
        Format::Odt => office::extract_odt(path, limits)?,
        Format::Epub => epub::extract(path, limits)?,
        Format::Html => {
            let bytes = read_file(path, limits)?;
            let text = text::decode_html(&bytes)?;
            html::extract(&text, limits)?
        }
        Format::Markdown => {
            let bytes = read_file(path, limits)?;
            markdown::extract(&text::decode(&bytes)?, limits)?
        }
        Format::Text => {
            let bytes = read_file(path, limits)?;
            text::extract_plain(&text::decode(&bytes)?, limits)?
        }
    };
    if doc.blocks.is_empty() {
        let hint = if format == Format::Pdf {
            " (a scanned PDF has only images of text, and OCR is not supported)"
        } else {
            ""
        };
        return Err(ExtractError::new(
            FailureReason::NoText,
            format!("the {} file contains no text{hint}", format_label(format)),
        ));
    }
    Ok(doc)
}

/// The name of a format in messages ("PDF", "DOCX", …).
pub(crate) fn format_label(format: Format) -> &'static str {
    match format {
        Format::Pdf => "PDF",
        Format::Docx => "DOCX",
        Format::Odt => "ODT",
        Format::Epub => "EPUB",
        Format::Html => "HTML",
        Format::Markdown => "Markdown",
        Format::Text => "text",
    }
}

/// Reads a whole file, refusing it up front when it is larger than the decompression budget
/// (text formats are read as-is, so the file size is what they "decompress" to).
pub(crate) fn read_file(path: &Path, limits: &Limits) -> Result<Vec<u8>, ExtractError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| io_error(path, &e))?;
    let mut bytes = Vec::new();
    // `take` rather than trusting the metadata: the file may grow while we read it.
    file.take(limits.max_decompressed_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, &e))?;
    if bytes.len() as u64 > limits.max_decompressed_bytes {
        return Err(ExtractError::new(
            FailureReason::TooLarge,
            format!(
                "the file is larger than {}",
                human_bytes(limits.max_decompressed_bytes)
            ),
        ));
    }
    Ok(bytes)
}

/// A file that cannot be opened or read: the extractor's problem, not the document's.
pub(crate) fn io_error(path: &Path, err: &std::io::Error) -> ExtractError {
    ExtractError::new(
        FailureReason::Internal,
        format!("could not read {}: {err}", path.display()),
    )
}

/// Collects blocks, normalising their text and enforcing [`Limits::max_text_bytes`] as they come,
/// so a document that expands to too much text stops early instead of filling memory.
pub(crate) struct Blocks {
    blocks: Vec<Block>,
    bytes: u64,
    max_bytes: u64,
}

impl Blocks {
    /// An empty collection bounded by `limits`.
    pub(crate) fn new(limits: &Limits) -> Self {
        Blocks {
            blocks: Vec::new(),
            bytes: 0,
            max_bytes: limits.max_text_bytes,
        }
    }

    /// Adds a block unless its text is blank. Non-code text has its whitespace collapsed.
    pub(crate) fn push(
        &mut self,
        kind: BlockKind,
        text: &str,
        page: Option<u32>,
    ) -> Result<(), ExtractError> {
        let text = if kind == BlockKind::Code {
            clean_code(text)
        } else {
            collapse_whitespace(text)
        };
        if text.is_empty() {
            return Ok(());
        }
        self.add_bytes(text.len())?;
        self.blocks.push(Block { kind, text, page });
        Ok(())
    }

    /// Counts bytes against the text limit; parsers call it for text they buffer before pushing.
    pub(crate) fn add_bytes(&mut self, n: usize) -> Result<(), ExtractError> {
        self.bytes = self.bytes.saturating_add(n as u64);
        if self.bytes > self.max_bytes {
            return Err(too_much_text(self.max_bytes));
        }
        Ok(())
    }

    /// Fails when `pending` more bytes (text buffered but not yet pushed) would exceed the limit.
    pub(crate) fn check_pending(&self, pending: usize) -> Result<(), ExtractError> {
        if self.bytes.saturating_add(pending as u64) > self.max_bytes {
            return Err(too_much_text(self.max_bytes));
        }
        Ok(())
    }

    /// The first heading of level 1 (or, failing that, of any level): the fallback title.
    pub(crate) fn first_heading(&self) -> Option<String> {
        let heading = |want: Option<u8>| {
            self.blocks.iter().find_map(|b| match b.kind {
                BlockKind::Heading(level) if want.is_none_or(|w| w == level) => {
                    Some(b.text.clone())
                }
                _ => None,
            })
        };
        heading(Some(1)).or_else(|| heading(None))
    }

    /// The blocks collected so far.
    pub(crate) fn into_vec(self) -> Vec<Block> {
        self.blocks
    }
}

/// The error for a document whose text exceeds [`Limits::max_text_bytes`].
pub(crate) fn too_much_text(max: u64) -> ExtractError {
    ExtractError::new(
        FailureReason::TooLarge,
        format!("the document holds more than {} of text", human_bytes(max)),
    )
}

/// Characters that carry no text: soft hyphens, zero-width spaces and joiners, byte-order marks.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// Collapses every run of whitespace to one space, trims, and drops control and invisible
/// characters (which only confuse tokenisers downstream).
pub(crate) fn collapse_whitespace(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
        } else if c.is_control() || is_invisible(c) {
            continue;
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.push(c);
        }
    }
    out
}

/// Code keeps its lines and indentation; only trailing spaces, control characters and leading or
/// trailing blank lines go.
fn clean_code(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .map(|line| {
            line.chars()
                .filter(|&c| c == '\t' || !(c.is_control() || is_invisible(c)))
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let first = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    lines[first..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_collapses_and_invisibles_go() {
        assert_eq!(collapse_whitespace("  a\u{00AD}b \n\t c\u{0007}  "), "ab c");
        assert_eq!(collapse_whitespace(" \n "), "");
    }

    #[test]
    fn code_keeps_indentation() {
        assert_eq!(
            clean_code("\n\n  fn x() {\n    y  \n  }\n\n"),
            "  fn x() {\n    y\n  }"
        );
    }

    #[test]
    fn blocks_enforce_the_text_limit() {
        let limits = Limits {
            max_text_bytes: 10,
            ..Limits::default()
        };
        let mut blocks = Blocks::new(&limits);
        blocks.push(BlockKind::Paragraph, "hello", None).unwrap();
        blocks.push(BlockKind::Paragraph, "   ", None).unwrap();
        let err = blocks
            .push(BlockKind::Paragraph, "world!", None)
            .unwrap_err();
        assert_eq!(err.reason, FailureReason::TooLarge);
        assert_eq!(blocks.into_vec().len(), 1);
    }

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.as_str()), Some(f));
            assert_eq!(
                serde_json::to_string(&f).unwrap(),
                format!("\"{}\"", f.as_str())
            );
        }
        assert_eq!(FailureReason::TooLarge.as_str(), "too_large");
        assert_eq!(
            serde_json::to_string(&FailureReason::NoText).unwrap(),
            "\"no_text\""
        );
    }

    #[test]
    fn document_round_trips_through_json() {
        let doc = Document {
            title: Some("T".into()),
            pages: Some(2),
            blocks: vec![
                Block {
                    kind: BlockKind::Heading(2),
                    text: "H".into(),
                    page: Some(1),
                },
                Block {
                    kind: BlockKind::Table,
                    text: "a | b".into(),
                    page: Some(2),
                },
            ],
        };
        let json = serde_json::to_string(&doc).unwrap();
        assert_eq!(serde_json::from_str::<Document>(&json).unwrap(), doc);
    }

    #[test]
    fn byte_counts_read_well() {
        assert_eq!(human_bytes(512 * MIB), "512 MiB");
        assert_eq!(human_bytes(1000), "1000 bytes");
    }
}
