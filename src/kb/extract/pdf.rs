//! PDF: lopdf parses, pdf-extract interprets the content streams and reports every glyph with
//! its position and size to our [`OutputDev`]; we rebuild lines, paragraphs, list items and
//! headings from that geometry.
//!
//! pdf-extract panics on many malformed inputs (it unwraps liberally), so parsing and each page
//! run inside `catch_unwind`: a bad page costs that page, a bad file becomes `Corrupt`. Work
//! inside compressed streams is not bounded here; the sandbox's memory and time limits are.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use pdf_extract::{MediaBox, Object, OutputDev, OutputError, Transform};

use super::{
    BlockKind, Blocks, Document, ExtractError, FailureReason, Limits, collapse_whitespace,
    read_file, too_much_text,
};

/// Extracts a PDF file.
pub(crate) fn extract(path: &Path, limits: &Limits) -> Result<Document, ExtractError> {
    let bytes = read_file(path, limits)?;
    extract_bytes(&bytes, limits)
}

/// Extracts a PDF held in memory.
pub(crate) fn extract_bytes(bytes: &[u8], limits: &Limits) -> Result<Document, ExtractError> {
    let complete = has_eof_marker(bytes);
    let doc = match catch_unwind(|| pdf_extract::Document::load_mem(bytes)) {
        Ok(Ok(doc)) => doc,
        Ok(Err(err)) => return Err(load_error(&err, bytes, complete)),
        Err(panic) => {
            return Err(damaged(
                complete,
                format!("the PDF parser failed on it ({})", panic_message(&*panic)),
            ));
        }
    };
    if doc.is_encrypted() {
        // lopdf decrypts with the empty user password when it can (files that only restrict
        // printing or copying); still encrypted means a password is needed to open it.
        return Err(encrypted());
    }
    let page_ids = doc.get_pages();
    let page_count = u32::try_from(page_ids.len()).unwrap_or(u32::MAX);
    if page_count > limits.max_pages {
        return Err(ExtractError::new(
            FailureReason::TooLarge,
            format!(
                "the PDF has {page_count} pages; at most {} are accepted",
                limits.max_pages
            ),
        ));
    }
    if page_count == 0 {
        return Err(damaged(complete, "the PDF has no pages".into()));
    }

    let mut collector = Collector::new(limits.max_text_bytes);
    let mut failures = Vec::new();
    for &number in page_ids.keys() {
        let result = catch_unwind(AssertUnwindSafe(|| {
            pdf_extract::output_doc_page(&doc, &mut collector, number)
        }));
        collector.finish_page();
        if collector.over_limit {
            return Err(too_much_text(limits.max_text_bytes));
        }
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => failures.push(format!("page {number}: {err}")),
            Err(panic) => failures.push(format!("page {number}: {}", panic_message(&*panic))),
        }
    }
    if failures.len() == page_ids.len() {
        return Err(damaged(
            complete,
            format!("no page of the PDF could be read ({})", failures[0]),
        ));
    }
    if !failures.is_empty() && !complete {
        return Err(truncated());
    }
    // Pages that failed in an otherwise complete, readable file are skipped: most of the
    // document beats none of it, and the gap shows in the blocks' page numbers.

    let mut pages = collector.pages;
    remove_running_lines(&mut pages);
    let mut blocks = Blocks::new(limits);
    // Without metadata, the largest heading on the first page is likely the title.
    let largest_first = layout(&pages, &mut blocks)?;
    let title = info_title(&doc).or(largest_first);
    let blocks = blocks.into_vec();
    Ok(Document {
        title,
        pages: Some(page_count),
        blocks,
    })
}

fn encrypted() -> ExtractError {
    ExtractError::new(
        FailureReason::Encrypted,
        "the PDF is password-protected; save or print it to a PDF without a password",
    )
}

fn truncated() -> ExtractError {
    ExtractError::new(
        FailureReason::Truncated,
        "the PDF ends early (its %%EOF marker is missing): an incomplete upload or copy; upload it again",
    )
}

/// A damaged file: truncated when the end marker is missing (the likeliest cause), else corrupt.
fn damaged(complete: bool, message: String) -> ExtractError {
    if complete {
        ExtractError::new(
            FailureReason::Corrupt,
            format!("the PDF is damaged: {message}"),
        )
    } else {
        truncated()
    }
}

