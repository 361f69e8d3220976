//! EPUB: the container names the package document (OPF), whose spine lists the chapters in
//! reading order; each chapter is XHTML and goes through the HTML reader.

use std::collections::HashMap;
use std::path::Path;

use super::xml::{Xml, XmlReader, attr, local_name};
use super::zipsafe::SafeZip;
use super::{Blocks, Document, ExtractError, FailureReason, Limits, html, text};

/// Extracts an EPUB file.
pub(crate) fn extract(path: &Path, limits: &Limits) -> Result<Document, ExtractError> {
    let mut zip = SafeZip::open(path, limits, "EPUB")?;
    let opf_path = package_path(&mut zip)?;
    let Some(opf) = zip.read_text(&opf_path)? else {
        return Err(corrupt(format!(
            "the EPUB's package document {opf_path} is missing"
        )));
    };
    let package = parse_package(&opf, &opf_path)?;
    let base = opf_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let mut blocks = Blocks::new(limits);
    let mut read_any = false;
    for href in &package.spine {
        let name = resolve(base, href);
        // A spine entry pointing nowhere is a broken link, not a reason to lose the book.
        let Some(bytes) = zip.read(&name)? else {
            continue;
        };
        read_any = true;
        let chapter = text::decode_html(&bytes)?;
        html::extract_into(&chapter, &mut blocks)?;
    }
    if !read_any && !package.spine.is_empty() {
        return Err(corrupt(
            "none of the EPUB's chapters listed in its spine exist in the archive".into(),
        ));
    }
    let title = package.title.or_else(|| blocks.first_heading());
    Ok(Document {
        title,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

fn corrupt(message: String) -> ExtractError {
    ExtractError::new(FailureReason::Corrupt, message)
}

/// The OPF path from META-INF/container.xml (falling back to the only .opf in the archive
/// would need a directory scan; real EPUBs always have the container).
fn package_path(zip: &mut SafeZip) -> Result<String, ExtractError> {
    let Some(container) = zip.read_text("META-INF/container.xml")? else {
        return Err(corrupt(
            "the EPUB has no META-INF/container.xml, so its chapters cannot be found".into(),
        ));
    };
    let mut reader = XmlReader::new(&container, "META-INF/container.xml");
    while let Some(event) = reader.next()? {
        if let Xml::Start(e) = event
            && local_name(&e) == "rootfile"
            && let Some(path) = attr(&e, "full-path")
        {
            return Ok(path.trim_start_matches('/').to_string());
        }
    }
    Err(corrupt(
        "the EPUB's container.xml names no package document".into(),
    ))
}

/// What we need from the OPF.
struct Package {
    title: Option<String>,
    /// Chapter hrefs (relative to the OPF) in reading order.
    spine: Vec<String>,
}

fn parse_package(opf: &str, part: &str) -> Result<Package, ExtractError> {
    let mut reader = XmlReader::new(opf, part);
    let mut title = None;
    let mut manifest: HashMap<String, (String, String)> = HashMap::new();
    let mut spine_ids = Vec::new();
    let mut in_metadata = false;
    while let Some(event) = reader.next()? {
        match event {
            Xml::Start(e) => match local_name(&e) {
                "metadata" => in_metadata = true,
                "title" if in_metadata && title.is_none() => {
                    let text = super::collapse_whitespace(&reader.element_text()?);
                    title = Some(text).filter(|t| !t.is_empty());
                }
                "item" => {
                    if let (Some(id), Some(href)) = (attr(&e, "id"), attr(&e, "href")) {
                        let media = attr(&e, "media-type").unwrap_or_default();
                        manifest.insert(id, (href, media));
                    }
                }
                "itemref" => {
                    // linear="no" marks auxiliary content (pop-up notes, covers) that readers
                    // show out of the flow; it is still the book's text, so we keep it.
                    if let Some(id) = attr(&e, "idref") {
                        spine_ids.push(id);
                    }
                }
                _ => {}
            },
            Xml::End(name) if name == "metadata" => in_metadata = false,
            _ => {}
        }
    }
    let spine = spine_ids
        .iter()
        .filter_map(|id| manifest.get(id))
        .filter(|(_, media)| media.is_empty() || media.contains("html") || media.contains("xml"))
        .map(|(href, _)| href.clone())
        .collect();
    Ok(Package { title, spine })
}

/// An href relative to the OPF's folder → an archive entry name: fragment dropped,
/// percent-escapes decoded, `.` and `..` resolved.
fn resolve(base: &str, href: &str) -> String {
    let href = href.split('#').next().unwrap_or("");
    let href = percent_decode(href);
    let mut parts: Vec<&str> = if href.starts_with('/') {
        Vec::new()
    } else {
        base.split('/').filter(|p| !p.is_empty()).collect()
    };
    for part in href.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;
    use crate::kb::extract::BlockKind;

    #[test]
    fn hrefs_resolve() {
        assert_eq!(
            resolve("OEBPS", "text/ch%201.xhtml#x"),
            "OEBPS/text/ch 1.xhtml"
        );
        assert_eq!(resolve("OEBPS/a", "../b.xhtml"), "OEBPS/b.xhtml");
        assert_eq!(resolve("", "./c.xhtml"), "c.xhtml");
    }

    #[test]
    fn spine_order_and_title() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        {
            let mut zip = zip::ZipWriter::new(file.as_file_mut());
            let options = zip::write::SimpleFileOptions::default();
            let mut add = |name: &str, data: &str| {
                zip.start_file(name, options).unwrap();
                zip.write_all(data.as_bytes()).unwrap();
            };
            add("mimetype", "application/epub+zip");
            add(
                "META-INF/container.xml",
                r#"<container><rootfiles><rootfile full-path="OPS/book.opf"/></rootfiles></container>"#,
            );
            add(
                "OPS/book.opf",
                r#"<package><metadata><dc:title>A Book</dc:title></metadata>
                <manifest><item id="c2" href="two.xhtml" media-type="application/xhtml+xml"/>
                <item id="c1" href="one.xhtml" media-type="application/xhtml+xml"/>
                <item id="img" href="x.png" media-type="image/png"/></manifest>
                <spine><itemref idref="c1"/><itemref idref="img"/><itemref idref="c2"/></spine></package>"#,
            );
            add(
                "OPS/one.xhtml",
                "<html><body><h1>One</h1><p>first</p></body></html>",
            );
            add(
                "OPS/two.xhtml",
                "<html><body><h1>Two</h1><p>second</p></body></html>",
            );
            zip.finish().unwrap();
        }
        let doc = extract(file.path(), &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("A Book"));
        let got: Vec<(BlockKind, &str)> = doc
            .blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                (BlockKind::Heading(1), "One"),
                (BlockKind::Paragraph, "first"),
                (BlockKind::Heading(1), "Two"),
                (BlockKind::Paragraph, "second"),
            ]
        );
    }
}
