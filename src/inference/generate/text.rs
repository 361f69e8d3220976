//! From generated tokens to streamed text: incremental decoding that emits only whole
//! characters and adds up exactly to decoding all tokens at once, and stop sequences cut out of
//! the text with only a possible beginning of one held back.

use tokenizers::Tokenizer;

/// What one more token produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Text to send now (may be empty).
    Text(String),
    /// A stop sequence appeared: the text before it, to send last.
    Stopped(String),
}

/// One sequence's text so far.
pub(super) struct TextStream {
    ids: Vec<u32>,
    /// Decoding starts at `prefix`: a few tokens before the undecoded ones, because how a token
    /// decodes can depend on the one before it (a leading space is stripped only at the start).
    prefix: usize,
    /// Tokens before `read` have been turned into text.
    read: usize,
    /// `decode(ids[prefix..read])`, kept between steps.
    prefix_text: String,
    stops: Vec<String>,
    /// Decoded text not sent yet, because it may be the start of a stop sequence.
    held: String,
}

impl TextStream {
    /// An empty text that ends at any of `stops`.
    pub fn new(stops: Vec<String>) -> TextStream {
        TextStream {
            ids: Vec::new(),
            prefix: 0,
            read: 0,
            prefix_text: String::new(),
            stops,
            held: String::new(),
        }
    }

    /// Adds a token.
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Pushed, String> {
        self.ids.push(id);
        let text = decode(tokenizer, &self.ids[self.prefix..])?;
        // Bytes of an unfinished character decode as U+FFFD: wait for the rest of them.
        if text.len() > self.prefix_text.len()
            && !text.ends_with('\u{FFFD}')
            && let Some(new) = text.get(self.prefix_text.len()..)
            && text.starts_with(self.prefix_text.as_str())
        {
            self.held.push_str(new);
            self.prefix = self.read;
            self.read = self.ids.len();
            self.prefix_text = decode(tokenizer, &self.ids[self.prefix..self.read])?;
        }
        Ok(self.release())
    }

    /// The text still pending when the sequence ends for another reason than a stop sequence:
    /// unfinished characters as decoding all tokens would show them, and the held-back text.
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<String, String> {
        if self.read < self.ids.len() {
            let text = decode(tokenizer, &self.ids[self.prefix..])?;
            if let Some(new) = text.get(self.prefix_text.len()..) {
                self.held.push_str(new);
            }
            self.read = self.ids.len();
        }
        Ok(std::mem::take(&mut self.held))
    }

    /// Sends what cannot be part of a stop sequence, or the text before a stop sequence.
    fn release(&mut self) -> Pushed {
        if self.stops.is_empty() {
            return Pushed::Text(std::mem::take(&mut self.held));
        }
        // A stop sequence can only begin in the held text: any earlier start would have been
        // held back.
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
        {
            self.held.truncate(at);
            return Pushed::Stopped(std::mem::take(&mut self.held));
        }
        // Keep the longest end of the text that a stop sequence begins with.
        let keep_from = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let tail = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(tail))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep_from);
        Pushed::Text(std::mem::replace(&mut self.held, rest))
    }
}

fn decode(tokenizer: &Tokenizer, ids: &[u32]) -> Result<String, String> {
    tokenizer
        .decode(ids, true)
        .map_err(|e| format!("cannot decode generated tokens: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let path = super::super::tests::fixture_dir().join("tokenizer.json");
        Tokenizer::from_file(&path).expect("fixture tokenizer")
    }

    /// Streams ids and returns (deltas, whether a stop ended it).
    fn stream(tok: &Tokenizer, ids: &[u32], stops: &[&str]) -> (Vec<String>, bool) {
        let mut s = TextStream::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = Vec::new();
        for &id in ids {
            match s.push(tok, id).expect("push") {
                Pushed::Text(t) => out.push(t),
                Pushed::Stopped(t) => {
                    out.push(t);
                    return (out, true);
                }
            }
        }
        out.push(s.finish(tok).expect("finish"));
        (out, false)
    }

    #[test]
    fn deltas_add_up_to_the_whole_decode() {
        let tok = tokenizer();
        for text in [
            "Once upon a time, there was a little girl.",
            "  two  spaces and\nnew lines\n\n",
            "Ünïcödé: 日本語, emoji 🦀🎉 and more",
        ] {
            let ids = tok.encode(text, false).expect("encode").get_ids().to_vec();
            let whole = tok.decode(&ids, true).expect("decode");
            let (deltas, stopped) = stream(&tok, &ids, &[]);
            assert!(!stopped);
            assert_eq!(deltas.concat(), whole, "{text:?}");
            for d in &deltas {
                assert!(!d.contains('\u{FFFD}'), "{d:?} in {text:?}");
            }
        }
    }

    #[test]
    fn byte_tokens_wait_for_whole_characters() {
        let tok = tokenizer();
        let ids = tok.encode("🦀", false).expect("encode").get_ids().to_vec();
        assert!(ids.len() >= 4, "the crab should be byte tokens: {ids:?}");
        let (deltas, _) = stream(&tok, &ids, &[]);
        let non_empty: Vec<&String> = deltas.iter().filter(|d| !d.is_empty()).collect();
        assert_eq!(non_empty.len(), 1, "{deltas:?}");
        assert_eq!(deltas.concat(), tok.decode(&ids, true).expect("decode"));
    }

    #[test]
    fn unfinished_bytes_at_the_end_come_out_as_decoding_shows_them() {
        let tok = tokenizer();
        let ids = tok.encode("🦀", false).expect("encode").get_ids().to_vec();
        let cut = &ids[..ids.len() - 1];
        let (deltas, _) = stream(&tok, cut, &[]);
        assert_eq!(deltas.concat(), tok.decode(cut, true).expect("decode"));
    }

    #[test]
    fn stop_sequences_are_cut_and_held_back_only_while_possible() {
        let tok = tokenizer();
        let ids = tok
            .encode("The cat sat. The dog ran.", false)
            .expect("encode")
            .get_ids()
            .to_vec();
        let (deltas, stopped) = stream(&tok, &ids, &["dog"]);
        assert!(stopped);
        assert_eq!(deltas.concat(), "The cat sat. The ");
        // A stop sequence that never completes: everything comes out, nothing lost.
        let (deltas, stopped) = stream(&tok, &ids, &["ran!", "cat sat?"]);
        assert!(!stopped);
        assert_eq!(deltas.concat(), "The cat sat. The dog ran.");
        // Earliest occurrence wins among several.
        let (deltas, _) = stream(&tok, &ids, &["ran", ". "]);
        assert_eq!(deltas.concat(), "The cat sat");
    }

    #[test]
    fn holding_back_keeps_only_a_possible_start() {
        let mut s = TextStream::new(vec!["abc".into()]);
        s.held = "xxab".into();
        assert_eq!(s.release(), Pushed::Text("xx".into()));
        assert_eq!(s.held, "ab");
        s.held.push('d');
        assert_eq!(s.release(), Pushed::Text("abd".into()));
        s.held = "zzabc tail".into();
        assert_eq!(s.release(), Pushed::Stopped("zz".into()));
    }
}