fn load_error(err: &pdf_extract::Error, bytes: &[u8], complete: bool) -> ExtractError {
    let text = err.to_string();
    let looks_encrypted = matches!(err, pdf_extract::Error::Decryption(_))
        || text.to_ascii_lowercase().contains("password")
        || text.to_ascii_lowercase().contains("decrypt");
    if looks_encrypted && find(bytes, b"/Encrypt").is_some() {
        return encrypted();
    }
    damaged(complete, text)
}

/// Whether `%%EOF` appears near the end (writers may append a few bytes of junk after it).
fn has_eof_marker(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(2048)..];
    find(tail, b"%%EOF").is_some()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "internal error".to_string()
    }
}

/// The Info dictionary's Title, when it is non-empty text.
fn info_title(doc: &pdf_extract::Document) -> Option<String> {
    let deref = |obj: &Object| -> Option<Object> {
        match obj {
            Object::Reference(id) => doc.get_object(*id).ok().cloned(),
            other => Some(other.clone()),
        }
    };
    let info = deref(doc.trailer.get(b"Info").ok()?)?;
    let title = deref(info.as_dict().ok()?.get(b"Title").ok()?)?;
    let Object::String(bytes, _) = title else {
        return None;
    };
    let text = if let Some(utf16) = bytes.strip_prefix(b"\xFE\xFF") {
        encoding_rs::UTF_16BE
            .decode_without_bom_handling(utf16)
            .0
            .into_owned()
    } else if let Some(utf8) = bytes.strip_prefix(b"\xEF\xBB\xBF") {
        String::from_utf8_lossy(utf8).into_owned()
    } else {
        // PDFDocEncoding agrees with Latin-1 on the printable characters titles use.
        bytes.iter().map(|&b| b as char).collect()
    };
    let text = collapse_whitespace(&text);
    Some(text).filter(|t| !t.is_empty())
}

// ---------------------------------------------------------------------------------------------
// Glyphs → lines

/// One line of text as drawn, in a coordinate system along its baseline.
#[derive(Debug, Clone)]
struct Line {
    text: String,
    /// Start and end along the baseline.
    u0: f64,
    u1: f64,
    /// Position across the baseline, growing down the page.
    w: f64,
    /// Font size of most of the line's text (in page units).
    size: f64,
    /// Size of the largest glyph, whose baseline `w` is.
    max_glyph: f64,
    /// Sum of glyph sizes weighted by characters, and the characters, for `size`.
    size_sum: f64,
    chars: f64,
    /// Baseline direction, quantised: lines only merge with lines running the same way.
    dir: (i32, i32),
}

/// The lines of one page.
#[derive(Debug, Default)]
struct PageText {
    number: u32,
    lines: Vec<Line>,
}

/// Receives glyphs from pdf-extract and groups them into lines.
struct Collector {
    pages: Vec<PageText>,
    current: PageText,
    /// A space was seen (or a gap) since the last glyph.
    pending_space: bool,
    bytes: u64,
    max_bytes: u64,
    over_limit: bool,
}

impl Collector {
    fn new(max_bytes: u64) -> Self {
        Collector {
            pages: Vec::new(),
            current: PageText::default(),
            pending_space: false,
            bytes: 0,
            max_bytes,
            over_limit: false,
        }
    }

    /// Files the page being read (also after a failure, keeping what it produced).
    fn finish_page(&mut self) {
        let page = std::mem::take(&mut self.current);
        if !page.lines.is_empty() {
            self.pages.push(page);
        }
        self.pending_space = false;
    }

