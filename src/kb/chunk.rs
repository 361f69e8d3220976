//! Chunking: a document's blocks become chunks that follow its structure (a heading starts a
//! new chunk; paragraphs are packed whole) and fit the embedding model's token budget, with
//! overlap between neighbouring chunks of one long section.

use std::ops::Range;

use super::extract::{BlockKind, Document};

/// Splits text into tokens, as the embedding model counts them.
pub trait Tokens {
    /// Byte ranges of the tokens of `text`, without the model's special tokens.
    fn spans(&self, text: &str) -> Vec<Range<usize>>;
}

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Its text: a slice of the document's extracted text.
    pub text: String,
    /// The headings above it, outermost first, joined by " > ".
    pub heading: Option<String>,
    /// First page it covers (1-based; documents with pages only).
    pub page_start: Option<u32>,
    /// Last page it covers.
    pub page_end: Option<u32>,
    /// Character span in the extracted text (blocks joined by blank lines).
    pub chars: Range<usize>,
}

impl Chunk {
    /// What is embedded and indexed.
    pub fn indexed_text(&self) -> String {
        indexed_text(&self.text, self.heading.as_deref())
    }
}

/// What is embedded and indexed for a chunk: its headings give a passage its context, unless
/// the chunk starts with its own heading already.
pub fn indexed_text(text: &str, heading: Option<&str>) -> String {
    match heading {
        Some(h) if !text.starts_with(h.rsplit(" > ").next().unwrap_or(h)) => {
            format!("{h}\n{text}")
        }
        _ => text.to_string(),
    }
}

/// Chunking settings.
#[derive(Debug, Clone, Copy)]
pub struct Chunker {
    /// Most tokens of body text per chunk.
    pub max_tokens: usize,
    /// Tokens repeated between neighbouring chunks of one section.
    pub overlap_tokens: usize,
}

/// A piece of the text: a whole block, or a window of a block too long for one chunk.
struct Unit {
    bytes: Range<usize>,
    tokens: usize,
    page: Option<u32>,
}

/// A section: the units under one heading.
struct Section {
    heading: Option<String>,
    /// Body tokens per chunk: the budget less what the heading adds to a continued chunk.
    budget: usize,
    units: Vec<Unit>,
}

impl Chunker {
    /// Chunks a document.
    pub fn chunk(&self, doc: &Document, tokens: &dyn Tokens) -> Vec<Chunk> {
        let budget = self.max_tokens.max(8);
        let overlap = self.overlap_tokens.min(budget / 2);
        let (text, sections) = self.sections(doc, tokens, budget, overlap);
        let mut chunks = Vec::new();
        for section in sections {
            let budget = section.budget;
            let mut start = 0;
            while start < section.units.len() {
                let mut end = start;
                let mut used = 0;
                while end < section.units.len()
                    && (end == start || used + section.units[end].tokens <= budget)
                {
                    used += section.units[end].tokens;
                    end += 1;
                }
                chunks.push(make_chunk(&text, &section, start..end));
                if end >= section.units.len() {
                    break;
                }
                // Start the next chunk with the trailing units that fit the overlap, but
                // always move forward.
                let mut next = end;
                let mut carried = 0;
                while next > start + 1 && carried + section.units[next - 1].tokens <= overlap {
                    carried += section.units[next - 1].tokens;
                    next -= 1;
                }
                start = next;
            }
        }
        chunks
    }

