//! The line grammar of `LOG_FORMAT.md`: `kv` lines (`timestamp [code] {body}`), bare JSON-like
//! objects and strict JSON objects, all read by one hand-written recursive-descent parser into a
//! reusable flat [`Record`] (no allocation per line once the buffers have grown).
//!
//! Nested maps and lists are rendered as JSON text into the record's buffer; scalars keep their
//! type. Numbers follow JSON's syntax (`-?digits[.digits][e±digits]`, no leading zeros): a bare
//! word that does not (`1.2.15`, `007`, `kr-03`) is text.

use std::ops::Range;

/// A byte range into [`Record::buf`].
pub type Span = Range<u32>;

/// A scalar value of a top-level field.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Text, unescaped, in the record buffer.
    Str(Span),
    /// A nested map or list rendered as JSON text in the record buffer.
    Json(Span),
}

/// One `key = value` pair of the top-level object.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: Span,
    pub val: Val,
}

/// A parsed line. Reused from line to line: [`Record::clear`] keeps the allocations.
#[derive(Debug, Default)]
pub struct Record {
    /// The line itself, then what could not be read from it in place: keys and strings with
    /// escapes (unescaped), rendered JSON, a `kv` prefix's timestamp. A key or string without
    /// escapes, the common case, is a span of the line's own bytes at the start of the buffer:
    /// one copy of the line instead of a copy of each key and value.
    pub buf: String,
    /// Top-level fields in arrival order.
    pub fields: Vec<Field>,
    /// Timestamp text of a `kv` line's prefix.
    pub prefix_time: Option<Span>,
    /// Code of a `kv` line's prefix.
    pub prefix_code: Option<Span>,
}

impl Record {
    pub fn clear(&mut self) {
        self.buf.clear();
        self.fields.clear();
        self.prefix_time = None;
        self.prefix_code = None;
    }

    pub fn text(&self, span: &Span) -> &str {
        &self.buf[span.start as usize..span.end as usize]
    }

    /// The value of the first field named `key`.
    pub fn get(&self, key: &str) -> Option<&Val> {
        self.fields
            .iter()
            .find(|f| self.text(&f.key) == key)
            .map(|f| &f.val)
    }
}

/// What is wrong with a line, cheap to build on the hot path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyntaxError {
    /// The line ended inside a value or object.
    Truncated { at: usize },
    /// A backslash escape that is not one of JSON's or `\'`.
    BadEscape { at: usize },
    /// Something other than what the grammar allows at this byte.
    Unexpected { at: usize, expected: &'static str },
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep { at: usize },
}

impl SyntaxError {
    /// Short reason id, stored in `bronze.dead_letters.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            SyntaxError::Truncated { .. } => "truncated",
            SyntaxError::BadEscape { .. } => "bad_escape",
            SyntaxError::Unexpected { .. } => "syntax",
            SyntaxError::TooDeep { .. } => "too_deep",
        }
    }
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyntaxError::Truncated { at } => write!(f, "line ends inside a value at byte {at}"),
            SyntaxError::BadEscape { at } => write!(f, "invalid backslash escape at byte {at}"),
            SyntaxError::Unexpected { at, expected } => {
                write!(f, "expected {expected} at byte {at}")
            }
            SyntaxError::TooDeep { at } => {
                write!(f, "nesting deeper than {MAX_DEPTH} levels at byte {at}")
            }
        }
    }
}

/// Bytes of a string scanned a word at a time before [`Parser::string_stop`] turns to `memchr3`.
const SHORT_STRING: usize = 64;

/// The high bit of each byte of `word` (little-endian) that equals `byte`, and possibly of
/// bytes above such a byte: the lowest bit set is always a true match, which is all
/// [`Parser::string_stop`] reads.
fn byte_in(word: u64, byte: u8) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// Maps and lists nested deeper than this are rejected (keeps recursion bounded).
pub const MAX_DEPTH: usize = 64;

