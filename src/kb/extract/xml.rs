//! A thin layer over quick-xml for the office and EPUB readers: namespace-blind names,
//! attributes by local name, entity references resolved, nesting depth bounded.
//!
//! quick-xml never expands entities declared in a DTD, so "billion laughs" documents cannot
//! inflate; the input itself is bounded by the ZIP budget, and the depth bound keeps our own
//! stacks small.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

use super::{ExtractError, FailureReason};

/// Deeper than any real document nests; deeper input is hostile or broken.
const MAX_DEPTH: usize = 512;

/// What the readers react to.
pub(crate) enum Xml<'a> {
    /// An opening tag (also sent, followed by [`Xml::End`], for an empty element `<x/>`).
    Start(BytesStart<'a>),
    /// A closing tag, by local name.
    End(String),
    /// Character data, with entity and character references already resolved.
    Text(Cow<'a, str>),
}

/// A pull reader over one XML part.
pub(crate) struct XmlReader<'a> {
    reader: Reader<&'a [u8]>,
    depth: usize,
    /// The end event owed for an empty element.
    pending_end: Option<String>,
    /// Part name, for messages.
    part: &'a str,
}

impl<'a> XmlReader<'a> {
    /// Reads `text`, naming `part` in errors.
    pub(crate) fn new(text: &'a str, part: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        // Lenient about mismatched end tags: a slightly broken part still yields its text.
        config.check_end_names = false;
        config.allow_unmatched_ends = true;
        XmlReader {
            reader,
            depth: 0,
            pending_end: None,
            part,
        }
    }

    /// The next event, or `None` at the end of the part.
    pub(crate) fn next(&mut self) -> Result<Option<Xml<'a>>, ExtractError> {
        if let Some(name) = self.pending_end.take() {
            return Ok(Some(Xml::End(name)));
        }
        loop {
            let event = self.reader.read_event().map_err(|e| {
                ExtractError::new(
                    FailureReason::Corrupt,
                    format!("{} is not well-formed XML: {e}", self.part),
                )
            })?;
            match event {
                Event::Start(start) => {
                    self.depth += 1;
                    if self.depth > MAX_DEPTH {
                        return Err(ExtractError::new(
                            FailureReason::Corrupt,
                            format!("{} nests elements more than {MAX_DEPTH} deep", self.part),
                        ));
                    }
                    return Ok(Some(Xml::Start(start)));
                }
                Event::Empty(start) => {
                    self.pending_end = Some(local_name(&start).to_string());
                    return Ok(Some(Xml::Start(start)));
                }
                Event::End(end) => {
                    self.depth = self.depth.saturating_sub(1);
                    let name = end.local_name();
                    let name: &str = name.as_ref();
                    return Ok(Some(Xml::End(name.to_string())));
                }
                Event::Text(text) => return Ok(Some(Xml::Text(text.xml10_content()))),
                Event::CData(data) => return Ok(Some(Xml::Text(data.into_inner()))),
                Event::GeneralRef(reference) => {
                    if let Some(text) = resolve_reference(&reference) {
                        return Ok(Some(Xml::Text(Cow::Owned(text))));
                    }
                }
                Event::Eof => return Ok(None),
                _ => {}
            }
        }
    }

    /// Skips the rest of the element whose start was just returned (its end included).
    pub(crate) fn skip_element(&mut self) -> Result<(), ExtractError> {
        if self.pending_end.take().is_some() {
            return Ok(());
        }
        let mut level = 1usize;
        while let Some(event) = self.next()? {
            match event {
                Xml::Start(_) => level += 1,
                Xml::End(_) => {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                }
                Xml::Text(_) => {}
            }
        }
        Ok(())
    }

    /// The text content of the element whose start was just returned, consuming it.
    pub(crate) fn element_text(&mut self) -> Result<String, ExtractError> {
        let mut out = String::new();
        if self.pending_end.take().is_some() {
            return Ok(out);
        }
        let mut level = 1usize;
        while let Some(event) = self.next()? {
            match event {
                Xml::Start(_) => level += 1,
                Xml::End(_) => {
                    level -= 1;
                    if level == 0 {
                        break;
                    }
                }
                Xml::Text(text) => out.push_str(&text),
            }
        }
        Ok(out)
    }
}

/// `&amp;`-style and `&#123;`-style references; unknown named entities are dropped.
fn resolve_reference(reference: &BytesRef<'_>) -> Option<String> {
    if let Ok(Some(c)) = reference.resolve_char_ref() {
        return Some(c.to_string());
    }
    let name: &str = reference;
    let c = match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        _ => return None,
    };
    Some(c.to_string())
}

/// An element's name without its namespace prefix.
pub(crate) fn local_name<'b>(start: &'b BytesStart<'_>) -> &'b str {
    let name = start.name();
    let full: &'b str = name.0;
    full.rsplit_once(':').map_or(full, |(_, local)| local)
}

/// An attribute's value by local name (prefixes differ between producers).
pub(crate) fn attr(start: &BytesStart<'_>, local: &str) -> Option<String> {
    start
        .attributes()
        .with_checks(false)
        .flatten()
        .find(|a| {
            let key: &str = a.key.0;
            key.rsplit_once(':').map_or(key, |(_, l)| l) == local
        })
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .ok()
                .map(Cow::into_owned)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_names_and_references() {
        let mut r = XmlReader::new(
            "<w:p a:x=\"1 &amp; 2\"><w:t>a &lt;b&gt; &#233;</w:t><w:br/></w:p>",
            "t.xml",
        );
        let Some(Xml::Start(p)) = r.next().unwrap() else {
            panic!()
        };
        assert_eq!(local_name(&p), "p");
        assert_eq!(attr(&p, "x").as_deref(), Some("1 & 2"));
        let Some(Xml::Start(t)) = r.next().unwrap() else {
            panic!()
        };
        assert_eq!(local_name(&t), "t");
        assert_eq!(r.element_text().unwrap(), "a <b> é");
        let Some(Xml::Start(br)) = r.next().unwrap() else {
            panic!()
        };
        assert_eq!(local_name(&br), "br");
        assert!(matches!(r.next().unwrap(), Some(Xml::End(n)) if n == "br"));
        assert!(matches!(r.next().unwrap(), Some(Xml::End(n)) if n == "p"));
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn depth_is_bounded() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        let mut r = XmlReader::new(&deep, "deep.xml");
        let err = loop {
            match r.next() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
        };
        assert_eq!(err.reason, FailureReason::Corrupt);
    }

    #[test]
    fn doctype_entities_do_not_expand() {
        let bomb =
            "<!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><x>&b;&b;</x>";
        let mut r = XmlReader::new(bomb, "bomb.xml");
        let mut text = String::new();
        while let Some(e) = r.next().unwrap() {
            if let Xml::Text(t) = e {
                text.push_str(&t);
            }
        }
        assert!(text.len() < 20, "{text}");
    }
}
