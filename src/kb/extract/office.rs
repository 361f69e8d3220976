//! DOCX (Office Open XML) and ODT (OpenDocument text).
//!
//! Both are ZIP packages of XML parts read through [`SafeZip`]. We stream the main part with
//! quick-xml and keep only what structures text: paragraph styles for headings, numbering for
//! list items, and table rows. Paragraphs can nest (text boxes, footnotes inside a paragraph),
//! so open paragraphs live on a stack.

use std::collections::HashMap;
use std::path::Path;

use super::xml::{Xml, XmlReader, attr, local_name};
use super::zipsafe::SafeZip;
use super::{BlockKind, Blocks, Document, ExtractError, FailureReason, Limits};

/// One open paragraph.
struct Para {
    text: String,
    kind: BlockKind,
    /// Styled as the document's title (a fallback when the metadata has none).
    is_title: bool,
}

impl Para {
    fn new(kind: BlockKind) -> Self {
        Para {
            text: String::new(),
            kind,
            is_title: false,
        }
    }

    /// Appends text, bounding a single runaway paragraph by the document's text limit.
    fn push_str(&mut self, text: &str, blocks: &Blocks) -> Result<(), ExtractError> {
        blocks.check_pending(self.text.len() + text.len())?;
        self.text.push_str(text);
        Ok(())
    }
}

/// One open table: the cells of the row being read.
#[derive(Default)]
struct Table {
    row: Vec<String>,
    cell: Option<String>,
}

/// Where finished paragraphs and rows go: into the enclosing table cell, or out as blocks.
#[derive(Default)]
struct Sink {
    tables: Vec<Table>,
}

impl Sink {
    /// A finished paragraph: appended to the open table cell, else emitted.
    fn paragraph(&mut self, blocks: &mut Blocks, para: Para) -> Result<(), ExtractError> {
        if let Some(cell) = self.tables.last_mut().and_then(|t| t.cell.as_mut()) {
            // Counted when the row is pushed; here only bounded.
            blocks.check_pending(cell.len() + para.text.len())?;
            if !cell.is_empty() {
                cell.push(' ');
            }
            cell.push_str(&para.text);
            return Ok(());
        }
        blocks.push(para.kind, &para.text, None)
    }

    fn start_table(&mut self) {
        self.tables.push(Table::default());
    }

    fn start_row(&mut self) {
        if let Some(t) = self.tables.last_mut() {
            t.row.clear();
        }
    }

    fn start_cell(&mut self) {
        if let Some(t) = self.tables.last_mut() {
            t.cell = Some(String::new());
        }
    }

    fn end_cell(&mut self) {
        if let Some(t) = self.tables.last_mut()
            && let Some(cell) = t.cell.take()
        {
            t.row.push(super::collapse_whitespace(&cell));
        }
    }

    /// A finished row: one Table block, or, in a nested table, text for the outer cell.
    fn end_row(&mut self, blocks: &mut Blocks) -> Result<(), ExtractError> {
        let Some(table) = self.tables.last_mut() else {
            return Ok(());
        };
        let row = std::mem::take(&mut table.row);
        if row.iter().all(String::is_empty) {
            return Ok(());
        }
        let text = row.join(" | ");
        let depth = self.tables.len();
        if depth >= 2
            && let Some(cell) = self.tables[depth - 2].cell.as_mut()
        {
            if !cell.is_empty() {
                cell.push(' ');
            }
            cell.push_str(&row.join(" "));
            return Ok(());
        }
        blocks.push(BlockKind::Table, &text, None)
    }

    fn end_table(&mut self) {
        self.tables.pop();
    }
}

// ---------------------------------------------------------------------------------------------
// DOCX

/// What a paragraph style means for us.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct StyleInfo {
    heading: Option<u8>,
    list: bool,
}