    fn glyph(&mut self, trm: &Transform, width: f64, font_size: f64, text: &str) {
        let scale = (trm.m11 * trm.m22 - trm.m12 * trm.m21).abs().sqrt();
        let mut size = font_size.abs() * scale;
        if !size.is_finite() || size < 0.1 {
            size = 1.0;
        }
        let len = trm.m11.hypot(trm.m12);
        let (dx, dy) = if len > 1e-9 && len.is_finite() {
            (trm.m11 / len, trm.m12 / len)
        } else {
            (1.0, 0.0)
        };
        let (x, y) = (trm.m31, trm.m32);
        if !x.is_finite() || !y.is_finite() {
            return;
        }
        let u = x * dx + y * dy;
        let w = x * dy - y * dx;
        let dir = ((dx * 8.0).round() as i32, (dy * 8.0).round() as i32);
        let advance = if width.is_finite() { width * size } else { 0.0 };

        let text = normalise_glyph(text);
        if text.trim().is_empty() {
            if !text.is_empty() {
                self.pending_space = true;
            }
            return;
        }
        let same_line = self.current.lines.last().is_some_and(|line| {
            let reference = size.max(line.size);
            // Sub- and superscripts sit off the baseline by up to about half the main size.
            let tolerance = if size < 0.85 * line.max_glyph || line.max_glyph < 0.85 * size {
                0.75
            } else {
                0.5
            };
            line.dir == dir
                && (w - line.w).abs() <= tolerance * reference
                && u >= line.u0 - 0.5 * reference
                && u <= line.u1 + 20.0 * reference
                // Going back more than a few glyphs on the same baseline: another column.
                && u >= line.u1 - 2.0 * reference
        });
        let chars = text.chars().count() as f64;
        if same_line {
            if let Some(line) = self.current.lines.last_mut() {
                let gap = u - line.u1;
                if (self.pending_space || gap > 0.15 * size.min(line.size))
                    && !line.text.ends_with(' ')
                {
                    line.text.push(' ');
                }
                line.text.push_str(&text);
                line.u1 = line.u1.max(u + advance);
                // The baseline is the main text's, not a superscript's that started the line.
                if size > line.max_glyph {
                    line.max_glyph = size;
                    line.w = w;
                }
                line.size_sum += size * chars;
                line.chars += chars;
                line.size = line.size_sum / line.chars;
            }
        } else {
            self.current.lines.push(Line {
                text: text.to_string(),
                u0: u,
                u1: u + advance,
                w,
                size,
                max_glyph: size,
                size_sum: size * chars,
                chars,
                dir,
            });
        }
        self.pending_space = false;
        self.bytes += text.len() as u64;
        if self.bytes > self.max_bytes {
            self.over_limit = true;
        }
    }
}

impl OutputDev for Collector {
    fn begin_page(
        &mut self,
        page_num: u32,
        _media_box: &MediaBox,
        _art_box: Option<(f64, f64, f64, f64)>,
    ) -> Result<(), OutputError> {
        self.current = PageText {
            number: page_num,
            lines: Vec::new(),
        };
        Ok(())
    }

