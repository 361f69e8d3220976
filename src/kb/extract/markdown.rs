//! Markdown: pulldown-cmark's event stream folded into blocks.
//!
//! Markup (emphasis, link targets, image references) is dropped and its text kept; ordered list
//! items keep their number because it is part of what the author wrote ("step 3"). Raw HTML is
//! reduced to its text.

use pulldown_cmark::{Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use super::{BlockKind, Blocks, Document, ExtractError, Limits};

/// Extracts a Markdown document.
pub(crate) fn extract(text: &str, limits: &Limits) -> Result<Document, ExtractError> {
    let options = Options::ENABLE_TABLES
        | Options::ENABLE_FOOTNOTES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_YAML_STYLE_METADATA_BLOCKS
        | Options::ENABLE_PLUSES_DELIMITED_METADATA_BLOCKS
        | Options::ENABLE_MATH
        | Options::ENABLE_DEFINITION_LIST;
    let mut blocks = Blocks::new(limits);
    let mut state = State::default();
    for event in Parser::new_ext(text, options) {
        state.event(event, &mut blocks)?;
    }
    state.flush(&mut blocks)?;
    let title = state.title.or_else(|| blocks.first_heading());
    Ok(Document {
        title,
        pages: None,
        blocks: blocks.into_vec(),
    })
}

#[derive(Default)]
struct State {
    /// Text of the block being read.
    buf: String,
    /// Kind of the block being read (None: plain paragraph).
    kind: Option<BlockKind>,
    /// Open lists: the next number of each ordered one.
    lists: Vec<Option<u64>>,
    /// Inside an image: its alt text is not document text.
    in_image: usize,
    in_metadata: bool,
    /// Cells of the table row being read.
    cells: Option<Vec<String>>,
    /// From YAML / TOML front matter.
    title: Option<String>,
}

impl State {
    fn flush(&mut self, blocks: &mut Blocks) -> Result<(), ExtractError> {
        let text = std::mem::take(&mut self.buf);
        let kind = self.kind.take().unwrap_or(if self.lists.is_empty() {
            BlockKind::Paragraph
        } else {
            BlockKind::ListItem
        });
        blocks.push(kind, &text, None)
    }

    fn push(&mut self, text: &str, blocks: &Blocks) -> Result<(), ExtractError> {
        if self.in_image > 0 {
            return Ok(());
        }
        blocks.check_pending(self.buf.len() + text.len())?;
        self.buf.push_str(text);
        Ok(())
    }

    fn event(&mut self, event: Event<'_>, blocks: &mut Blocks) -> Result<(), ExtractError> {
        match event {
            Event::Start(tag) => match tag {
                Tag::Paragraph | Tag::BlockQuote(_) | Tag::DefinitionListTitle => {
                    // A paragraph inside a list item continues the item's text.
                    if self.lists.is_empty() {
                        self.flush(blocks)?;
                    } else {
                        self.push(" ", blocks)?;
                    }
                }
                Tag::Heading { level, .. } => {
                    self.flush(blocks)?;
                    self.kind = Some(BlockKind::Heading(heading_level(level)));
                }
                Tag::CodeBlock(_) => {
                    self.flush(blocks)?;
                    self.kind = Some(BlockKind::Code);
                }
                Tag::List(start) => {
                    self.flush(blocks)?;
                    self.lists.push(start);
                }
                Tag::Item => {
                    self.flush(blocks)?;
                    if let Some(Some(n)) = self.lists.last_mut() {
                        let number = format!("{n}. ");
                        *n = n.saturating_add(1);
                        self.push(&number, blocks)?;
                    }
                }
                Tag::Table(_) | Tag::HtmlBlock | Tag::FootnoteDefinition(_) => {
                    self.flush(blocks)?
                }
                Tag::DefinitionListDefinition => self.flush(blocks)?,
                Tag::TableHead | Tag::TableRow => self.cells = Some(Vec::new()),
                Tag::TableCell => self.buf.clear(),
                Tag::Image { .. } => self.in_image += 1,
                Tag::MetadataBlock(_) => self.in_metadata = true,
                _ => {}
            },
            Event::End(end) => match end {
                TagEnd::Paragraph
                | TagEnd::Heading(_)
                | TagEnd::CodeBlock
                | TagEnd::BlockQuote(_)
                | TagEnd::HtmlBlock
                | TagEnd::DefinitionListTitle
                | TagEnd::DefinitionListDefinition
                | TagEnd::FootnoteDefinition
                    // Inside a list item, a paragraph's end is not the item's end.
                    if self.lists.is_empty() || self.kind.is_some() =>
                {
                    self.flush(blocks)?
                }
                TagEnd::Item => self.flush(blocks)?,
                TagEnd::List(_) => {
                    self.flush(blocks)?;
                    self.lists.pop();
                }
                TagEnd::TableCell => {
                    let cell = super::collapse_whitespace(&std::mem::take(&mut self.buf));
                    if let Some(cells) = self.cells.as_mut() {
                        cells.push(cell);
                    }
                }
                TagEnd::TableHead | TagEnd::TableRow => {
                    if let Some(cells) = self.cells.take() {
                        blocks.push(BlockKind::Table, &cells.join(" | "), None)?;
                    }
                }
                TagEnd::Image => self.in_image = self.in_image.saturating_sub(1),
                TagEnd::MetadataBlock(_) => self.in_metadata = false,
                _ => {}
            },
            Event::Text(text) if self.in_metadata => {
                if self.title.is_none() {
                    self.title = front_matter_title(&text);
                }
            }
            Event::Text(text) | Event::Code(text) | Event::InlineMath(text) => {
                self.push(&text, blocks)?
            }
            Event::DisplayMath(text) => {
                self.push(" ", blocks)?;
                self.push(&text, blocks)?;
                self.push(" ", blocks)?;
            }
            Event::Html(html) | Event::InlineHtml(html) => self.push(&strip_tags(&html), blocks)?,
            Event::SoftBreak => self.push(" ", blocks)?,
            Event::HardBreak => self.push("\n", blocks)?,
            Event::Rule => self.flush(blocks)?,
            Event::FootnoteReference(_) | Event::TaskListMarker(_) => {}
        }
        Ok(())
    }
}

fn heading_level(level: HeadingLevel) -> u8 {
    match level {
        HeadingLevel::H1 => 1,
        HeadingLevel::H2 => 2,
        HeadingLevel::H3 => 3,
        HeadingLevel::H4 => 4,
        HeadingLevel::H5 => 5,
        HeadingLevel::H6 => 6,
    }
}

/// `title: …` (YAML) or `title = "…"` (TOML) in front matter.
fn front_matter_title(meta: &str) -> Option<String> {
    meta.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("title")?.trim_start();
        let value = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'').trim();
        (!value.is_empty()).then(|| value.to_string())
    })
}