/// Parses one line (without its newline) into `rec`.
pub fn parse_line(line: &str, rec: &mut Record) -> Result<(), SyntaxError> {
    rec.clear();
    // Spans of the line index the buffer's start (see [`Record::buf`]).
    rec.buf.push_str(line);
    let mut p = Parser {
        s: line.as_bytes(),
        src: line,
        i: 0,
    };
    p.skip_ws();
    match p.peek() {
        Some(b'{') => p.object_top(rec)?,
        Some(c) if c.is_ascii_digit() => {
            p.kv_prefix(rec)?;
            p.skip_ws();
            p.object_top(rec)?;
        }
        None => return Err(SyntaxError::Truncated { at: 0 }),
        Some(_) => {
            return Err(SyntaxError::Unexpected {
                at: p.i,
                expected: "`{` or a `kv` line's timestamp",
            })
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(SyntaxError::Unexpected {
            at: p.i,
            expected: "end of line after the object",
        });
    }
    Ok(())
}

struct Parser<'a> {
    s: &'a [u8],
    src: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8, expected: &'static str) -> Result<(), SyntaxError> {
        match self.peek() {
            Some(x) if x == c => {
                self.i += 1;
                Ok(())
            }
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => Err(SyntaxError::Unexpected {
                at: self.i,
                expected,
            }),
        }
    }

    /// `timestamp SP '[' code ']'`: the timestamp is either `YYYY-MM-DD HH:MM:SS[.f]` (one space
    /// inside) or RFC 3339 (none); the code is `[a-z0-9_.:-]+`.
    fn kv_prefix(&mut self, rec: &mut Record) -> Result<(), SyntaxError> {
        let start = self.i;
        // The date part and the separator.
        let mut end = start;
        while end < self.s.len() && !matches!(self.s[end], b' ' | b'\t') {
            end += 1;
        }
        // `YYYY-MM-DD HH:MM:SS`: the first token is only the date; take the time token too.
        if end - start == 10 {
            let mut t = end;
            while t < self.s.len() && self.s[t] == b' ' {
                t += 1;
            }
            let mut te = t;
            while te < self.s.len() && !matches!(self.s[te], b' ' | b'\t') {
                te += 1;
            }
            rec.prefix_time = Some(push(&mut rec.buf, &self.src[start..end]));
            rec.buf.push(' ');
            let time = push(&mut rec.buf, &self.src[t..te]);
            rec.prefix_time = rec.prefix_time.take().map(|s| s.start..time.end);
            end = te;
        } else {
            rec.prefix_time = Some(push(&mut rec.buf, &self.src[start..end]));
        }
        self.i = end;
        self.skip_ws();
        self.eat(b'[', "`[code]` after the timestamp")?;
        let code_start = self.i;
        while let Some(c) = self.peek() {
            if c.is_ascii_lowercase()
                || c.is_ascii_uppercase()
                || c.is_ascii_digit()
                || matches!(c, b'_' | b'.' | b':' | b'-')
            {
                self.i += 1;
            } else {
                break;
            }
        }
        if self.i == code_start {
            return Err(SyntaxError::Unexpected {
                at: self.i,
                expected: "an event code `[a-z0-9_.:-]+`",
            });
        }
        rec.prefix_code = Some(push(&mut rec.buf, &self.src[code_start..self.i]));
        self.eat(b']', "`]` closing the code")?;
        Ok(())
    }

    /// The top-level object: its pairs become [`Record::fields`].
    fn object_top(&mut self, rec: &mut Record) -> Result<(), SyntaxError> {
        self.eat(b'{', "`{`")?;
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                None => return Err(SyntaxError::Truncated { at: self.i }),
                _ => {}
            }
            let key = self.key(&mut rec.buf)?;
            self.separator()?;
            let val = self.value_top(&mut rec.buf)?;
            rec.fields.push(Field { key, val });
            self.after_pair(b'}')?;
        }
    }

    /// After a pair: `,` (a trailing one is fine) or the closing bracket, left for the caller.
    fn after_pair(&mut self, close: u8) -> Result<(), SyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some(b',') => {
                self.i += 1;
                Ok(())
            }
            Some(c) if c == close => Ok(()),
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => Err(SyntaxError::Unexpected {
                at: self.i,
                expected: if close == b'}' {
                    "`,` or `}`"
                } else {
                    "`,` or `]`"
                },
            }),
        }
    }

    fn separator(&mut self) -> Result<(), SyntaxError> {
        self.skip_ws();
        match self.peek() {
            Some(b'=' | b':') => {
                self.i += 1;
                self.skip_ws();
                Ok(())
            }
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => Err(SyntaxError::Unexpected {
                at: self.i,
                expected: "`=` or `:` after the key",
            }),
        }
    }

    fn key(&mut self, buf: &mut String) -> Result<Span, SyntaxError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => self.quoted(q, buf),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while let Some(c) = self.peek() {
                    if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-') {
                        self.i += 1;
                    } else {
                        break;
                    }
                }
                Ok(start as u32..self.i as u32)
            }
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => Err(SyntaxError::Unexpected {
                at: self.i,
                expected: "a key (identifier or quoted string)",
            }),
        }
    }

    fn value_top(&mut self, buf: &mut String) -> Result<Val, SyntaxError> {
        match self.peek() {
            Some(q @ (b'"' | b'\'')) => Ok(Val::Str(self.quoted(q, buf)?)),
            Some(b'{' | b'[') => {
                let start = buf.len() as u32;
                self.nested_json(buf, 1)?;
                Ok(Val::Json(start..buf.len() as u32))
            }
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => {
                let start = self.i;
                let word = self.bare_word()?;
                Ok(match classify(word) {
                    Bare::Null => Val::Null,
                    Bare::Bool(b) => Val::Bool(b),
                    Bare::Int(v) => Val::Int(v),
                    Bare::Float(v) => Val::Float(v),
                    Bare::Text => Val::Str(start as u32..self.i as u32),
                })
            }
        }
    }

    /// A bare word: everything up to `,` `}` `]` or white space.
    fn bare_word(&mut self) -> Result<&'a str, SyntaxError> {
        let start = self.i;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\r' | b'\n') {
                break;
            }
            if matches!(c, b'{' | b'[' | b'"') {
                return Err(SyntaxError::Unexpected {
                    at: self.i,
                    expected: "`,` or the end of the value",
                });
            }
            self.i += 1;
        }
        if self.i == start {
            return Err(SyntaxError::Unexpected {
                at: self.i,
                expected: "a value",
            });
        }
        Ok(&self.src[start..self.i])
    }

    /// Renders a nested map or list, and any value inside it, as JSON into `buf`.
    fn nested_json(&mut self, buf: &mut String, depth: usize) -> Result<(), SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(SyntaxError::TooDeep { at: self.i });
        }
        match self.peek() {
            Some(b'{') => {
                self.i += 1;
                buf.push('{');
                let mut first = true;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b'}') => {
                            self.i += 1;
                            buf.push('}');
                            return Ok(());
                        }
                        None => return Err(SyntaxError::Truncated { at: self.i }),
                        _ => {}
                    }
                    if !first {
                        buf.push(',');
                    }
                    first = false;
                    let mark = buf.len();
                    let key = self.key(buf)?;
                    let key_text = buf[key.start as usize..key.end as usize].to_owned();
                    buf.truncate(mark);
                    write_json_string(buf, &key_text);
                    buf.push(':');
                    self.separator()?;
                    self.nested_json(buf, depth + 1)?;
                    self.after_pair(b'}')?;
                }
            }
            Some(b'[') => {
                self.i += 1;
                buf.push('[');
                let mut first = true;
                loop {
                    self.skip_ws();
                    match self.peek() {
                        Some(b']') => {
                            self.i += 1;
                            buf.push(']');
                            return Ok(());
                        }
                        None => return Err(SyntaxError::Truncated { at: self.i }),
                        _ => {}
                    }
                    if !first {
                        buf.push(',');
                    }
                    first = false;
                    self.nested_json(buf, depth + 1)?;
                    self.after_pair(b']')?;
                }
            }
            Some(q @ (b'"' | b'\'')) => {
                let mark = buf.len();
                let span = self.quoted(q, buf)?;
                let text = buf[span.start as usize..span.end as usize].to_owned();
                buf.truncate(mark);
                write_json_string(buf, &text);
                Ok(())
            }
            None => Err(SyntaxError::Truncated { at: self.i }),
            Some(_) => {
                let word = self.bare_word()?;
                match classify(word) {
                    Bare::Text => write_json_string(buf, word),
                    _ => buf.push_str(word),
                }
                Ok(())
            }
        }
    }

    /// A single- or double-quoted string with JSON's escapes plus `\'`. Without escapes it is
    /// read in place (a span of the line); with one, it is unescaped onto the end of `buf`.
    fn quoted(&mut self, quote: u8, buf: &mut String) -> Result<Span, SyntaxError> {
        self.i += 1;
        let begin = self.i;
        let end = self.string_stop(quote)?;
        if self.s[end] == quote {
            self.i = end + 1;
            return Ok(begin as u32..end as u32);
        }
        let start = buf.len() as u32;
        let mut pos = end;
        loop {
            buf.push_str(&self.src[self.i..pos]);
            self.i = pos;
            match self.s[self.i] {
                b'\\' => self.escape(buf)?,
                b'\n' => return Err(SyntaxError::Truncated { at: self.i }),
                _ => {
                    self.i += 1;
                    return Ok(start..buf.len() as u32);
                }
            }
            pos = self.string_stop(quote)?;
        }
    }

    /// Where the string that goes on at `self.i` stops: its closing quote, a backslash or a
    /// newline. Keys and values are mostly a few bytes long, where setting up a vector search
    /// costs more than the search: the first [`SHORT_STRING`] bytes are tested eight at a time
    /// in a word, the rest (long text) with `memchr3`.
    fn string_stop(&self, quote: u8) -> Result<usize, SyntaxError> {
        let s = self.s;
        let short = s.len().min(self.i + SHORT_STRING);
        let mut j = self.i;
        while j + 8 <= short {
            let word = u64::from_le_bytes(s[j..j + 8].try_into().expect("eight bytes"));
            let found = byte_in(word, quote) | byte_in(word, b'\\') | byte_in(word, b'\n');
            if found != 0 {
                return Ok(j + (found.trailing_zeros() / 8) as usize);
            }
            j += 8;
        }
        while j < short {
            let c = s[j];
            if c == quote || c == b'\\' || c == b'\n' {
                return Ok(j);
            }
            j += 1;
        }
        match memchr::memchr3(quote, b'\\', b'\n', &s[j..]) {
            Some(pos) => Ok(j + pos),
            None => Err(SyntaxError::Truncated { at: s.len() }),
        }
    }

    fn escape(&mut self, buf: &mut String) -> Result<(), SyntaxError> {
        let at = self.i;
        let Some(&c) = self.s.get(self.i + 1) else {
            return Err(SyntaxError::Truncated { at: self.s.len() });
        };
        self.i += 2;
        let ch = match c {
            b'"' => '"',
            b'\'' => '\'',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = self.hex4(at)?;
                if (0xD800..0xDC00).contains(&hi) {
                    // A high surrogate must be followed by `\uDC00`..`\uDFFF`.
                    if self.s.get(self.i) != Some(&b'\\') || self.s.get(self.i + 1) != Some(&b'u') {
                        return Err(SyntaxError::BadEscape { at });
                    }
                    self.i += 2;
                    let lo = self.hex4(at)?;
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err(SyntaxError::BadEscape { at });
                    }
                    let code = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                    char::from_u32(code).ok_or(SyntaxError::BadEscape { at })?
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err(SyntaxError::BadEscape { at });
                } else {
                    char::from_u32(hi).ok_or(SyntaxError::BadEscape { at })?
                }
            }
            _ => return Err(SyntaxError::BadEscape { at }),
        };
        buf.push(ch);
        Ok(())
    }

    fn hex4(&mut self, at: usize) -> Result<u32, SyntaxError> {
        let Some(h) = self.s.get(self.i..self.i + 4) else {
            return Err(SyntaxError::Truncated { at: self.s.len() });
        };
        let mut v = 0u32;
        for &c in h {
            let d = (c as char)
                .to_digit(16)
                .ok_or(SyntaxError::BadEscape { at })?;
            v = v * 16 + d;
        }
        self.i += 4;
        Ok(v)
    }
}