    fn end_page(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn output_character(
        &mut self,
        trm: &Transform,
        width: f64,
        _spacing: f64,
        font_size: f64,
        char: &str,
    ) -> Result<(), OutputError> {
        self.glyph(trm, width, font_size, char);
        if self.over_limit {
            // Any error stops pdf-extract; `over_limit` tells the caller which one it was.
            return Err(OutputError::FormatError(std::fmt::Error));
        }
        Ok(())
    }

    fn begin_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_word(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    fn end_line(&mut self) -> Result<(), OutputError> {
        Ok(())
    }
}

/// Expands typographic ligatures (they break word matching) and drops control characters.
fn normalise_glyph(text: &str) -> std::borrow::Cow<'_, str> {
    let plain = text
        .chars()
        .all(|c| !c.is_control() && !('\u{FB00}'..='\u{FB06}').contains(&c));
    if plain {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

// ---------------------------------------------------------------------------------------------
// Running headers, footers and page numbers

/// Drops the top and bottom lines of pages that repeat on many pages (running heads, footers)
/// in a font no larger than the body's, and lone page numbers there. They would otherwise be cut into the middle of paragraphs and
/// repeated in every search hit.
fn remove_running_lines(pages: &mut [PageText]) {
    let body = body_size(pages);
    let edge_lines = |page: &PageText| -> Vec<usize> {
        let mut idx: Vec<usize> = (0..page.lines.len()).collect();
        idx.sort_by(|&a, &b| page.lines[a].w.total_cmp(&page.lines[b].w));
        let mut edges = Vec::new();
        edges.extend(idx.first().copied());
        if idx.len() > 1 {
            edges.extend(idx.last().copied());
        }
        edges
    };
    let mut counts: HashMap<String, usize> = HashMap::new();
    for page in pages.iter() {
        let mut seen: Vec<String> = edge_lines(page)
            .into_iter()
            .map(|i| running_key(&page.lines[i].text))
            .collect();
        seen.dedup();
        for key in seen {
            *counts.entry(key).or_default() += 1;
        }
    }
    let threshold = 3.max(pages.len().div_ceil(3));
    for page in pages.iter_mut() {
        let mut drop: Vec<usize> = edge_lines(page)
            .into_iter()
            .filter(|&i| {
                let text = &page.lines[i].text;
                // Running lines are set no larger than the body text; a large line at the top
                // of every page ("Section 4") is a heading.
                let small = page.lines[i].size <= body * 1.05;
                is_page_number(text)
                    || (small && counts.get(&running_key(text)).copied().unwrap_or(0) >= threshold)
            })
            .collect();
        drop.sort_unstable();
        drop.dedup();
        for i in drop.into_iter().rev() {
            page.lines.remove(i);
        }
    }
}

/// Lines equal up to their numbers ("Chapter 2 — page 14") count as the same running line.
fn running_key(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| {
            if c.is_ascii_digit() {
                '#'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// "12", "- 12 -", "Page 3", "page 3 of 10", "iv".
fn is_page_number(text: &str) -> bool {
    let t = text.trim().to_ascii_lowercase();
    let t = t.trim_matches(|c: char| c == '-' || c == '–' || c == '—' || c.is_whitespace());
    let t = t.strip_prefix("page").map_or(t, str::trim);
    if !t.is_empty() && t.len() <= 12 {
        let words: Vec<&str> = t.split_whitespace().collect();
        let numeric = |w: &str| w.chars().all(|c| c.is_ascii_digit());
        let roman = |w: &str| w.len() <= 6 && w.chars().all(|c| "ivxlc".contains(c));
        return match words.as_slice() {
            [n] => numeric(n) || roman(n),
            [n, "of", m] | [n, "/", m] => numeric(n) && numeric(m),
            _ => false,
        };
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Lines → blocks

/// Builds blocks from every page's lines: paragraphs split at vertical gaps, size changes and
/// bullets; headings where a short block is set larger than the body text. Returns the largest
/// heading of the first page.
fn layout(pages: &[PageText], blocks: &mut Blocks) -> Result<Option<String>, ExtractError> {
    let body = body_size(pages);
    let mut drafts: Vec<Draft> = Vec::new();
    for page in pages {
        let gap = typical_gap(page, body);
        let mut current: Option<Draft> = None;
        let mut prev: Option<&Line> = None;
        for line in &page.lines {
            let bullet = starts_with_bullet(&line.text);
            let new_block = match (prev, current.as_ref()) {
                (Some(p), Some(draft)) => {
                    let dy = line.w - p.w;
                    let reference = line.size.max(p.size);
                    let aligned = (line.u0 - p.u0).abs() < 1.5 * reference;
                    bullet
                        || line.dir != p.dir
                        || (line.size - draft.size).abs() > 0.12 * reference
                        || dy < -0.3 * reference
                        || dy > gap * 1.35 + 0.1 * reference
                        // A line starting well left of the block is a new column or block.
                        || line.u0 < draft.u0 - 3.0 * reference
                        // Back at (or left of) the bullet: the list item is over.
                        || (draft.list && line.u0 <= draft.u0 + 0.5 * reference)
                        // The previous line stopped short of this one: it ended a paragraph
                        // (or was a heading set in the body font).
                        || (aligned && (p.u1 - p.u0) < 0.7 * (line.u1 - line.u0))
                }
                _ => true,
            };
            if new_block {
                drafts.extend(current.take());
                current = Some(Draft {
                    page: page.number,
                    horizontal: line.dir == (8, 0),
                    size: line.size,
                    u0: line.u0,
                    lines: 0,
                    list: bullet,
                    text: String::new(),
                });
            }
            if let Some(draft) = current.as_mut() {
                let text = if bullet && draft.text.is_empty() {
                    strip_bullet(&line.text)
                } else {
                    line.text.as_str()
                };
                join_line(&mut draft.text, text);
                draft.lines += 1;
                blocks.check_pending(draft.text.len())?;
            }
            prev = Some(line);
        }
        drafts.extend(current);
    }

    // Heading levels: each distinct size clearly above the body size, largest first.
    let mut heading_sizes: Vec<f64> = drafts
        .iter()
        .filter(|d| is_heading(d, body))
        .map(|d| (d.size * 2.0).round() / 2.0)
        .collect();
    heading_sizes.sort_by(|a, b| b.total_cmp(a));
    heading_sizes.dedup();
    for draft in &drafts {
        let kind = if is_heading(draft, body) {
            let size = (draft.size * 2.0).round() / 2.0;
            let rank = heading_sizes.iter().position(|&s| s == size).unwrap_or(0);
            BlockKind::Heading(u8::try_from(rank + 1).unwrap_or(6).min(6))
        } else if let Some(level) = numbered_heading(draft, body) {
            BlockKind::Heading(level)
        } else if draft.list {
            BlockKind::ListItem
        } else {
            BlockKind::Paragraph
        };
        blocks.push(kind, &draft.text, Some(draft.page))?;
    }
    let first_page = pages.first().map(|p| p.number);
    let title = drafts
        .iter()
        .filter(|d| Some(d.page) == first_page && is_heading(d, body))
        .max_by(|a, b| a.size.total_cmp(&b.size))
        .map(|d| collapse_whitespace(&d.text));
    Ok(title)
}

/// A block being assembled.
struct Draft {
    page: u32,
    /// Set left to right (rotated text, like arXiv's margin stamp, is never a heading).
    horizontal: bool,
    size: f64,
    u0: f64,
    lines: usize,
    list: bool,
    text: String,
}

fn is_heading(draft: &Draft, body: f64) -> bool {
    let chars = draft.text.chars().count();
    draft.horizontal
        && draft.size >= body * 1.15
        && draft.lines <= 3
        && (2..=200).contains(&chars)
        && draft.text.chars().any(char::is_alphabetic)
}

/// A one-line block like "5.1 Hyper Parameter Optimization" or "3. Results": a numbered section
/// heading set in the body size (typically bold, which we cannot see). The level is the depth of
/// the numbering.
fn numbered_heading(draft: &Draft, body: f64) -> Option<u8> {
    // Smaller than the body: a footnote or an affiliation ("1 Allen Institute for AI").
    if draft.lines != 1
        || !draft.horizontal
        || draft.list
        || draft.size < body * 0.95
        || draft.text.len() > 120
        || draft.text.contains("..")
    {
        return None;
    }
    let (number, title) = draft.text.split_once(' ')?;
    let parts: Vec<&str> = number.trim_end_matches('.').split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| (1..=3).contains(&p.len()) && p.chars().all(|c| c.is_ascii_digit()));
    if !numeric || parts.len() > 4 {
        return None;
    }
    let words = title.split_whitespace().count();
    let starts_upper = title.chars().find(|c| c.is_alphabetic())?.is_uppercase();
    let ends_open = !title.ends_with(['.', ',', ':', ';']);
    (starts_upper && ends_open && (1..=12).contains(&words))
        .then(|| u8::try_from(parts.len()).unwrap_or(6))
}

/// The font size most text is set in (by character count, to half a point).
fn body_size(pages: &[PageText]) -> f64 {
    let mut weights: HashMap<i64, usize> = HashMap::new();
    for line in pages.iter().flat_map(|p| &p.lines) {
        *weights.entry((line.size * 2.0).round() as i64).or_default() += line.text.len();
    }
    weights
        .into_iter()
        .max_by_key(|&(size, weight)| (weight, -size))
        .map_or(10.0, |(size, _)| size as f64 / 2.0)
}

/// The usual distance between consecutive body lines on a page (their leading).
fn typical_gap(page: &PageText, body: f64) -> f64 {
    let mut gaps: Vec<f64> = page
        .lines
        .windows(2)
        .filter(|pair| (pair[0].size - body).abs() < 0.15 * body && pair[0].dir == pair[1].dir)
        .map(|pair| pair[1].w - pair[0].w)
        .filter(|&g| g > 0.5 * body && g < 3.0 * body)
        .collect();
    if gaps.len() < 3 {
        return 1.25 * body;
    }
    gaps.sort_by(f64::total_cmp);
    gaps[gaps.len() / 2]
}

/// Bullet glyphs, including the private-use ones Word's Symbol and Wingdings bullets map to.
const BULLETS: &[char] = &[
    '•', '◦', '▪', '▫', '‣', '∙', '·', '●', '○', '■', '□', '➢', '►', '–', '\u{F0B7}', '\u{F0A7}',
];

fn starts_with_bullet(text: &str) -> bool {
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix(BULLETS) {
        return rest.starts_with(' ') || rest.is_empty();
    }
    if let Some(rest) = t.strip_prefix(['-', '*']) {
        return rest.starts_with(' ');
    }
    // "1." / "2)" / "(a)" followed by a space.
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    if (1..=2).contains(&digits) && t[digits..].starts_with(['.', ')']) {
        return t[digits + 1..].starts_with(' ');
    }
    false
}

fn strip_bullet(text: &str) -> &str {
    let t = text.trim_start();
    match t
        .strip_prefix(BULLETS)
        .or_else(|| t.strip_prefix(['-', '*']))
    {
        Some(rest) => rest.trim_start(),
        None => t,
    }
}

/// Appends a line to a block, re-joining words hyphenated across the line break ("inter-" +
/// "national"); a hyphen before a capital ("Jean-" + "Paul") is kept, without a space.
fn join_line(block: &mut String, line: &str) {
    let line = line.trim();
    if block.is_empty() {
        block.push_str(line);
        return;
    }
    let mut chars = block.chars().rev();
    let hyphenated = chars.next() == Some('-')
        && chars.next().is_some_and(char::is_lowercase)
        && line.chars().next().is_some_and(char::is_lowercase);
    if hyphenated {
        block.pop();
    } else if !block.ends_with(' ') && !block.ends_with('-') {
        block.push(' ');
    }
    block.push_str(line);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a PDF with Helvetica text: per page, (x, y, size, text) runs.
    pub(crate) fn simple_pdf(pages: &[Vec<(f64, f64, f64, &str)>]) -> Vec<u8> {
        let mut objects: Vec<String> = Vec::new();
        let n = pages.len();
        // 1: catalog, 2: pages, 3: font, then per page: page object, content stream.
        let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
        objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
        objects.push(format!(
            "<< /Type /Pages /Kids [{}] /Count {n} >>",
            kids.join(" ")
        ));
        objects.push(
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
                .into(),
        );
        for (i, runs) in pages.iter().enumerate() {
            let mut content = String::new();
            for (x, y, size, text) in runs {
                // Backslashes pass through so tests can write octal escapes (`\\225` is a bullet).
                let escaped = text.replace('(', "\\(").replace(')', "\\)");
                content.push_str(&format!(
                    "BT /F1 {size} Tf 1 0 0 1 {x} {y} Tm ({escaped}) Tj ET\n"
                ));
            }
            objects.push(format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
                5 + 2 * i
            ));
            objects.push(format!(
                "<< /Length {} >>\nstream\n{content}endstream",
                content.len()
            ));
        }
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, obj) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n{obj}\nendobj\n", i + 1).as_bytes());
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for offset in offsets {
            out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    fn kinds(doc: &Document) -> Vec<(BlockKind, &str, Option<u32>)> {
        doc.blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str(), b.page))
            .collect()
    }

    #[test]
    fn paragraphs_headings_lists_and_pages() {
        let page1 = vec![
            (72.0, 740.0, 10.0, "Running head"),
            (72.0, 700.0, 18.0, "Introduction"),
            (72.0, 670.0, 10.0, "This is the first para-"),
            (72.0, 658.0, 10.0, "graph of the text and it"),
            (72.0, 646.0, 10.0, "goes on."),
            (72.0, 620.0, 10.0, "A second paragraph here."),
            (72.0, 608.0, 10.0, "More of it."),
            (72.0, 596.0, 10.0, "Still more."),
            (72.0, 570.0, 10.0, "\\225 a bullet"),
            (72.0, 40.0, 10.0, "1"),
        ];
        let page2 = vec![
            (72.0, 740.0, 10.0, "Running head"),
            (72.0, 700.0, 10.0, "Page two text."),
            (72.0, 40.0, 10.0, "2"),
        ];
        let page3 = vec![
            (72.0, 740.0, 10.0, "Running head"),
            (72.0, 700.0, 10.0, "Page three text."),
            (72.0, 40.0, 10.0, "3"),
        ];
        let pdf = simple_pdf(&[page1, page2, page3]);
        let doc = extract_bytes(&pdf, &Limits::default()).unwrap();
        assert_eq!(doc.pages, Some(3));
        assert_eq!(doc.title.as_deref(), Some("Introduction"));
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(1), "Introduction", Some(1)),
                (
                    BlockKind::Paragraph,
                    "This is the first paragraph of the text and it goes on.",
                    Some(1)
                ),
                (
                    BlockKind::Paragraph,
                    "A second paragraph here. More of it. Still more.",
                    Some(1)
                ),
                (BlockKind::ListItem, "a bullet", Some(1)),
                (BlockKind::Paragraph, "Page two text.", Some(2)),
                (BlockKind::Paragraph, "Page three text.", Some(3)),
            ]
        );
    }

    #[test]
    fn damaged_files() {
        let pdf = simple_pdf(&[vec![(72.0, 700.0, 10.0, "Hello")]]);
        let err = extract_bytes(&pdf[..pdf.len() / 2], &Limits::default()).unwrap_err();
        assert_eq!(err.reason, FailureReason::Truncated, "{err:?}");
        let mut garbage = b"%PDF-1.4\n".to_vec();
        garbage.extend_from_slice(&[0x42; 300]);
        garbage.extend_from_slice(b"\n%%EOF\n");
        let err = extract_bytes(&garbage, &Limits::default()).unwrap_err();
        assert_eq!(err.reason, FailureReason::Corrupt, "{err:?}");
    }

    #[test]
    fn limits_apply() {
        let pages: Vec<Vec<(f64, f64, f64, &str)>> = (0..3)
            .map(|_| vec![(72.0, 700.0, 10.0, "Some words on a page")])
            .collect();
        let pdf = simple_pdf(&pages);
        let few_pages = Limits {
            max_pages: 2,
            ..Limits::default()
        };
        let err = extract_bytes(&pdf, &few_pages).unwrap_err();
        assert_eq!(err.reason, FailureReason::TooLarge);
        assert!(err.message.contains("3 pages"), "{err}");
        let little_text = Limits {
            max_text_bytes: 30,
            ..Limits::default()
        };
        let err = extract_bytes(&pdf, &little_text).unwrap_err();
        assert_eq!(err.reason, FailureReason::TooLarge);
    }

    #[test]
    fn page_numbers_and_bullets() {
        assert!(is_page_number("12"));
        assert!(is_page_number("- 12 -"));
        assert!(is_page_number("Page 3 of 10"));
        assert!(is_page_number("xiv"));
        assert!(!is_page_number("1984 was a year"));
        assert!(starts_with_bullet("• item"));
        assert!(starts_with_bullet("2. item"));
        assert!(!starts_with_bullet("2.5 million"));
        let draft = |text: &str| Draft {
            page: 1,
            horizontal: true,
            size: 10.0,
            u0: 0.0,
            lines: 1,
            list: false,
            text: text.to_string(),
        };
        assert_eq!(
            numbered_heading(&draft("5.1 Hyper Parameter Optimization"), 10.0),
            Some(2)
        );
        assert_eq!(numbered_heading(&draft("3. Results"), 10.0), Some(1));
        assert_eq!(
            numbered_heading(&draft("7.6. Contributors ........ 43"), 10.0),
            None
        );
        assert_eq!(numbered_heading(&draft("6 6"), 10.0), None);
        assert_eq!(numbered_heading(&draft("2 apples were eaten."), 10.0), None);
        let mut s = "inter-".to_string();
        join_line(&mut s, "national");
        assert_eq!(s, "international");
        let mut s = "Jean-".to_string();
        join_line(&mut s, "Paul");
        assert_eq!(s, "Jean-Paul");
    }
}
