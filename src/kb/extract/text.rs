//! Decoding bytes to text, and plain text to blocks.
//!
//! UTF-8 (with or without a byte-order mark) and UTF-16 with a byte-order mark are decoded
//! directly. Anything else is guessed with chardetng and decoded with encoding_rs, but only when
//! the guess decodes without errors and yields text-like characters: a wrong guess would index
//! mojibake, which is worse than refusing the file.

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};

use super::{BlockKind, Blocks, Document, ExtractError, FailureReason, Limits};

/// Decodes a text file's bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<String, ExtractError> {
    if let Some((encoding, bom_len)) = Encoding::for_bom(bytes) {
        return decode_strict(encoding, &bytes[bom_len..]);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return check_text(text.to_string(), "UTF-8");
    }
    if bytes.contains(&0) {
        // NULs in a non-UTF-16-BOM file: binary, or UTF-16 without a byte-order mark, which we
        // cannot tell apart safely.
        return Err(ExtractError::new(
            FailureReason::Encoding,
            "the file contains NUL bytes: it is binary data or UTF-16 without a byte-order mark; save it as UTF-8",
        ));
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    let guess = detector.guess(None, chardetng::Utf8Detection::Allow);
    decode_strict(guess, bytes)
}

/// Decodes an HTML page's bytes, honouring a byte-order mark, then a `<meta charset>` (or
/// `http-equiv` content type) in the first KiB, as browsers do; then falls back to [`decode`].
pub(crate) fn decode_html(bytes: &[u8]) -> Result<String, ExtractError> {
    if Encoding::for_bom(bytes).is_some() {
        return decode(bytes);
    }
    if let Some(encoding) = meta_charset(&bytes[..bytes.len().min(1024)]) {
        // HTML treats a declared UTF-16 as UTF-8 (the bytes cannot be UTF-16 without a BOM if
        // the ASCII declaration was readable); `output_encoding` does that mapping.
        let encoding = encoding.output_encoding();
        if encoding == UTF_8 {
            // Declared UTF-8 but invalid: tolerate a few bad bytes (common on the web) rather
            // than refuse the page.
            let (text, _) = UTF_8.decode_without_bom_handling(bytes);
            return check_text(text.into_owned(), "UTF-8");
        }
        return decode_strict(encoding, bytes);
    }
    decode(bytes)
}

/// Finds `charset=` inside a `<meta …>` tag, the way the HTML prescan does in spirit (without
/// its full state machine: comments and attributes quoted oddly can fool it, then we guess).
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(at) = find(&lower[from..], b"<meta") {
        let start = from + at;
        let end = lower[start..]
            .iter()
            .position(|&b| b == b'>')
            .map_or(lower.len(), |p| start + p);
        let tag = &lower[start..end];
        if let Some(pos) = find(tag, b"charset") {
            let rest = &tag[pos + 7..];
            let rest = rest
                .iter()
                .position(|&b| b != b' ')
                .map_or(&rest[rest.len()..], |p| &rest[p..]);
            if let Some(value) = rest.strip_prefix(b"=") {
                let value: Vec<u8> = value
                    .iter()
                    .copied()
                    .skip_while(|&b| matches!(b, b' ' | b'"' | b'\''))
                    .take_while(|&b| !matches!(b, b' ' | b'"' | b'\'' | b';' | b'/' | b'>'))
                    .collect();
                if let Some(encoding) = Encoding::for_label(&value) {
                    return Some(encoding);
                }
            }
        }
        from = end;
    }
    None
}

/// Decodes with `encoding`, refusing the text if any byte sequence is invalid for it.
fn decode_strict(encoding: &'static Encoding, bytes: &[u8]) -> Result<String, ExtractError> {
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        let how = if encoding == UTF_16LE || encoding == UTF_16BE {
            format!(
                "is not valid {} despite its byte-order mark",
                encoding.name()
            )
        } else {
            "is in an encoding we could not recognise".to_string()
        };
        return Err(ExtractError::new(
            FailureReason::Encoding,
            format!("the text {how}; save it as UTF-8"),
        ));
    }
    check_text(text.into_owned(), encoding.name())
}