fn push(buf: &mut String, s: &str) -> Span {
    let start = buf.len() as u32;
    buf.push_str(s);
    start..buf.len() as u32
}

enum Bare {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text,
}

/// Types a bare word: JSON literals and numbers keep their type, anything else is text.
/// Integers, most of the numbers in logs, are read in the pass that checks their syntax.
fn classify(word: &str) -> Bare {
    let b = word.as_bytes();
    match b.first() {
        Some(b'n') if word == "null" => return Bare::Null,
        Some(b't') if word == "true" => return Bare::Bool(true),
        Some(b'f') if word == "false" => return Bare::Bool(false),
        _ => {}
    }
    let negative = b.first() == Some(&b'-');
    let digits_start = usize::from(negative);
    let mut i = digits_start;
    let mut magnitude: u64 = 0;
    let mut fits = true;
    while let Some(&c) = b.get(i) {
        if !c.is_ascii_digit() {
            break;
        }
        match magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u64::from(c - b'0')))
        {
            Some(m) => magnitude = m,
            None => fits = false,
        }
        i += 1;
    }
    let digits = i - digits_start;
    if digits == 0 || (digits > 1 && b[digits_start] == b'0') {
        return Bare::Text;
    }
    if i == b.len() && fits {
        let value = if negative {
            0i64.checked_sub_unsigned(magnitude)
        } else {
            i64::try_from(magnitude).ok()
        };
        if let Some(v) = value {
            return Bare::Int(v);
        }
    }
    // A fraction, an exponent, or an integer beyond `i64`: a float, if it is a JSON number.
    if !is_json_number(b) {
        return Bare::Text;
    }
    match word.parse::<f64>() {
        Ok(v) if v.is_finite() => Bare::Float(v),
        _ => Bare::Text,
    }
}