/// Extracts a DOCX file.
pub(crate) fn extract_docx(path: &Path, limits: &Limits) -> Result<Document, ExtractError> {
    let mut zip = SafeZip::open(path, limits, "DOCX")?;
    let main = main_part(&mut zip)?;
    let Some(xml) = zip.read_text(&main)? else {
        return Err(ExtractError::new(
            FailureReason::Corrupt,
            format!(
                "the DOCX has no main document part ({main}); it may be another Office file type"
            ),
        ));
    };
    let dir = main.rsplit_once('/').map_or("", |(d, _)| d);
    let part = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    let styles = match zip.read_text(&part("styles.xml"))? {
        Some(text) => docx_styles(&text)?,
        None => HashMap::new(),
    };
    let mut blocks = Blocks::new(limits);
    let mut title = None;
    docx_body(&xml, &main, &styles, &mut blocks, &mut title)?;
    // Notes carry real content; headers and footers are page furniture and are left out.
    for notes in ["footnotes.xml", "endnotes.xml"] {
        let name = part(notes);
        if let Some(text) = zip.read_text(&name)? {
            docx_body(&text, &name, &styles, &mut blocks, &mut None)?;
        }
    }
    let core_title = match zip.read_text("docProps/core.xml")? {
        Some(core) => dc_title(&core, "docProps/core.xml")?,
        None => None,
    };
    let title = core_title.or(title).or_else(|| blocks.first_heading());
    Ok(Document {
        title,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

/// The main document part named by the package relationships (usually `word/document.xml`).
fn main_part(zip: &mut SafeZip) -> Result<String, ExtractError> {
    const DEFAULT: &str = "word/document.xml";
    let Some(rels) = zip.read_text("_rels/.rels")? else {
        return Ok(DEFAULT.into());
    };
    let mut reader = XmlReader::new(&rels, "_rels/.rels");
    while let Some(event) = reader.next()? {
        if let Xml::Start(e) = event
            && local_name(&e) == "Relationship"
            && attr(&e, "Type").is_some_and(|t| t.ends_with("/officeDocument"))
            && let Some(target) = attr(&e, "Target")
        {
            let target = target.trim_start_matches('/').to_string();
            if zip.contains(&target) {
                return Ok(target);
            }
        }
    }
    Ok(DEFAULT.into())
}

/// Paragraph styles by id, with `basedOn` inheritance resolved.
fn docx_styles(xml: &str) -> Result<HashMap<String, StyleInfo>, ExtractError> {
    struct Raw {
        name: String,
        based_on: Option<String>,
        outline: Option<u8>,
        list: bool,
    }
    let mut raw: HashMap<String, Raw> = HashMap::new();
    let mut current: Option<(String, Raw)> = None;
    let mut reader = XmlReader::new(xml, "word/styles.xml");
    while let Some(event) = reader.next()? {
        match event {
            Xml::Start(e) => match local_name(&e) {
                "style" => {
                    current = attr(&e, "styleId").map(|id| {
                        (
                            id,
                            Raw {
                                name: String::new(),
                                based_on: None,
                                outline: None,
                                list: false,
                            },
                        )
                    });
                }
                "name" | "basedOn" | "outlineLvl" | "numId" => {
                    if let Some((_, style)) = current.as_mut() {
                        let value = attr(&e, "val").unwrap_or_default();
                        match local_name(&e) {
                            "name" => style.name = value.to_ascii_lowercase(),
                            "basedOn" => style.based_on = Some(value),
                            "outlineLvl" => style.outline = value.parse().ok(),
                            _ => style.list = value != "0",
                        }
                    }
                }
                _ => {}
            },
            Xml::End(name) if name == "style" => {
                if let Some((id, style)) = current.take() {
                    raw.insert(id, style);
                }
            }
            _ => {}
        }
    }
    let own = |style: &Raw| StyleInfo {
        heading: heading_from_name(&style.name)
            .or_else(|| style.outline.filter(|&l| l < 9).map(|l| l + 1)),
        list: style.list
            || style.name.starts_with("list bullet")
            || style.name.starts_with("list number"),
    };
    let mut resolved = HashMap::new();
    for (id, style) in &raw {
        let mut info = own(style);
        // Inherit along basedOn, bounded against cycles.
        let mut parent = style.based_on.as_deref();
        for _ in 0..16 {
            let Some(p) = parent.and_then(|p| raw.get(p)) else {
                break;
            };
            let inherited = own(p);
            info.heading = info.heading.or(inherited.heading);
            info.list |= inherited.list;
            parent = p.based_on.as_deref();
        }
        resolved.insert(id.clone(), info);
    }
    Ok(resolved)
}

/// "heading 2" → 2, "title" → 1, "subtitle" → 2 (Word's built-in names, lowercased).
fn heading_from_name(name: &str) -> Option<u8> {
    match name {
        "title" => return Some(1),
        "subtitle" => return Some(2),
        _ => {}
    }
    let level = name.strip_prefix("heading")?.trim();
    level.parse::<u8>().ok().filter(|l| (1..=9).contains(l))
}

/// Style ids Word uses when styles.xml is missing or does not define them.
fn heading_from_id(id: &str) -> Option<u8> {
    heading_from_name(&id.to_ascii_lowercase().replace("heading", "heading "))
}

/// Walks a WordprocessingML part (document, footnotes or endnotes).
fn docx_body(
    xml: &str,
    part: &str,
    styles: &HashMap<String, StyleInfo>,
    blocks: &mut Blocks,
    title: &mut Option<String>,
) -> Result<(), ExtractError> {
    /// The properties of the paragraph being read.
    #[derive(Default)]
    struct Props {
        style: Option<String>,
        numbered: bool,
        outline: Option<u8>,
    }
    let mut reader = XmlReader::new(xml, part);
    let mut paras: Vec<(Para, Props)> = Vec::new();
    let mut sink = Sink::default();
    let mut in_ppr = false;
    while let Some(event) = reader.next()? {
        match event {
            Xml::Start(e) => match local_name(&e) {
                "p" => paras.push((Para::new(BlockKind::Paragraph), Props::default())),
                "pPr" => in_ppr = true,
                "pStyle" if in_ppr => {
                    if let Some((_, props)) = paras.last_mut() {
                        props.style = attr(&e, "val");
                    }
                }
                "numId" if in_ppr => {
                    if let Some((_, props)) = paras.last_mut() {
                        props.numbered = attr(&e, "val").is_some_and(|v| v != "0");
                    }
                }
                "outlineLvl" if in_ppr => {
                    if let Some((_, props)) = paras.last_mut() {
                        props.outline = attr(&e, "val").and_then(|v| v.parse().ok());
                    }
                }
                "t" => {
                    let text = reader.element_text()?;
                    if let Some((para, _)) = paras.last_mut() {
                        para.push_str(&text, blocks)?;
                    }
                }
                "tab" | "ptab" if !in_ppr => push_char(paras.last_mut().map(|p| &mut p.0), ' '),
                "br" | "cr" => push_char(paras.last_mut().map(|p| &mut p.0), '\n'),
                "noBreakHyphen" => push_char(paras.last_mut().map(|p| &mut p.0), '-'),
                // Deleted text, field instructions, and the fallback copy of content that
                // mc:Choice already gave us.
                "delText" | "instrText" | "Fallback" | "rPr" => reader.skip_element()?,
                "tbl" => sink.start_table(),
                "tr" => sink.start_row(),
                "tc" => sink.start_cell(),
                _ => {}
            },
            Xml::End(name) => match name.as_str() {
                "pPr" => in_ppr = false,
                "p" => {
                    if let Some((mut para, props)) = paras.pop() {
                        let info = props
                            .style
                            .as_deref()
                            .map(|id| {
                                styles.get(id).copied().unwrap_or(StyleInfo {
                                    heading: heading_from_id(id),
                                    list: false,
                                })
                            })
                            .unwrap_or_default();
                        let heading = props
                            .outline
                            .filter(|&l| l < 9)
                            .map(|l| l + 1)
                            .or(info.heading);
                        para.kind = match heading {
                            Some(level) => BlockKind::Heading(level),
                            None if props.numbered || info.list => BlockKind::ListItem,
                            None => BlockKind::Paragraph,
                        };
                        para.is_title = props
                            .style
                            .as_deref()
                            .is_some_and(|s| s.eq_ignore_ascii_case("title"));
                        take_title(&para, title);
                        sink.paragraph(blocks, para)?;
                    }
                }
                "tc" => sink.end_cell(),
                "tr" => sink.end_row(blocks)?,
                "tbl" => sink.end_table(),
                _ => {}
            },
            Xml::Text(_) => {}
        }
    }
    Ok(())
}

/// Appends a character standing for an element (tab, line break) to the open paragraph.
fn push_char(para: Option<&mut Para>, c: char) {
    if let Some(para) = para {
        para.text.push(c);
    }
}

/// Keeps the first non-empty title-styled paragraph as the fallback title.
fn take_title(para: &Para, title: &mut Option<String>) {
    if para.is_title && title.is_none() {
        let text = super::collapse_whitespace(&para.text);
        if !text.is_empty() {
            *title = Some(text);
        }
    }
}

/// `dc:title` from a Dublin Core metadata part (DOCX core.xml, ODT meta.xml).
fn dc_title(xml: &str, part: &str) -> Result<Option<String>, ExtractError> {
    let mut reader = XmlReader::new(xml, part);
    while let Some(event) = reader.next()? {
        if let Xml::Start(e) = event
            && local_name(&e) == "title"
        {
            let title = super::collapse_whitespace(&reader.element_text()?);
            return Ok(Some(title).filter(|t| !t.is_empty()));
        }
    }
    Ok(None)
}

// ---------------------------------------------------------------------------------------------
// ODT

/// Extracts an ODT file.
pub(crate) fn extract_odt(path: &Path, limits: &Limits) -> Result<Document, ExtractError> {
    let mut zip = SafeZip::open(path, limits, "ODT")?;
    let Some(xml) = zip.read_text("content.xml")? else {
        return Err(ExtractError::new(
            FailureReason::Corrupt,
            "the ODT has no content.xml part; it is damaged or not a text document",
        ));
    };
    // Named styles ("Title", "Heading 1") live in styles.xml; automatic ones in content.xml
    // point at them through their parent.
    let mut parents = HashMap::new();
    if let Some(styles) = zip.read_text("styles.xml")? {
        odt_style_parents(&styles, "styles.xml", &mut parents)?;
    }
    odt_style_parents(&xml, "content.xml", &mut parents)?;
    let mut blocks = Blocks::new(limits);
    let mut title = None;
    odt_body(&xml, &parents, &mut blocks, &mut title)?;
    let meta_title = match zip.read_text("meta.xml")? {
        Some(meta) => dc_title(&meta, "meta.xml")?,
        None => None,
    };
    let title = meta_title.or(title).or_else(|| blocks.first_heading());
    Ok(Document {
        title,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

/// Style name → parent style name.
fn odt_style_parents(
    xml: &str,
    part: &str,
    parents: &mut HashMap<String, String>,
) -> Result<(), ExtractError> {
    let mut reader = XmlReader::new(xml, part);
    while let Some(event) = reader.next()? {
        if let Xml::Start(e) = event {
            match local_name(&e) {
                "style" => {
                    if let (Some(name), Some(parent)) =
                        (attr(&e, "name"), attr(&e, "parent-style-name"))
                    {
                        parents.insert(name, parent);
                    }
                }
                // The body holds no style definitions; stop early.
                "body" => break,
                _ => {}
            }
        }
    }
    Ok(())
}

/// The heading level a paragraph style implies: Title 1, Subtitle 2, else none.
fn odt_style_heading(style: &str, parents: &HashMap<String, String>) -> Option<u8> {
    let mut name = style;
    for _ in 0..16 {
        match name {
            "Title" => return Some(1),
            "Subtitle" => return Some(2),
            _ => name = parents.get(name)?,
        }
    }
    None
}

/// Walks the body of content.xml.
fn odt_body(
    xml: &str,
    parents: &HashMap<String, String>,
    blocks: &mut Blocks,
    title: &mut Option<String>,
) -> Result<(), ExtractError> {
    let mut reader = XmlReader::new(xml, "content.xml");
    let mut paras: Vec<Para> = Vec::new();
    let mut sink = Sink::default();
    let mut list_depth = 0usize;
    let mut in_body = false;
    while let Some(event) = reader.next()? {
        match event {
            Xml::Start(e) => {
                let name = local_name(&e);
                if !in_body {
                    in_body = name == "body";
                    continue;
                }
                match name {
                    "p" | "h" => {
                        let style_heading =
                            attr(&e, "style-name").and_then(|s| odt_style_heading(&s, parents));
                        let kind = if name == "h" {
                            let level = attr(&e, "outline-level")
                                .and_then(|l| l.parse::<u8>().ok())
                                .unwrap_or(1);
                            BlockKind::Heading(level.clamp(1, 10))
                        } else if let Some(level) = style_heading {
                            BlockKind::Heading(level)
                        } else if list_depth > 0 {
                            BlockKind::ListItem
                        } else {
                            BlockKind::Paragraph
                        };
                        let mut para = Para::new(kind);
                        para.is_title = name == "p" && style_heading == Some(1);
                        paras.push(para);
                    }
                    "s" => {
                        let count = attr(&e, "c")
                            .and_then(|c| c.parse::<usize>().ok())
                            .unwrap_or(1)
                            .min(64);
                        for _ in 0..count {
                            push_char(paras.last_mut(), ' ');
                        }
                    }
                    "tab" => push_char(paras.last_mut(), ' '),
                    "line-break" => push_char(paras.last_mut(), '\n'),
                    "list-item" | "list-header" => list_depth += 1,
                    // Footnote numbers, comments, tracked deletions.
                    "note-citation" | "annotation" | "tracked-changes" => reader.skip_element()?,
                    // Image descriptions (svg:title/svg:desc; text:title is a real field).
                    "desc" | "title" if e.name().0.starts_with("svg:") => reader.skip_element()?,
                    "table" => sink.start_table(),
                    "table-row" => sink.start_row(),
                    "table-cell" | "covered-table-cell" => sink.start_cell(),
                    _ => {}
                }
            }
            Xml::End(name) => match name.as_str() {
                "p" | "h" => {
                    if let Some(para) = paras.pop() {
                        take_title(&para, title);
                        sink.paragraph(blocks, para)?;
                    }
                }
                "list-item" | "list-header" => list_depth = list_depth.saturating_sub(1),
                "table-cell" | "covered-table-cell" => sink.end_cell(),
                "table-row" => sink.end_row(blocks)?,
                "table" => sink.end_table(),
                _ => {}
            },
            Xml::Text(text) => {
                if let Some(para) = paras.last_mut() {
                    para.push_str(&text, blocks)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn package(entries: &[(&str, &str)]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        {
            let mut zip = zip::ZipWriter::new(file.as_file_mut());
            for (name, data) in entries {
                zip.start_file(*name, zip::write::SimpleFileOptions::default())
                    .unwrap();
                zip.write_all(data.as_bytes()).unwrap();
            }
            zip.finish().unwrap();
        }
        file
    }

    fn kinds(doc: &Document) -> Vec<(BlockKind, &str)> {
        doc.blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str()))
            .collect()
    }

    const W: &str = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"";

    #[test]
    fn docx_headings_lists_tables() {
        let document = format!(
            r#"<w:document {W}><w:body>
            <w:p><w:pPr><w:pStyle w:val="Title"/></w:pPr><w:r><w:t>My title</w:t></w:r></w:p>
            <w:p><w:pPr><w:pStyle w:val="Kop1"/></w:pPr><w:r><w:t>Intro</w:t></w:r></w:p>
            <w:p><w:r><w:t xml:space="preserve">Hello </w:t></w:r><w:r><w:rPr><w:b/></w:rPr><w:t>world</w:t><w:tab/><w:t>&amp; more</w:t></w:r></w:p>
            <w:p><w:pPr><w:numPr><w:ilvl w:val="0"/><w:numId w:val="3"/></w:numPr></w:pPr><w:r><w:t>first</w:t></w:r></w:p>
            <w:p><w:r><w:delText>gone</w:delText><w:instrText>PAGE</w:instrText><w:t>kept</w:t></w:r></w:p>
            <w:tbl><w:tr><w:tc><w:p><w:r><w:t>a</w:t></w:r></w:p></w:tc><w:tc><w:p><w:r><w:t>b</w:t></w:r></w:p><w:p><w:r><w:t>c</w:t></w:r></w:p></w:tc></w:tr>
            <w:tr><w:tc><w:p/></w:tc><w:tc><w:p/></w:tc></w:tr></w:tbl>
            </w:body></w:document>"#
        );
        let styles = format!(
            r#"<w:styles {W}><w:style w:type="paragraph" w:styleId="Kop1"><w:name w:val="heading 1"/></w:style></w:styles>"#
        );
        let file = package(&[
            ("[Content_Types].xml", "<Types/>"),
            ("word/document.xml", &document),
            ("word/styles.xml", &styles),
        ]);
        let doc = extract_docx(file.path(), &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("My title"));
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(1), "My title"),
                (BlockKind::Heading(1), "Intro"),
                (BlockKind::Paragraph, "Hello world & more"),
                (BlockKind::ListItem, "first"),
                (BlockKind::Paragraph, "kept"),
                (BlockKind::Table, "a | b c"),
            ]
        );
    }

    #[test]
    fn docx_without_word_part_is_explained() {
        let file = package(&[
            ("[Content_Types].xml", "<Types/>"),
            ("xl/workbook.xml", "<x/>"),
        ]);
        let err = extract_docx(file.path(), &Limits::default()).unwrap_err();
        assert_eq!(err.reason, FailureReason::Corrupt);
        assert!(err.message.contains("no main document part"), "{err}");
    }

    #[test]
    fn odt_structure() {
        let content = r#"<office:document-content xmlns:office="o" xmlns:text="t" xmlns:table="b" xmlns:style="s">
            <office:automatic-styles><style:style style:name="P1" style:parent-style-name="Title"/></office:automatic-styles>
            <office:body><office:text>
            <text:p text:style-name="P1">Doc title</text:p>
            <text:h text:outline-level="2">Section</text:h>
            <text:p>Some<text:s text:c="2"/>text<text:note><text:note-citation>1</text:note-citation><text:note-body><text:p>A note.</text:p></text:note-body></text:note> here.</text:p>
            <text:list><text:list-item><text:p>one</text:p><text:list><text:list-item><text:p>nested</text:p></text:list-item></text:list></text:list-item></text:list>
            <table:table><table:table-row><table:table-cell><text:p>x</text:p></table:table-cell><table:covered-table-cell/><table:table-cell><text:p>y</text:p></table:table-cell></table:table-row></table:table>
            </office:text></office:body></office:document-content>"#;
        let file = package(&[
            ("mimetype", "application/vnd.oasis.opendocument.text"),
            ("content.xml", content),
        ]);
        let doc = extract_odt(file.path(), &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Doc title"));
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(1), "Doc title"),
                (BlockKind::Heading(2), "Section"),
                (BlockKind::Paragraph, "A note."),
                (BlockKind::Paragraph, "Some text here."),
                (BlockKind::ListItem, "one"),
                (BlockKind::ListItem, "nested"),
                (BlockKind::Table, "x | | y"),
            ]
        );
    }
}