/// Refuses "text" that is mostly control characters: binary data that happened to decode.
fn check_text(text: String, encoding: &str) -> Result<String, ExtractError> {
    let total = text.chars().take(65536).count().max(1);
    let odd = text
        .chars()
        .take(65536)
        .filter(|&c| c.is_control() && !matches!(c, '\n' | '\r' | '\t' | '\u{0C}' | '\u{1B}'))
        .count();
    if odd * 100 > total {
        return Err(ExtractError::new(
            FailureReason::Encoding,
            format!(
                "the file decodes as {encoding} but is full of control characters: it is binary data, not text"
            ),
        ));
    }
    Ok(text)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Plain text: paragraphs are separated by blank lines (or form feeds); lines starting with a
/// bullet or a number followed by `.` or `)` start list items.
pub(crate) fn extract_plain(text: &str, limits: &Limits) -> Result<Document, ExtractError> {
    let mut blocks = Blocks::new(limits);
    let mut current = String::new();
    let mut kind = BlockKind::Paragraph;
    for line in text.split(['\n', '\u{0C}']) {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            blocks.push(kind, &current, None)?;
            current.clear();
            kind = BlockKind::Paragraph;
            continue;
        }
        if is_list_line(line) {
            blocks.push(kind, &current, None)?;
            current.clear();
            kind = BlockKind::ListItem;
        }
        if !current.is_empty() {
            current.push(' ');
        }
        current.push_str(strip_bullet(line));
    }
    blocks.push(kind, &current, None)?;
    Ok(Document {
        title: None,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

/// A line without its bullet character (numbers stay: "step 3" is worth finding).
fn strip_bullet(line: &str) -> &str {
    let t = line.trim_start();
    match t.strip_prefix(['-', '*', '•', '◦', '▪', '‣']) {
        Some(rest) if rest.starts_with(' ') => rest,
        _ => line,
    }
}

/// "- x", "* x", "• x", "1. x", "2) x".
fn is_list_line(line: &str) -> bool {
    let t = line.trim_start();
    if let Some(rest) = t.strip_prefix(['-', '*', '•', '◦', '▪', '‣']) {
        return rest.starts_with(' ');
    }
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    (1..=3).contains(&digits)
        && t[digits..].starts_with(['.', ')'])
        && t[digits + 1..].starts_with(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boms_and_utf8() {
        assert_eq!(decode(b"\xEF\xBB\xBFhi").unwrap(), "hi");
        assert_eq!(decode(b"\xFF\xFEh\x00i\x00").unwrap(), "hi");
        assert_eq!(decode(b"\xFE\xFF\x00h\x00i").unwrap(), "hi");
        assert_eq!(decode("caf\u{e9}".as_bytes()).unwrap(), "café");
    }

    #[test]
    fn legacy_encodings_are_guessed() {
        // "Grüße aus München, schöne Straße" in windows-1252.
        let bytes = b"Gr\xfc\xdfe aus M\xfcnchen, sch\xf6ne Stra\xdfe und sch\xf6ne Gr\xfc\xdfe.";
        assert_eq!(
            decode(bytes).unwrap(),
            "Grüße aus München, schöne Straße und schöne Grüße."
        );
        // KOI8-R / windows-1251 Cyrillic comes out as Cyrillic, not Latin mojibake.
        let cyrillic = "Съешь же ещё этих мягких французских булок, да выпей чаю.";
        let (bytes, _, _) = encoding_rs::WINDOWS_1251.encode(cyrillic);
        assert_eq!(decode(&bytes).unwrap(), cyrillic);
    }

    #[test]
    fn binary_is_refused() {
        let err = decode(b"abc\x00def\xff").unwrap_err();
        assert_eq!(err.reason, FailureReason::Encoding);
        let err = decode(&[1u8, 2, 3, 4, 5, 6, 7, 8, b'a']).unwrap_err();
        assert_eq!(err.reason, FailureReason::Encoding);
        let err = decode(b"\xFF\xFEa").unwrap_err();
        assert_eq!(err.reason, FailureReason::Encoding, "odd-length UTF-16");
    }

    #[test]
    fn html_meta_charset_wins() {
        let page = b"<html><head><meta charset=\"iso-8859-1\"></head><body>caf\xe9</body></html>";
        assert!(decode_html(page).unwrap().contains("café"));
        let page = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1251\">\xc4\xe0";
        assert!(decode_html(page).unwrap().ends_with("Да"));
        // Declared UTF-8 with one stray byte still reads.
        let page = b"<meta charset=utf-8><p>caf\xc3\xa9 \xff</p>";
        assert!(decode_html(page).unwrap().contains("café"));
    }

    #[test]
    fn plain_paragraphs_and_lists() {
        let doc = extract_plain(
            "Title line\r\nsecond line\n\n\n- one\n- two\n  continued\n\n3) three\nafter\n",
            &Limits::default(),
        )
        .unwrap();
        let got: Vec<(BlockKind, &str)> = doc
            .blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Paragraph, "Title line second line"),
                (BlockKind::ListItem, "one"),
                (BlockKind::ListItem, "two continued"),
                (BlockKind::ListItem, "3) three after"),
            ]
        );
    }
}
