//! Full-text languages: which stemmer and stop words a collection's text index uses.

use tantivy::tokenizer::Language as Snowball;

/// The full-text language of a collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// Lower-cased words, no stemming, no stop words.
    None,
    /// Snowball stemming and the stop words of a language.
    Stemmed(Snowball),
}

const TABLE: &[(&str, Snowball)] = &[
    ("ar", Snowball::Arabic),
    ("da", Snowball::Danish),
    ("de", Snowball::German),
    ("el", Snowball::Greek),
    ("en", Snowball::English),
    ("es", Snowball::Spanish),
    ("fi", Snowball::Finnish),
    ("fr", Snowball::French),
    ("hu", Snowball::Hungarian),
    ("it", Snowball::Italian),
    ("nl", Snowball::Dutch),
    ("no", Snowball::Norwegian),
    ("pt", Snowball::Portuguese),
    ("ro", Snowball::Romanian),
    ("ru", Snowball::Russian),
    ("sv", Snowball::Swedish),
    ("ta", Snowball::Tamil),
    ("tr", Snowball::Turkish),
];

impl Language {
    /// Every accepted code.
    pub const NAMES: &[&str] = &[
        "none", "ar", "da", "de", "el", "en", "es", "fi", "fr", "hu", "it", "nl", "no", "pt", "ro",
        "ru", "sv", "ta", "tr",
    ];

    /// Parses an ISO 639-1 code (or "none").
    pub fn parse(code: &str) -> Option<Language> {
        if code == "none" {
            return Some(Language::None);
        }
        TABLE
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, l)| Language::Stemmed(*l))
    }

    /// The code, as stored and shown.
    pub fn code(self) -> &'static str {
        match self {
            Language::None => "none",
            Language::Stemmed(l) => TABLE
                .iter()
                .find(|(_, t)| *t == l)
                .map_or("none", |(c, _)| c),
        }
    }
}