    /// Joins the blocks into one text and groups them into sections of units.
    fn sections(
        &self,
        doc: &Document,
        tokens: &dyn Tokens,
        budget: usize,
        overlap: usize,
    ) -> (String, Vec<Section>) {
        let mut text = String::new();
        let mut sections = vec![Section {
            heading: None,
            budget,
            units: Vec::new(),
        }];
        let mut headings: Vec<(u8, String)> = Vec::new();
        for block in &doc.blocks {
            let body = block.text.trim();
            if body.is_empty() {
                continue;
            }
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            let offset = text.len();
            text.push_str(body);
            if let BlockKind::Heading(level) = block.kind {
                while headings.last().is_some_and(|(l, _)| *l >= level) {
                    headings.pop();
                }
                headings.push((level, body.to_string()));
                let path = headings
                    .iter()
                    .map(|(_, h)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(" > ");
                let heading_tokens = tokens.spans(&path).len() + 1;
                sections.push(Section {
                    heading: Some(path),
                    budget: budget - heading_tokens.min(budget / 4),
                    units: Vec::new(),
                });
            }
            let spans = tokens.spans(body);
            let Some(section) = sections.last_mut() else {
                continue;
            };
            let budget = section.budget;
            let overlap = overlap.min(budget / 2);
            if spans.len() <= budget {
                section.units.push(Unit {
                    bytes: offset..offset + body.len(),
                    tokens: spans.len().max(1),
                    page: block.page,
                });
                continue;
            }
            // A block longer than a chunk: windows of `budget` tokens, `overlap` shared.
            let stride = (budget - overlap).max(1);
            let mut first = 0;
            while first < spans.len() {
                let last = (first + budget).min(spans.len());
                let from = if first == 0 { 0 } else { spans[first].start };
                let to = if last == spans.len() {
                    body.len()
                } else {
                    spans[last - 1].end
                };
                section.units.push(Unit {
                    bytes: offset + from..offset + to,
                    tokens: last - first,
                    page: block.page,
                });
                if last == spans.len() {
                    break;
                }
                first += stride;
            }
        }
        sections.retain(|s| !s.units.is_empty());
        (text, sections)
    }
}

fn make_chunk(text: &str, section: &Section, units: Range<usize>) -> Chunk {
    let parts = &section.units[units];
    let from = parts.first().map_or(0, |u| u.bytes.start);
    let to = parts.iter().map(|u| u.bytes.end).max().unwrap_or(from);
    let pages = parts.iter().filter_map(|u| u.page);
    let chars_before = text[..from].chars().count();
    let body = &text[from..to];
    Chunk {
        text: body.to_string(),
        heading: section.heading.clone(),
        page_start: pages.clone().min(),
        page_end: pages.max(),
        chars: chars_before..chars_before + body.chars().count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kb::extract::Block;

    /// Whitespace-separated words as tokens: enough to test packing; the real tokenizer is
    /// exercised by the ingestion tests.
    struct Words;

    impl Tokens for Words {
        fn spans(&self, text: &str) -> Vec<Range<usize>> {
            let mut out = Vec::new();
            let mut start = None;
            for (i, c) in text.char_indices() {
                match (c.is_whitespace(), start) {
                    (false, None) => start = Some(i),
                    (true, Some(s)) => {
                        out.push(s..i);
                        start = None;
                    }
                    _ => {}
                }
            }
            if let Some(s) = start {
                out.push(s..text.len());
            }
            out
        }
    }

    fn block(kind: BlockKind, text: &str, page: Option<u32>) -> Block {
        Block {
            kind,
            text: text.to_string(),
            page,
        }
    }

    fn doc(blocks: Vec<Block>) -> Document {
        Document {
            title: None,
            pages: None,
            blocks,
        }
    }

    fn words(n: usize, tag: &str) -> String {
        (0..n)
            .map(|i| format!("{tag}{i}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn headings_start_chunks_and_paragraphs_pack_whole() {
        let d = doc(vec![
            block(BlockKind::Heading(1), "Intro", Some(1)),
            block(BlockKind::Paragraph, &words(4, "a"), Some(1)),
            block(BlockKind::Paragraph, &words(4, "b"), Some(2)),
            block(BlockKind::Heading(2), "Detail", Some(2)),
            block(BlockKind::ListItem, &words(3, "c"), Some(3)),
        ]);
        let chunks = Chunker {
            max_tokens: 20,
            overlap_tokens: 0,
        }
        .chunk(&d, &Words);
        assert_eq!(chunks.len(), 2);
        assert_eq!(chunks[0].heading.as_deref(), Some("Intro"));
        assert_eq!(
            chunks[0].text,
            format!("Intro\n\n{}\n\n{}", words(4, "a"), words(4, "b"))
        );
        assert_eq!(
            (chunks[0].page_start, chunks[0].page_end),
            (Some(1), Some(2))
        );
        assert_eq!(chunks[1].heading.as_deref(), Some("Intro > Detail"));
        assert_eq!(chunks[1].indexed_text(), chunks[1].text);
        assert_eq!(
            indexed_text("more words", Some("Intro > Detail")),
            "Intro > Detail\nmore words"
        );
    }

    #[test]
    fn spans_point_into_the_joined_text() {
        let d = doc(vec![
            block(BlockKind::Paragraph, "héllo wörld", None),
            block(BlockKind::Paragraph, &words(30, "x"), None),
        ]);
        let chunks = Chunker {
            max_tokens: 10,
            overlap_tokens: 2,
        }
        .chunk(&d, &Words);
        let joined = format!("héllo wörld\n\n{}", words(30, "x"));
        for c in &chunks {
            let slice: String = joined
                .chars()
                .skip(c.chars.start)
                .take(c.chars.end - c.chars.start)
                .collect();
            assert_eq!(slice, c.text);
            assert!(Words.spans(&c.text).len() <= 10, "{c:?}");
        }
        assert_eq!(chunks[0].text, "héllo wörld");
    }

    #[test]
    fn long_blocks_are_windowed_with_overlap_and_nothing_is_lost() {
        let text = words(50, "w");
        let chunks = Chunker {
            max_tokens: 20,
            overlap_tokens: 5,
        }
        .chunk(&doc(vec![block(BlockKind::Paragraph, &text, None)]), &Words);
        assert!(chunks.len() >= 3);
        for pair in chunks.windows(2) {
            let a = Words.spans(&pair[0].text);
            let tail: Vec<&str> = a[a.len() - 5..]
                .iter()
                .map(|r| &pair[0].text[r.clone()])
                .collect();
            assert!(pair[1].text.starts_with(&tail.join(" ")), "{pair:?}");
        }
        for i in 0..50 {
            let w = format!("w{i}");
            assert!(
                chunks.iter().any(|c| c.text.split(' ').any(|t| t == w)),
                "{w} lost"
            );
        }
    }

    #[test]
    fn empty_blocks_make_no_chunks() {
        let chunks = Chunker {
            max_tokens: 20,
            overlap_tokens: 0,
        }
        .chunk(
            &doc(vec![block(BlockKind::Paragraph, "  \n ", None)]),
            &Words,
        );
        assert!(chunks.is_empty());
    }
}
