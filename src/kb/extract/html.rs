//! HTML (and the XHTML chapters of EPUBs): html5ever's tree, walked into blocks.
//!
//! Inline text accumulates until a block-level element starts or ends; the innermost open block
//! (heading, list item, preformatted, paragraph) decides the kind of what is flushed. Scripts,
//! styles and hidden elements never carry readable text; `<nav>` and page-level `<header>` /
//! `<footer>` are menus and copyright lines repeated on every page of a site, so they go too.
//! A `<header>` inside `<main>` or `<article>` usually holds the article's own title and stays.

use scraper::{ElementRef, Html, Node};

use super::{BlockKind, Blocks, Document, ExtractError, Limits};

/// Deeper than real pages nest; below it the rest of a subtree is taken as flat text, so hostile
/// nesting cannot exhaust the stack.
const MAX_DEPTH: usize = 200;

/// Extracts an HTML page.
pub(crate) fn extract(text: &str, limits: &Limits) -> Result<Document, ExtractError> {
    let mut blocks = Blocks::new(limits);
    let title = extract_into(text, &mut blocks)?;
    let title = title.or_else(|| blocks.first_heading());
    Ok(Document {
        title,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

/// Appends a page's blocks to `blocks` and returns its `<title>`.
pub(crate) fn extract_into(
    text: &str,
    blocks: &mut Blocks,
) -> Result<Option<String>, ExtractError> {
    let html = Html::parse_document(text);
    let root = html.root_element();
    let title = root
        .descendants()
        .filter_map(ElementRef::wrap)
        .find(|e| e.value().name() == "title")
        .map(|e| super::collapse_whitespace(&e.text().collect::<String>()))
        .filter(|t| !t.is_empty());
    let mut walker = Walker {
        blocks,
        inline: String::new(),
        kinds: vec![BlockKind::Paragraph],
    };
    walker.element(root, 0, false)?;
    walker.flush()?;
    Ok(title)
}

struct Walker<'b> {
    blocks: &'b mut Blocks,
    /// Inline text of the block being read, whitespace not yet collapsed.
    inline: String,
    /// Kinds of the open block elements; the last one labels flushed text.
    kinds: Vec<BlockKind>,
}

impl Walker<'_> {
    fn push_inline(&mut self, text: &str) -> Result<(), ExtractError> {
        self.blocks.check_pending(self.inline.len() + text.len())?;
        self.inline.push_str(text);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), ExtractError> {
        if self.inline.is_empty() {
            return Ok(());
        }
        let kind = self.kinds.last().copied().unwrap_or(BlockKind::Paragraph);
        let text = std::mem::take(&mut self.inline);
        self.blocks.push(kind, &text, None)
    }

    fn children(
        &mut self,
        el: ElementRef<'_>,
        depth: usize,
        in_content: bool,
    ) -> Result<(), ExtractError> {
        for child in el.children() {
            match child.value() {
                Node::Text(text) => self.push_inline(text)?,
                Node::Element(_) => {
                    if let Some(child) = ElementRef::wrap(child) {
                        self.element(child, depth + 1, in_content)?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn element(
        &mut self,
        el: ElementRef<'_>,
        depth: usize,
        in_content: bool,
    ) -> Result<(), ExtractError> {
        let name = el.value().name();
        if is_skipped(el, in_content) {
            return Ok(());
        }
        if depth > MAX_DEPTH {
            let text: String = el.text().collect();
            return self.push_inline(&text);
        }
        let in_content = in_content
            || matches!(name, "main" | "article")
            || el.value().attr("role") == Some("main");
        match name {
            "br" => self.push_inline("\n"),
            "pre" | "listing" | "xmp" | "plaintext" => {
                self.flush()?;
                let text: String = el.text().collect();
                self.blocks.push(BlockKind::Code, &text, None)
            }
            "table" => self.table(el, depth, in_content),
            _ => {
                let Some(kind) = block_kind(name, self.kinds.last().copied()) else {
                    // Inline element: its text joins the current block.
                    return self.children(el, depth, in_content);
                };
                self.flush()?;
                self.kinds.push(kind);
                let result = self
                    .children(el, depth, in_content)
                    .and_then(|()| self.flush());
                self.kinds.pop();
                result
            }
        }
    }

    /// One Table block per row of a data table. A table used for page layout (cells holding
    /// lists, headings, paragraphs or other tables) is read as ordinary flow instead, cell by cell.
    fn table(
        &mut self,
        table: ElementRef<'_>,
        depth: usize,
        in_content: bool,
    ) -> Result<(), ExtractError> {
        self.flush()?;
        for part in table.children().filter_map(ElementRef::wrap) {
            match part.value().name() {
                "caption" => {
                    self.kinds.push(BlockKind::Paragraph);
                    self.children(part, depth + 1, in_content)?;
                    self.flush()?;
                    self.kinds.pop();
                }
                "tr" => self.row(part, depth + 1, in_content)?,
                "thead" | "tbody" | "tfoot" => {
                    for row in part.children().filter_map(ElementRef::wrap) {
                        if row.value().name() == "tr" {
                            self.row(row, depth + 2, in_content)?;
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn row(
        &mut self,
        row: ElementRef<'_>,
        depth: usize,
        in_content: bool,
    ) -> Result<(), ExtractError> {
        let cells: Vec<ElementRef<'_>> = row
            .children()
            .filter_map(ElementRef::wrap)
            .filter(|c| matches!(c.value().name(), "td" | "th") && !is_skipped(*c, in_content))
            .collect();
        let layout = cells.iter().any(|cell| {
            cell.descendants().filter_map(ElementRef::wrap).any(|e| {
                matches!(
                    e.value().name(),
                    "table"
                        | "ul"
                        | "ol"
                        | "dl"
                        | "pre"
                        | "blockquote"
                        | "p"
                        | "h1"
                        | "h2"
                        | "h3"
                        | "h4"
                        | "h5"
                        | "h6"
                )
            })
        });
        if layout {
            for cell in cells {
                self.kinds.push(BlockKind::Paragraph);
                self.children(cell, depth + 1, in_content)?;
                self.flush()?;
                self.kinds.pop();
            }
            return Ok(());
        }
        let mut texts = Vec::with_capacity(cells.len());
        for cell in cells {
            let mut text = String::new();
            inline_text(cell, in_content, 0, &mut text);
            self.blocks.check_pending(text.len())?;
            texts.push(super::collapse_whitespace(&text));
        }
        if texts.iter().any(|t| !t.is_empty()) {
            self.blocks
                .push(BlockKind::Table, &texts.join(" | "), None)?;
        }
        Ok(())
    }
}

/// The text under `el`, skipping what the walker skips; `<br>` becomes a space.
fn inline_text(el: ElementRef<'_>, in_content: bool, depth: usize, out: &mut String) {
    for child in el.children() {
        match child.value() {
            Node::Text(text) => out.push_str(text),
            Node::Element(e) => {
                if let Some(child) = ElementRef::wrap(child) {
                    if is_skipped(child, in_content) {
                        continue;
                    }
                    if e.name() == "br" || depth > MAX_DEPTH {
                        out.push(' ');
                    }
                    if depth > MAX_DEPTH {
                        out.extend(child.text());
                    } else {
                        inline_text(child, in_content, depth + 1, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// The kind of block a block-level element opens, or `None` for inline elements.
fn block_kind(name: &str, parent: Option<BlockKind>) -> Option<BlockKind> {
    // Paragraphs and divisions inside a list item are part of the item.
    let flow = match parent {
        Some(BlockKind::ListItem) => BlockKind::ListItem,
        _ => BlockKind::Paragraph,
    };
    Some(match name {
        "h1" => BlockKind::Heading(1),
        "h2" => BlockKind::Heading(2),
        "h3" => BlockKind::Heading(3),
        "h4" => BlockKind::Heading(4),
        "h5" => BlockKind::Heading(5),
        "h6" => BlockKind::Heading(6),
        "li" => BlockKind::ListItem,
        // Containers: they separate text but label it like their parent.
        "ul" | "ol" | "menu" | "dir" | "dl" => parent.unwrap_or(BlockKind::Paragraph),
        "p" | "div" | "section" | "article" | "main" | "aside" | "blockquote" | "center" | "dd"
        | "dt" | "details" | "summary" | "dialog" | "fieldset" | "legend" | "figure"
        | "figcaption" | "form" | "header" | "footer" | "hgroup" | "hr" | "address" | "body"
        | "html" | "caption" | "tr" | "td" | "th" | "thead" | "tbody" | "tfoot" | "frameset"
        | "noframes" => flow,
        _ => return None,
    })
}

/// Elements that never hold readable text, hidden ones, and clear boilerplate.
fn is_skipped(el: ElementRef<'_>, in_content: bool) -> bool {
    let e = el.value();
    let name = e.name();
    let never = matches!(
        name,
        "head"
            | "script"
            | "style"
            | "noscript"
            | "template"
            | "svg"
            | "canvas"
            | "iframe"
            | "object"
            | "embed"
            | "video"
            | "audio"
            | "map"
            | "select"
            | "button"
            | "input"
            | "textarea"
            | "datalist"
            | "annotation"
            | "annotation-xml"
            | "nav"
    );
    if never {
        return true;
    }
    if e.attr("hidden").is_some() || e.attr("aria-hidden") == Some("true") {
        return true;
    }
    if let Some(style) = e.attr("style") {
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if style.contains("display:none") || style.contains("visibility:hidden") {
            return true;
        }
    }
    let role = e.attr("role").unwrap_or("");
    if matches!(role, "navigation" | "search") {
        return true;
    }
    // Site banners and footers; inside the main content they belong to the article.
    !in_content && (matches!(name, "header" | "footer") || matches!(role, "banner" | "contentinfo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(doc: &Document) -> Vec<(BlockKind, &str)> {
        doc.blocks
            .iter()
            .map(|b| (b.kind, b.text.as_str()))
            .collect()
    }

    #[test]
    fn structure_and_boilerplate() {
        let page = r#"<!doctype html><html><head><title> The  page </title><style>p{}</style></head>
        <body><header><a href="/">Site</a> menu</header><nav><ul><li>Home</li></ul></nav>
        <main><header><h1>Article <em>title</em></h1></header>
        <p>First <b>para</b>graph<br>next line.</p><script>var x;</script>
        <ul><li>one</li><li>two<ul><li>nested</li></ul></li></ul>
        <pre>  code
    indented</pre>
        <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2<br>3</td></tr></table>
        <div hidden>secret</div><div style="display: none">gone</div>
        <div>loose text<p>inner</p>tail</div></main>
        <footer>© 2024</footer></body></html>"#;
        let doc = extract(page, &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("The page"));
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(1), "Article title"),
                (BlockKind::Paragraph, "First paragraph next line."),
                (BlockKind::ListItem, "one"),
                (BlockKind::ListItem, "two"),
                (BlockKind::ListItem, "nested"),
                (BlockKind::Code, "  code\n    indented"),
                (BlockKind::Table, "a | b"),
                (BlockKind::Table, "1 | 2 3"),
                (BlockKind::Paragraph, "loose text"),
                (BlockKind::Paragraph, "inner"),
                (BlockKind::Paragraph, "tail"),
            ]
        );
    }

    #[test]
    fn layout_tables_read_as_flow() {
        let page = "<table><tr><td><h2>Menu</h2><ul><li>a</li></ul></td><td><p>Body text.</p></td></tr></table>";
        let doc = extract(page, &Limits::default()).unwrap();
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(2), "Menu"),
                (BlockKind::ListItem, "a"),
                (BlockKind::Paragraph, "Body text."),
            ]
        );
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let page = format!(
            "{}deep{}",
            "<div><span>".repeat(5000),
            "</span></div>".repeat(5000)
        );
        let doc = extract(&page, &Limits::default()).unwrap();
        assert_eq!(doc.text(), "deep");
    }
}