/// The text of raw HTML: tags and comments removed, a space where a tag was (so words on
/// either side of `<br>` stay apart).
fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        out.push_str(&rest[..lt]);
        rest = &rest[lt..];
        let end = if rest.starts_with("<!--") {
            rest.find("-->").map(|e| e + 3)
        } else {
            rest.find('>').map(|e| e + 1)
        };
        match end {
            Some(end) => {
                out.push(' ');
                rest = &rest[end..];
            }
            None => {
                // An unclosed `<` is just a character ("a < b").
                out.push('<');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    // Entities in raw HTML: the common ones.
    out.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
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
    fn blocks_from_markdown() {
        let md = "---\ntitle: \"Front\"\n---\n# Top *level*\n\nSome [linked](http://x) text\nwrapped. ![alt text](i.png)\n\n- a\n- b\n  - nested\n\n1. first\n\n   more of first\n2. second\n\n```rust\nfn main() {\n    x();\n}\n```\n\n| h1 | h2 |\n|----|----|\n| c1 | `c2` |\n\n<div>raw <b>html</b></div>\n";
        let doc = extract(md, &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Front"));
        assert_eq!(
            kinds(&doc),
            vec![
                (BlockKind::Heading(1), "Top level"),
                (BlockKind::Paragraph, "Some linked text wrapped."),
                (BlockKind::ListItem, "a"),
                (BlockKind::ListItem, "b"),
                (BlockKind::ListItem, "nested"),
                (BlockKind::ListItem, "1. first more of first"),
                (BlockKind::ListItem, "2. second"),
                (BlockKind::Code, "fn main() {\n    x();\n}"),
                (BlockKind::Table, "h1 | h2"),
                (BlockKind::Table, "c1 | c2"),
                (BlockKind::Paragraph, "raw html"),
            ]
        );
    }

    #[test]
    fn title_falls_back_to_first_heading() {
        let doc = extract("## Minor\n\n# Major\n", &Limits::default()).unwrap();
        assert_eq!(doc.title.as_deref(), Some("Major"));
    }
}
