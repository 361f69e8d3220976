//! A protobuf text-format parser driven by a message descriptor.
//!
//! Written here because the Rust text-format parsers at hand reject forms that Triton model
//! repositories use everywhere: prost-reflect 0.16 refuses a message list without a colon
//! (`input [ { … } ]`, valid by the text-format grammar), and rust-protobuf 3.7 has no list
//! syntax at all. This follows the grammar of the protobuf text format specification for
//! everything a `config.pbtxt` can contain (no extensions, no `Any` expansion, no bytes).
//! Every error carries the 1-based line and column of the offending token.

use prost_reflect::{
    DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor, ReflectMessage, Value,
};

/// A parse error at a position in the text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextFormatError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What was expected or found.
    pub message: String,
}

/// Parses `text` as a message of type `descriptor`.
pub fn parse(descriptor: MessageDescriptor, text: &str) -> Result<DynamicMessage, TextFormatError> {
    let mut parser = Parser {
        lexer: Lexer { text, pos: 0 },
        peeked: None,
    };
    let mut message = DynamicMessage::new(descriptor);
    parser
        .fields(&mut message, None)
        .map_err(|(pos, message)| {
            let (line, column) = line_column(text, pos);
            TextFormatError {
                line,
                column,
                message,
            }
        })?;
    Ok(message)
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// An error and the byte offset it belongs to.
type Failure = (usize, String);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number(String),
    Symbol(char),
    End,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(s) => format!("`{s}`"),
            Token::Str(_) => "a string".into(),
            Token::Number(n) => format!("the number {n}"),
            Token::Symbol(c) => format!("'{c}'"),
            Token::End => "the end of the file".into(),
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn skip_space_and_comments(&mut self) {
        let bytes = self.text.as_bytes();
        while self.pos < bytes.len() {
            match bytes[self.pos] {
                b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => self.pos += 1,
                b'#' => {
                    while self.pos < bytes.len() && bytes[self.pos] != b'\n' {
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    /// The next token and the byte offset where it starts.
    fn next(&mut self) -> Result<(Token, usize), Failure> {
        self.skip_space_and_comments();
        let start = self.pos;
        let rest = &self.text[start..];
        let Some(c) = rest.chars().next() else {
            return Ok((Token::End, start));
        };
        if c.is_ascii_alphabetic() || c == '_' {
            let len = rest
                .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_'))
                .unwrap_or(rest.len());
            self.pos += len;
            return Ok((Token::Ident(rest[..len].to_string()), start));
        }
        if c.is_ascii_digit() || (c == '.' && rest[1..].starts_with(|d: char| d.is_ascii_digit())) {
            let len = rest
                .find(|ch: char| {
                    !(ch.is_ascii_alphanumeric()
                        || ch == '.'
                        || ch == '_'
                        || ch == '+'
                        || ch == '-')
                })
                .unwrap_or(rest.len());
            // A sign only belongs to the number right after an exponent marker.
            let mut end = len;
            for (i, ch) in rest[..len].char_indices().skip(1) {
                if (ch == '+' || ch == '-') && !matches!(rest.as_bytes()[i - 1], b'e' | b'E') {
                    end = i;
                    break;
                }
            }
            self.pos += end;
            return Ok((Token::Number(rest[..end].to_string()), start));
        }
        if c == '"' || c == '\'' {
            return self.string(c, start).map(|s| (Token::Str(s), start));
        }
        self.pos += c.len_utf8();
        Ok((Token::Symbol(c), start))
    }

    fn string(&mut self, quote: char, start: usize) -> Result<String, Failure> {
        let mut out: Vec<u8> = Vec::new();
        let bytes = self.text.as_bytes();
        let mut i = start + 1;
        loop {
            let Some(&b) = bytes.get(i) else {
                return Err((start, "this string is not closed".into()));
            };
            match b {
                b'\n' => return Err((start, "this string is not closed on its line".into())),
                b if b == quote as u8 => {
                    self.pos = i + 1;
                    break;
                }
                b'\\' => {
                    let esc = *bytes
                        .get(i + 1)
                        .ok_or_else(|| (i, "a string ends inside an escape".to_string()))?;
                    i += 2;
                    match esc {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'a' => out.push(0x07),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'v' => out.push(0x0b),
                        b'\\' | b'\'' | b'"' | b'?' => out.push(esc),
                        b'x' | b'X' => {
                            let digits: String = self.text[i..]
                                .chars()
                                .take_while(char::is_ascii_hexdigit)
                                .take(2)
                                .collect();
                            let v = u8::from_str_radix(&digits, 16)
                                .map_err(|_| (i - 2, "\\x needs hexadecimal digits".to_string()))?;
                            out.push(v);
                            i += digits.len();
                        }
                        b'0'..=b'7' => {
                            let digits: String = self.text[i - 1..]
                                .chars()
                                .take_while(|c| ('0'..='7').contains(c))
                                .take(3)
                                .collect();
                            let v = u16::from_str_radix(&digits, 8).unwrap_or(0);
                            let v = u8::try_from(v)
                                .map_err(|_| (i - 2, "octal escape above \\377".to_string()))?;
                            out.push(v);
                            i += digits.len() - 1;
                        }
                        b'u' | b'U' => {
                            let n = if esc == b'u' { 4 } else { 8 };
                            let digits = self.text.get(i..i + n).unwrap_or("");
                            let ch = u32::from_str_radix(digits, 16)
                                .ok()
                                .and_then(char::from_u32)
                                .ok_or_else(|| (i - 2, format!("\\{} needs {n} hexadecimal digits of a valid character", esc as char)))?;
                            let mut buf = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                            i += n;
                        }
                        other => {
                            return Err((i - 2, format!("unknown escape \\{}", other as char)));
                        }
                    }
                }
                _ => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8(out).map_err(|_| (start, "the string is not valid UTF-8".to_string()))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<(Token, usize)>,
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<&(Token, usize), Failure> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn bump(&mut self) -> Result<(Token, usize), Failure> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next(),
        }
    }

    fn eat(&mut self, symbol: char) -> Result<bool, Failure> {
        if self.peek()?.0 == Token::Symbol(symbol) {
            self.bump()?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Fields until `close` (or the end of the text at top level).
    fn fields(&mut self, message: &mut DynamicMessage, close: Option<char>) -> Result<(), Failure> {
        loop {
            let (token, pos) = self.bump()?;
            match (&token, close) {
                (Token::End, None) => return Ok(()),
                (Token::Symbol(c), Some(want)) if *c == want => return Ok(()),
                (Token::Ident(name), _) => self.field(message, name, pos)?,
                (Token::Symbol('['), _) => {
                    return Err((
                        pos,
                        "extensions and Any expansions are not supported here".into(),
                    ));
                }
                _ => {
                    let expected = match close {
                        Some(c) => format!("a field name or '{c}'"),
                        None => "a field name".into(),
                    };
                    return Err((
                        pos,
                        format!("expected {expected}, found {}", token.describe()),
                    ));
                }
            }
        }
    }

    fn field(
        &mut self,
        message: &mut DynamicMessage,
        name: &str,
        pos: usize,
    ) -> Result<(), Failure> {
        let descriptor = message.descriptor();
        let field = descriptor.get_field_by_name(name).ok_or_else(|| {
            (
                pos,
                format!("unknown field `{name}` in {}", descriptor.full_name()),
            )
        })?;
        let is_message = matches!(field.kind(), Kind::Message(_));
        let colon = self.eat(':')?;
        if !colon && !is_message {
            let (found, at) = self.peek()?.clone();
            return Err((
                at,
                format!("expected ':' after `{name}`, found {}", found.describe()),
            ));
        }
        if self.peek()?.0 == Token::Symbol('[') {
            let (_, list_pos) = self.bump()?;
            if !field.is_list() && !field.is_map() {
                return Err((
                    list_pos,
                    format!("`{name}` is not a repeated field and takes one value"),
                ));
            }
            if !self.eat(']')? {
                loop {
                    let value = self.value(&field)?;
                    self.store(message, &field, value, pos)?;
                    if self.eat(']')? {
                        break;
                    }
                    let (token, at) = self.bump()?;
                    if token != Token::Symbol(',') {
                        return Err((
                            at,
                            format!(
                                "expected ',' or ']' in the list of `{name}`, found {}",
                                token.describe()
                            ),
                        ));
                    }
                }
            }
        } else {
            let value = self.value(&field)?;
            self.store(message, &field, value, pos)?;
        }
        // Fields may be separated by ',' or ';'.
        if !self.eat(',')? {
            self.eat(';')?;
        }
        Ok(())
    }

    /// Adds a parsed value to the message: appended to lists and maps, set once otherwise.
    fn store(
        &mut self,
        message: &mut DynamicMessage,
        field: &FieldDescriptor,
        value: Value,
        pos: usize,
    ) -> Result<(), Failure> {
        if field.is_map() {
            let Value::Message(entry) = value else {
                return Err((pos, "a map entry must be a message".into()));
            };
            let entry_desc = entry.descriptor();
            let key = entry
                .get_field(&entry_desc.map_entry_key_field())
                .into_owned();
            let map_key = match key {
                Value::String(s) => MapKey::String(s),
                Value::I32(v) => MapKey::I32(v),
                Value::I64(v) => MapKey::I64(v),
                Value::U32(v) => MapKey::U32(v),
                Value::U64(v) => MapKey::U64(v),
                Value::Bool(v) => MapKey::Bool(v),
                _ => return Err((pos, "unsupported map key type".into())),
            };
            let value = entry
                .get_field(&entry_desc.map_entry_value_field())
                .into_owned();
            if let Value::Map(map) = message.get_field_mut(field) {
                map.insert(map_key, value);
            }
            return Ok(());
        }
        if field.is_list() {
            if let Value::List(list) = message.get_field_mut(field) {
                list.push(value);
            }
            return Ok(());
        }
        if message.has_field(field) {
            return Err((pos, format!("`{}` is set more than once", field.name())));
        }
        if let Some(oneof) = field.containing_oneof()
            && let Some(other) = oneof.fields().find(|f| f != field && message.has_field(f))
        {
            return Err((
                pos,
                format!(
                    "`{}` and `{}` exclude each other ({})",
                    other.name(),
                    field.name(),
                    oneof.name()
                ),
            ));
        }
        message.set_field(field, value);
        Ok(())
    }

    fn value(&mut self, field: &FieldDescriptor) -> Result<Value, Failure> {
        let kind = field.kind();
        if let Kind::Message(desc) = kind {
            let (token, pos) = self.bump()?;
            let close = match token {
                Token::Symbol('{') => '}',
                Token::Symbol('<') => '>',
                other => {
                    return Err((
                        pos,
                        format!(
                            "expected '{{' to open `{}`, found {}",
                            field.name(),
                            other.describe()
                        ),
                    ));
                }
            };
            let mut inner = DynamicMessage::new(desc);
            self.fields(&mut inner, Some(close))?;
            return Ok(Value::Message(inner));
        }
        let negative = self.eat('-')?;
        let (token, pos) = self.bump()?;
        let bad = |what: &str, token: &Token| {
            (
                pos,
                format!(
                    "`{}` expects {what}, found {}",
                    field.name(),
                    token.describe()
                ),
            )
        };
        match kind {
            Kind::String => match token {
                Token::Str(mut s) if !negative => {
                    // Adjacent strings are concatenated.
                    while let Token::Str(_) = self.peek()?.0 {
                        if let (Token::Str(next), _) = self.bump()? {
                            s.push_str(&next);
                        }
                    }
                    Ok(Value::String(s))
                }
                other => Err(bad("a string in quotes", &other)),
            },
            Kind::Bool => match token {
                Token::Ident(ref s) if !negative && matches!(s.as_str(), "true" | "True" | "t") => {
                    Ok(Value::Bool(true))
                }
                Token::Ident(ref s)
                    if !negative && matches!(s.as_str(), "false" | "False" | "f") =>
                {
                    Ok(Value::Bool(false))
                }
                Token::Number(ref n) if !negative && n == "1" => Ok(Value::Bool(true)),
                Token::Number(ref n) if !negative && n == "0" => Ok(Value::Bool(false)),
                other => Err(bad("true or false", &other)),
            },
            Kind::Enum(e) => match token {
                Token::Ident(ref s) if !negative => e
                    .get_value_by_name(s)
                    .map(|v| Value::EnumNumber(v.number()))
                    .ok_or_else(|| {
                        let names: Vec<String> = e.values().map(|v| v.name().to_string()).collect();
                        (
                            pos,
                            format!(
                                "unknown value `{s}` for `{}`; expected one of {}",
                                field.name(),
                                names.join(", ")
                            ),
                        )
                    }),
                Token::Number(ref n) => {
                    let v: i32 = parse_int(n, negative)
                        .and_then(|v| i32::try_from(v).ok())
                        .ok_or_else(|| bad("an enum value", &token))?;
                    Ok(Value::EnumNumber(v))
                }
                other => Err(bad("an enum value", &other)),
            },
            Kind::Float | Kind::Double => {
                let v = match &token {
                    Token::Number(n) => n.trim_end_matches(['f', 'F']).parse::<f64>().ok(),
                    Token::Ident(s) => match s.to_ascii_lowercase().as_str() {
                        "inf" | "infinity" => Some(f64::INFINITY),
                        "nan" => Some(f64::NAN),
                        _ => None,
                    },
                    _ => None,
                }
                .ok_or_else(|| bad("a number", &token))?;
                let v = if negative { -v } else { v };
                Ok(if kind == Kind::Float {
                    Value::F32(v as f32)
                } else {
                    Value::F64(v)
                })
            }
            Kind::Bytes => Err((
                pos,
                format!(
                    "`{}` is a bytes field, which config.pbtxt does not use",
                    field.name()
                ),
            )),
            Kind::Message(_) => unreachable!("handled above"),
            integer => {
                let Token::Number(ref n) = token else {
                    return Err(bad("an integer", &token));
                };
                let v = parse_int(n, negative).ok_or_else(|| bad("an integer", &token))?;
                let out_of_range = || {
                    (
                        pos,
                        format!(
                            "{}{n} is out of range for `{}`",
                            if negative { "-" } else { "" },
                            field.name()
                        ),
                    )
                };
                Ok(match integer {
                    Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
                        Value::I32(i32::try_from(v).map_err(|_| out_of_range())?)
                    }
                    Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                        Value::I64(i64::try_from(v).map_err(|_| out_of_range())?)
                    }
                    Kind::Uint32 | Kind::Fixed32 => {
                        Value::U32(u32::try_from(v).map_err(|_| out_of_range())?)
                    }
                    _ => Value::U64(u64::try_from(v).map_err(|_| out_of_range())?),
                })
            }
        }
    }
}

/// Decimal, hexadecimal (`0x`) or octal (leading `0`) integer, with the sign applied.
fn parse_int(text: &str, negative: bool) -> Option<i128> {
    let magnitude = if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        i128::from_str_radix(hex, 16).ok()?
    } else if text.len() > 1 && text.starts_with('0') {
        i128::from_str_radix(&text[1..], 8).ok()?
    } else {
        text.parse::<i128>().ok()?
    };
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_in_every_base() {
        assert_eq!(parse_int("42", false), Some(42));
        assert_eq!(parse_int("0x2A", false), Some(42));
        assert_eq!(parse_int("052", false), Some(42));
        assert_eq!(parse_int("1", true), Some(-1));
        assert_eq!(parse_int("4x", false), None);
    }

    #[test]
    fn positions_are_one_based_characters() {
        assert_eq!(line_column("ab\ncdé f", 8), (2, 5));
        assert_eq!(line_column("x", 0), (1, 1));
    }

    #[test]
    fn lexer_reads_strings_numbers_and_comments() {
        let mut lexer = Lexer {
            text: "# c\n name: 'a\\n\\x41\\101' 1.5e-3 -2 0x1f",
            pos: 0,
        };
        let mut tokens = Vec::new();
        loop {
            let (t, _) = lexer.next().unwrap();
            if t == Token::End {
                break;
            }
            tokens.push(t);
        }
        assert_eq!(
            tokens,
            vec![
                Token::Ident("name".into()),
                Token::Symbol(':'),
                Token::Str("a\nAA".into()),
                Token::Number("1.5e-3".into()),
                Token::Symbol('-'),
                Token::Number("2".into()),
                Token::Number("0x1f".into()),
            ]
        );
    }
}