fn is_json_number(b: &[u8]) -> bool {
    let mut i = 0;
    if b.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && b[int_start] == b'0') {
        return false;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let s = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == s {
            return false;
        }
    }
    i == b.len()
}

/// Appends `s` as a JSON string literal.
pub fn write_json_string(buf: &mut String, s: &str) {
    buf.push('"');
    let mut last = 0;
    for (i, c) in s.char_indices() {
        let esc = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => {
                buf.push_str(&s[last..i]);
                buf.push_str(&format!("\\u{:04x}", c as u32));
                last = i + c.len_utf8();
                continue;
            }
            _ => continue,
        };
        buf.push_str(&s[last..i]);
        buf.push_str(esc);
        last = i + c.len_utf8();
    }
    buf.push_str(&s[last..]);
    buf.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Record {
        let mut rec = Record::default();
        parse_line(line, &mut rec).unwrap_or_else(|e| panic!("{line}: {e}"));
        rec
    }

    fn text<'r>(rec: &'r Record, key: &str) -> &'r str {
        match rec.get(key) {
            Some(Val::Str(s)) | Some(Val::Json(s)) => rec.text(s),
            other => panic!("{key}: {other:?}"),
        }
    }

    #[test]
    fn kv_examples_of_log_format() {
        let rec = parse("2026-11-28 02:10:11.123 [item_acquire] {server=kr-03, account_id=12345, char_id=98761, item_id=50012, item_name='오딘의 검', count=1, reason=drop}");
        assert_eq!(
            rec.text(rec.prefix_time.as_ref().unwrap()),
            "2026-11-28 02:10:11.123"
        );
        assert_eq!(rec.text(rec.prefix_code.as_ref().unwrap()), "item_acquire");
        assert_eq!(text(&rec, "server"), "kr-03");
        assert_eq!(rec.get("account_id"), Some(&Val::Int(12345)));
        assert_eq!(text(&rec, "item_name"), "오딘의 검");
        assert_eq!(text(&rec, "reason"), "drop");

        let rec = parse(
            r#"2026-11-28 02:10:11.130 [currency] {server=kr-03, account_id=12345, char_id=98761, currency=gold, delta=-1500, balance=88200, reason="shop:buy"}"#,
        );
        assert_eq!(rec.get("delta"), Some(&Val::Int(-1500)));
        assert_eq!(text(&rec, "reason"), "shop:buy");

        let rec = parse(
            r#"2026-11-28T02:10:12.004+09:00 [payment] {server=kr-01, account_id=777, product_id=pkg_start_01, price_krw=33000, store=google, order_id="GPA.3381-2219"}"#,
        );
        assert_eq!(
            rec.text(rec.prefix_time.as_ref().unwrap()),
            "2026-11-28T02:10:12.004+09:00"
        );
        assert_eq!(text(&rec, "order_id"), "GPA.3381-2219");

        let rec = parse("2026-11-28 02:10:12.551 [combat] {server=kr-07, char_id=5501, target=boss:fenrir, damage=18234.5, crit=true, party=[5501, 5502, 5503], pos={x: 102.3, y: 88.1}}");
        assert_eq!(rec.get("damage"), Some(&Val::Float(18234.5)));
        assert_eq!(rec.get("crit"), Some(&Val::Bool(true)));
        assert_eq!(text(&rec, "target"), "boss:fenrir");
        assert_eq!(text(&rec, "party"), "[5501,5502,5503]");
        assert_eq!(text(&rec, "pos"), r#"{"x":102.3,"y":88.1}"#);
    }

    #[test]
    fn bare_object_examples_of_log_format() {
        let rec = parse(
            r#"{code:"item", appId:"odin", playerId:"p_1029384", gameWorld:"kr-03", itemId:50012, itemNm:'오딘의 검', itemGrade:"legendary", count:1, reason:drop, modTime:"2026-11-28 02:10:12.004", logId:"01JDXK5Q1J2M7C"}"#,
        );
        assert_eq!(text(&rec, "code"), "item");
        assert_eq!(text(&rec, "itemNm"), "오딘의 검");
        assert_eq!(rec.get("itemId"), Some(&Val::Int(50012)));
        assert_eq!(text(&rec, "reason"), "drop");
        assert!(rec.prefix_code.is_none());
    }

    #[test]
    fn escapes_and_quoted_keys() {
        let rec = parse(
            r#"{"@timestamp":"x", name:'Odin\'s Eye', s:"a\"b\\c\/d\n\u00e9\ud83d\ude00", 'k 2'=1,}"#,
        );
        assert_eq!(text(&rec, "@timestamp"), "x");
        assert_eq!(text(&rec, "name"), "Odin's Eye");
        assert_eq!(text(&rec, "s"), "a\"b\\c/d\né😀");
        assert_eq!(rec.get("k 2"), Some(&Val::Int(1)));
    }

    #[test]
    fn numbers_follow_json_and_other_words_are_text() {
        let rec =
            parse("{a=1, b=-2.5e3, c=1.2.15, d=007, e=0, f=1e, g=null, h=99999999999999999999}");
        assert_eq!(rec.get("a"), Some(&Val::Int(1)));
        assert_eq!(rec.get("b"), Some(&Val::Float(-2500.0)));
        assert_eq!(text(&rec, "c"), "1.2.15");
        assert_eq!(text(&rec, "d"), "007");
        assert_eq!(rec.get("e"), Some(&Val::Int(0)));
        assert_eq!(text(&rec, "f"), "1e");
        assert_eq!(rec.get("g"), Some(&Val::Null));
        assert_eq!(rec.get("h"), Some(&Val::Float(1e20)));
        // Integers are read in the pass that checks their syntax: the bounds of `i64`, and
        // one past them, which are floats as JSON numbers.
        let rec = parse(
            "{a=9223372036854775807, b=-9223372036854775808, c=9223372036854775808, \
             d=-9223372036854775809, e=-0, f=-, g=-01, h=12a, i=1E+2}",
        );
        assert_eq!(rec.get("a"), Some(&Val::Int(i64::MAX)));
        assert_eq!(rec.get("b"), Some(&Val::Int(i64::MIN)));
        assert_eq!(rec.get("c"), Some(&Val::Float(9_223_372_036_854_775_808.0)));
        assert_eq!(
            rec.get("d"),
            Some(&Val::Float(-9_223_372_036_854_775_808.0))
        );
        assert_eq!(rec.get("e"), Some(&Val::Int(0)));
        assert_eq!(text(&rec, "f"), "-");
        assert_eq!(text(&rec, "g"), "-01");
        assert_eq!(text(&rec, "h"), "12a");
        assert_eq!(rec.get("i"), Some(&Val::Float(100.0)));
    }

    #[test]
    fn strings_stop_at_their_quote_wherever_it_falls() {
        // Strings are scanned eight bytes at a time, then with memchr past 64 bytes: the quote,
        // an escape or a newline at every position of both must be found.
        for len in 0..150 {
            let body = "é".repeat(len / 2) + &"x".repeat(len % 2);
            let rec = parse(&format!(r#"{{"k{len}":"{body}", n:1}}"#));
            assert_eq!(text(&rec, &format!("k{len}")), body);
            assert_eq!(rec.get("n"), Some(&Val::Int(1)));
            let rec = parse(&format!(r#"{{k:'{body}\'{body}', n:2}}"#));
            assert_eq!(text(&rec, "k"), format!("{body}'{body}"));
            let mut rec = Record::default();
            let err = parse_line(&format!("{{k:\"{body}\n\"}}"), &mut rec).unwrap_err();
            assert_eq!(err, SyntaxError::Truncated { at: 4 + body.len() });
        }
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        let mut rec = Record::default();
        let cases = [
            (r#"{code:"item", count:1"#, "truncated"),
            (r#"{code:"item", name:"abc"#, "truncated"),
            (r#"{code:"item", name:"a\qb"}"#, "bad_escape"),
            (r#"{code:"item", name:"\ud800x"}"#, "bad_escape"),
            (r#"{code "item"}"#, "syntax"),
            (r#"{code:"item"} trailing"#, "syntax"),
            ("hello world", "syntax"),
            ("2026-11-28 02:10:11 item {a=1}", "syntax"),
            ("2026-11-28 02:10:11 [] {a=1}", "syntax"),
        ];
        for (line, reason) in cases {
            let err = parse_line(line, &mut rec).expect_err(line);
            assert_eq!(err.reason(), reason, "{line}: {err}");
        }
    }

    #[test]
    fn deep_nesting_is_bounded() {
        let line = format!("{{a={}{}}}", "[".repeat(100), "]".repeat(100));
        let mut rec = Record::default();
        assert_eq!(
            parse_line(&line, &mut rec).unwrap_err().reason(),
            "too_deep"
        );
    }
}
