//! Validation and compaction of JSON text, in one pass.
//!
//! Durable Functions measures and stores inputs, outputs and custom statuses
//! in their *compact form*: the same JSON value with no insignificant
//! whitespace and strings escaped minimally (the way `serde_json::to_string`
//! writes them), while object key order, duplicate keys and the exact digits
//! of numbers are kept. [`compact`] checks a text against the JSON grammar
//! (RFC 8259) and produces that form at the same time.
//!
//! The parser is iterative: nesting is tracked in a fixed-size stack bounded
//! by [`MAX_DEPTH`], so hostile input can neither overflow the call stack nor
//! make it allocate. Every byte is looked at a constant number of times, so
//! the work is linear in the length of the text.

use std::borrow::Cow;
use std::fmt;

/// Deepest nesting of arrays and objects that [`compact`] accepts.
///
/// serde_json's default recursion limit (128) refuses the 128th nested level,
/// so 127 levels is the deepest it reads back; accepting more would let this
/// crate store values it cannot parse again.
pub(crate) const MAX_DEPTH: usize = 127;

/// How many characters of the input an error message quotes at most.
const EXCERPT_CHARS: usize = 40;

/// Why a text is not accepted by [`compact`], and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct JsonProblem {
    /// What is wrong.
    what: Problem,
    /// Byte offset of the problem in the text.
    offset: usize,
    /// Line of the problem, from 1.
    line: usize,
    /// Column of the problem in characters, from 1.
    column: usize,
}

/// The kinds of [`JsonProblem`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Problem {
    /// The text ended where `expected` was needed.
    UnexpectedEnd { expected: &'static str },
    /// `found` (an excerpt of the text) stands where `expected` was needed.
    Unexpected {
        found: String,
        expected: &'static str,
    },
    /// Something other than whitespace follows the value.
    TrailingContent { found: String },
    /// A number starts with `0` followed by another digit.
    LeadingZero,
    /// A number lacks a digit after `after`.
    MissingDigit { after: &'static str },
    /// A raw control character (U+0000..U+001F) inside a string.
    ControlCharacter(u8),
    /// A backslash followed by something that is not a JSON escape.
    InvalidEscape { found: String },
    /// A `\u` not followed by four hex digits.
    InvalidUnicodeEscape { found: String },
    /// An escaped UTF-16 surrogate without its partner.
    LoneSurrogate(u32),
    /// The string opened here has no closing quote.
    UnterminatedString,
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

impl fmt::Display for JsonProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.what {
            Problem::UnexpectedEnd { expected } => {
                write!(f, "unexpected end of input, expected {expected}")
            }
            Problem::Unexpected { found, expected } => {
                write!(f, "unexpected {found:?}, expected {expected}")
            }
            Problem::TrailingContent { found } => {
                write!(f, "unexpected {found:?} after the JSON value")
            }
            Problem::LeadingZero => f.write_str("leading zero in number"),
            Problem::MissingDigit { after } => write!(f, "expected a digit after {after}"),
            Problem::ControlCharacter(byte) => {
                write!(f, "unescaped control character U+{byte:04X} in string")
            }
            Problem::InvalidEscape { found } => write!(f, "invalid escape {found:?} in string"),
            Problem::InvalidUnicodeEscape { found } => {
                write!(f, "invalid escape {found:?}, expected \\u and 4 hex digits")
            }
            Problem::LoneSurrogate(unit) => write!(
                f,
                "lone surrogate \\u{unit:04x} in string (not a character, cannot be stored)"
            ),
            Problem::UnterminatedString => f.write_str("unterminated string"),
            Problem::TooDeep => write!(
                f,
                "arrays and objects nested deeper than the limit of {MAX_DEPTH} levels"
            ),
        }?;
        write!(
            f,
            " at line {}, column {} (byte {})",
            self.line, self.column, self.offset
        )
    }
}

impl std::error::Error for JsonProblem {}

/// Checks that `text` is exactly one JSON value (optionally surrounded by
/// JSON whitespace) and returns its compact form.
///
/// The compact form has no insignificant whitespace, keeps object keys (and
/// duplicates) in their order, copies numbers exactly as written, and writes
/// strings with only `"`, `\` and U+0000..U+001F escaped, byte for byte as
/// `serde_json::to_string` does. Escaped lone surrogates and nesting deeper
/// than [`MAX_DEPTH`] are refused, so everything accepted reads back with
/// `serde_json` (except numbers beyond the `f64` range, which the grammar
/// allows but serde_json's default number parsing refuses).
///
/// Returns a borrowed slice of `text` when the value is already compact, so
/// the common case allocates nothing.
pub(crate) fn compact(text: &str) -> Result<Cow<'_, str>, JsonProblem> {
    Compactor {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        out: Output {
            text,
            run_start: 0,
            buf: None,
        },
    }
    .run()
}

/// The kind of an open container, kept on the nesting stack.
#[derive(Clone, Copy)]
enum Container {
    /// An array: closed by `]`.
    Array,
    /// An object: closed by `}`, members are `key: value`.
    Object,
}

/// What the grammar allows next.
#[derive(Clone, Copy)]
enum Expect {
    /// Any value.
    Value,
    /// A value or `]`, right after `[`.
    FirstValue,
    /// A key or `}`, right after `{`.
    FirstKey,
    /// A key, after `,` in an object (so `}` here is a trailing comma).
    Key,
    /// The `:` after a key.
    Colon,
    /// `,` or the closing bracket of the innermost container, or the end.
    AfterValue,
}

/// The 32 control characters as serde_json escapes them: short forms where
/// JSON has one, otherwise `\u00XX` with lowercase hex.
const CONTROL_ESCAPES: [&str; 32] = [
    "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007", "\\b",
    "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011", "\\u0012",
    "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019", "\\u001a",
    "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
];

/// The compact form, built lazily: while the input needs no change it is just
/// a range of the input, and a buffer is allocated only at the first change.
struct Output<'a> {
    /// The whole input.
    text: &'a str,
    /// Start of the input run that is kept unchanged but not yet written.
    run_start: usize,
    /// What is written so far, once something had to change.
    buf: Option<String>,
}

impl<'a> Output<'a> {
    /// Leaves out the input bytes `from..to` (whitespace).
    fn skip(&mut self, from: usize, to: usize) {
        if from == to {
            return;
        }
        if self.buf.is_none() && self.run_start == from {
            // Nothing kept yet (leading whitespace): move the start instead
            // of allocating.
            self.run_start = to;
            return;
        }
        self.replace(from, to, "");
    }

    /// Writes `with` in place of the input bytes `from..to`.
    fn replace(&mut self, from: usize, to: usize, with: &str) {
        if self.text.as_bytes().get(from..to) == Some(with.as_bytes()) {
            // Already minimal (e.g. `\u001f`): keep the run going.
            return;
        }
        // The compact form is never longer than the input, so this is the
        // only allocation.
        let buf = self
            .buf
            .get_or_insert_with(|| String::with_capacity(self.text.len()));
        buf.push_str(&self.text[self.run_start..from]);
        buf.push_str(with);
        self.run_start = to;
    }

    /// The compact form, given where the value ends in the input.
    fn finish(self, end: usize) -> Cow<'a, str> {
        let rest = &self.text[self.run_start..end];
        match self.buf {
            None => Cow::Borrowed(rest),
            Some(mut buf) => {
                buf.push_str(rest);
                Cow::Owned(buf)
            }
        }
    }
}

/// The parser state: a cursor over the input and the output being built.
///
/// Every position handed to [`Output`] is next to an ASCII byte, so slicing
/// the text there always falls on character boundaries.
struct Compactor<'a> {
    /// The input.
    text: &'a str,
    /// The input as bytes, for scanning.
    bytes: &'a [u8],
    /// Byte offset of the next unread byte.
    pos: usize,
    /// The compact form.
    out: Output<'a>,
}

impl<'a> Compactor<'a> {
    /// Parses the whole input as one value and returns its compact form.
    fn run(mut self) -> Result<Cow<'a, str>, JsonProblem> {
        // A fixed array rather than a Vec: depth is bounded, and the
        // borrowed case should not allocate at all.
        let mut stack = [Container::Array; MAX_DEPTH];
        let mut depth = 0;
        let mut expect = Expect::Value;
        loop {
            if matches!(expect, Expect::AfterValue) && depth == 0 {
                break;
            }
            self.skip_whitespace();
            let Some(&byte) = self.bytes.get(self.pos) else {
                let expected = match expect {
                    Expect::Value => "a value",
                    Expect::FirstValue => "a value or ']'",
                    Expect::FirstKey => "a string key or '}'",
                    Expect::Key => "a string key",
                    Expect::Colon => "':'",
                    Expect::AfterValue => match stack[depth - 1] {
                        Container::Array => "',' or ']'",
                        Container::Object => "',' or '}'",
                    },
                };
                return Err(self.problem(self.pos, Problem::UnexpectedEnd { expected }));
            };
            expect = match expect {
                Expect::FirstValue if byte == b']' => {
                    self.pos += 1;
                    depth -= 1;
                    Expect::AfterValue
                }
                Expect::Value | Expect::FirstValue => match byte {
                    b'[' | b'{' => {
                        if depth == MAX_DEPTH {
                            return Err(self.problem(self.pos, Problem::TooDeep));
                        }
                        self.pos += 1;
                        if byte == b'[' {
                            stack[depth] = Container::Array;
                            depth += 1;
                            Expect::FirstValue
                        } else {
                            stack[depth] = Container::Object;
                            depth += 1;
                            Expect::FirstKey
                        }
                    }
                    b'"' => {
                        self.string()?;
                        Expect::AfterValue
                    }
                    b'-' | b'0'..=b'9' => {
                        self.number()?;
                        Expect::AfterValue
                    }
                    b't' => self.literal("true")?,
                    b'f' => self.literal("false")?,
                    b'n' => self.literal("null")?,
                    _ => return Err(self.unexpected(self.pos, "a value")),
                },
                Expect::FirstKey if byte == b'}' => {
                    self.pos += 1;
                    depth -= 1;
                    Expect::AfterValue
                }
                Expect::FirstKey | Expect::Key => {
                    if byte != b'"' {
                        let expected = match expect {
                            Expect::FirstKey => "a string key or '}'",
                            _ => "a string key",
                        };
                        return Err(self.unexpected(self.pos, expected));
                    }
                    self.string()?;
                    Expect::Colon
                }
                Expect::Colon => {
                    if byte != b':' {
                        return Err(self.unexpected(self.pos, "':'"));
                    }
                    self.pos += 1;
                    Expect::Value
                }
                Expect::AfterValue => match (stack[depth - 1], byte) {
                    (Container::Array, b',') => {
                        self.pos += 1;
                        Expect::Value
                    }
                    (Container::Object, b',') => {
                        self.pos += 1;
                        Expect::Key
                    }
                    (Container::Array, b']') | (Container::Object, b'}') => {
                        self.pos += 1;
                        depth -= 1;
                        Expect::AfterValue
                    }
                    (Container::Array, _) => return Err(self.unexpected(self.pos, "',' or ']'")),
                    (Container::Object, _) => return Err(self.unexpected(self.pos, "',' or '}'")),
                },
            };
        }
        // Trailing whitespace is left out by ending the output at the value,
        // which keeps `"[1]\n"` borrowed.
        let end = self.pos;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        if self.pos < self.bytes.len() {
            let found = excerpt(self.text, self.pos);
            return Err(self.problem(self.pos, Problem::TrailingContent { found }));
        }
        Ok(self.out.finish(end))
    }

    /// The byte at the cursor, if any.
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips JSON whitespace (only space, tab, LF and CR) at the cursor.
    fn skip_whitespace(&mut self) {
        let start = self.pos;
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
        self.out.skip(start, self.pos);
    }

    /// Reads `word` (`true`, `false` or `null`) at the cursor.
    fn literal(&mut self, word: &str) -> Result<Expect, JsonProblem> {
        if !self.bytes[self.pos..].starts_with(word.as_bytes()) {
            return Err(self.unexpected(self.pos, "a value"));
        }
        self.pos += word.len();
        Ok(Expect::AfterValue)
    }

    /// Reads a number at the cursor, checking the JSON number grammar.
    ///
    /// Numbers are copied as written: converting them would change `1.0`,
    /// `1E+5` or integers beyond 64 bits.
    fn number(&mut self) -> Result<(), JsonProblem> {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.problem(self.pos - 1, Problem::LeadingZero));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.missing_digit("'-'")),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if !self.digits() {
                return Err(self.missing_digit("the decimal point"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if !self.digits() {
                return Err(self.missing_digit("the exponent"));
            }
        }
        Ok(())
    }

    /// Skips ASCII digits at the cursor; tells whether there was any.
    fn digits(&mut self) -> bool {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos > start
    }

    /// Reads a string at the cursor (on its opening quote), re-encoding
    /// escapes minimally.
    fn string(&mut self) -> Result<(), JsonProblem> {
        let open = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => return Err(self.problem(open, Problem::UnterminatedString)),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(b'\\') => self.escape(open)?,
                Some(byte @ 0x00..=0x1f) => {
                    return Err(self.problem(self.pos, Problem::ControlCharacter(byte)))
                }
                // Other characters, including every byte of a multi-byte
                // UTF-8 sequence (valid, since the input is a `str`), are
                // kept as they are.
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Reads an escape at the cursor (on its backslash) in the string opened
    /// at `open`.
    fn escape(&mut self, open: usize) -> Result<(), JsonProblem> {
        let start = self.pos;
        match self.bytes.get(start + 1) {
            None => Err(self.problem(open, Problem::UnterminatedString)),
            // These are already how serde_json writes them.
            Some(b'"' | b'\\' | b'b' | b'f' | b'n' | b'r' | b't') => {
                self.pos += 2;
                Ok(())
            }
            Some(b'/') => {
                self.out.replace(start, start + 2, "/");
                self.pos += 2;
                Ok(())
            }
            Some(b'u') => self.unicode_escape(start),
            Some(_) => {
                let found = self.text[start..].chars().take(2).collect();
                Err(self.problem(start, Problem::InvalidEscape { found }))
            }
        }
    }

    /// Reads a `\uXXXX` escape at `start` (plus its low surrogate for a high
    /// one) and writes the character the way serde_json would.
    fn unicode_escape(&mut self, start: usize) -> Result<(), JsonProblem> {
        let unit = self.hex_escape(start)?;
        let mut end = start + 6;
        let code =
            if (0xD800..0xDC00).contains(&unit) && self.bytes.get(end..end + 2) == Some(b"\\u") {
                let low = self.hex_escape(end)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return Err(self.problem(start, Problem::LoneSurrogate(unit)));
                }
                end += 6;
                0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
            } else {
                unit
            };
        // Only surrogates fail here: unpaired, they are no character at all.
        let Some(ch) = char::from_u32(code) else {
            return Err(self.problem(start, Problem::LoneSurrogate(unit)));
        };
        let mut utf8 = [0; 4];
        let with: &str = match ch {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\0'..='\u{1f}' => CONTROL_ESCAPES[ch as usize],
            _ => ch.encode_utf8(&mut utf8),
        };
        self.out.replace(start, end, with);
        self.pos = end;
        Ok(())
    }

    /// The code unit of the `\uXXXX` escape at `start`.
    fn hex_escape(&self, start: usize) -> Result<u32, JsonProblem> {
        let digits = self.bytes.get(start + 2..start + 6).unwrap_or_default();
        let unit = digits.iter().try_fold(0, |unit, &byte| {
            Some(unit * 16 + char::from(byte).to_digit(16)?)
        });
        match unit {
            Some(unit) if digits.len() == 4 => Ok(unit),
            _ => {
                let found = self.text[start..].chars().take(6).collect();
                Err(self.problem(start, Problem::InvalidUnicodeEscape { found }))
            }
        }
    }

    /// A missing digit in a number, at the cursor.
    fn missing_digit(&self, after: &'static str) -> JsonProblem {
        self.problem(self.pos, Problem::MissingDigit { after })
    }

    /// Something other than `expected` at `offset` (or the end of input).
    fn unexpected(&self, offset: usize, expected: &'static str) -> JsonProblem {
        let what = if offset >= self.bytes.len() {
            Problem::UnexpectedEnd { expected }
        } else {
            Problem::Unexpected {
                found: excerpt(self.text, offset),
                expected,
            }
        };
        self.problem(offset, what)
    }

    /// A problem at `offset`, with its line and column.
    fn problem(&self, offset: usize, what: Problem) -> JsonProblem {
        // Only computed on failure, so the scan back does not cost the
        // normal case anything.
        let before = self.bytes.get(..offset).unwrap_or(self.bytes);
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        JsonProblem {
            what,
            offset,
            line: 1 + before.iter().filter(|&&b| b == b'\n').count(),
            // Characters, not bytes: count the bytes that start one.
            column: 1 + before[line_start..]
                .iter()
                .filter(|&&b| b & 0xC0 != 0x80)
                .count(),
        }
    }
}

/// A short quote of the input at `offset` for an error message: the word
/// there (up to [`EXCERPT_CHARS`] characters, so `NaN` or `'text'` shows
/// whole), or else the single character.
fn excerpt(text: &str, offset: usize) -> String {
    /// Characters that end a word: JSON punctuation and whitespace.
    fn ends_word(ch: char) -> bool {
        matches!(
            ch,
            '[' | ']' | '{' | '}' | ':' | ',' | '"' | ' ' | '\t' | '\n' | '\r'
        ) || ch.is_control()
    }
    let rest = text.get(offset..).unwrap_or_default();
    let mut chars = rest.chars();
    let Some(first) = chars.next() else {
        return String::new();
    };
    let mut found = String::from(first);
    if ends_word(first) {
        return found;
    }
    for ch in chars.take_while(|&ch| !ends_word(ch)) {
        if found.chars().count() == EXCERPT_CHARS {
            found.push('…');
            break;
        }
        found.push(ch);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    /// The compact form of `text`, failing the test with the problem.
    fn ok(text: &str) -> String {
        match compact(text) {
            Ok(out) => out.into_owned(),
            Err(problem) => panic!("{text:?} refused: {problem}"),
        }
    }

    /// The problem `compact` finds in `text`, failing the test if none.
    fn err(text: &str) -> JsonProblem {
        match compact(text) {
            Ok(out) => panic!("{text:?} accepted as {out:?}"),
            Err(problem) => problem,
        }
    }

    /// Asserts that `compact` and serde_json both refuse `text`.
    fn refused_by_both(text: &str) -> JsonProblem {
        assert!(
            serde_json::from_str::<Value>(text).is_err(),
            "serde_json accepts {text:?}"
        );
        err(text)
    }

    /// Asserts that `text` is already compact: returned borrowed, unchanged.
    fn assert_borrowed(text: &str) {
        match compact(text) {
            Ok(Cow::Borrowed(out)) => {
                assert_eq!(out, text);
                assert_eq!(out.as_ptr(), text.as_ptr());
            }
            other => panic!("{text:?} gave {other:?}, expected it borrowed"),
        }
    }

    /// `depth` arrays nested in one another.
    fn nested_arrays(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    /// `depth` objects nested in one another, innermost empty.
    fn nested_objects(depth: usize) -> String {
        "{\"a\":".repeat(depth.saturating_sub(1)) + "{}" + &"}".repeat(depth.saturating_sub(1))
    }

    #[test]
    fn already_compact_input_is_borrowed() {
        for text in [
            "null",
            "true",
            "false",
            "0",
            "-1.5e-7",
            "\"\"",
            "\"é 😀 \u{7f} \u{2028}\"",
            "\"\\\"\\\\\\b\\f\\n\\r\\t\\u0000\\u001f\"",
            "[]",
            "{}",
            r#"{"a":[1,true,null,"x"],"b":{"c":[[],{}]}}"#,
        ] {
            assert_borrowed(text);
        }
    }

    #[test]
    fn surrounding_whitespace_still_borrows_the_value() {
        let text = " \t\r\n[1,2]\r\n\t ";
        match compact(text) {
            Ok(Cow::Borrowed(out)) => assert_eq!(out, "[1,2]"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn insignificant_whitespace_is_removed() {
        assert_eq!(
            ok("{ \"a\" : [ 1 , 2 , { } , [ ] ] ,\n\t\"b\"\r:\"x y\" }"),
            r#"{"a":[1,2,{},[]],"b":"x y"}"#
        );
        assert!(matches!(compact("[ ]"), Ok(Cow::Owned(out)) if out == "[]"));
    }

    #[test]
    fn only_json_whitespace_is_whitespace() {
        for text in [
            "\u{a0}1",
            "1\u{a0}",
            "\u{feff}1",
            "\u{b}1",
            "\u{c}1",
            "[1,\u{2028}2]",
        ] {
            refused_by_both(text);
        }
    }

    #[test]
    fn key_order_and_duplicate_keys_are_kept() {
        assert_eq!(
            ok(r#"{ "z": 1, "a": 2, "z": 3, "m": {"b": 0, "a": 0} }"#),
            r#"{"z":1,"a":2,"z":3,"m":{"b":0,"a":0}}"#
        );
    }

    #[test]
    fn numbers_are_copied_verbatim() {
        for number in [
            "0",
            "-0",
            "-0.0",
            "1.0",
            "1.50",
            "1E+5",
            "1e-5",
            "1E5",
            "0e0",
            "123456789012345678901234567890",
            "-123456789012345678901234567890.000000000000000000000000000001",
            "0.1000000000000000055511151231257827021181583404541015625",
            "1.5e300",
        ] {
            assert_borrowed(number);
            assert_eq!(
                ok(&format!("[ {number} , {number} ]")),
                format!("[{number},{number}]")
            );
        }
    }

    #[test]
    fn numbers_beyond_f64_follow_the_grammar_not_serde_json() {
        // Valid JSON, kept verbatim; serde_json's default number parsing
        // refuses it, which is the one thing it refuses that we accept.
        assert_borrowed("1e400");
        let refusal = serde_json::from_str::<Value>("1e400").map(|_| ());
        assert!(matches!(refusal, Err(e) if e.to_string().contains("number out of range")));
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for (text, what) in [
            ("01", Problem::LeadingZero),
            ("-01", Problem::LeadingZero),
            ("00", Problem::LeadingZero),
            ("-", Problem::MissingDigit { after: "'-'" }),
            ("--1", Problem::MissingDigit { after: "'-'" }),
            ("-a", Problem::MissingDigit { after: "'-'" }),
            (
                "1.",
                Problem::MissingDigit {
                    after: "the decimal point",
                },
            ),
            (
                "1.e5",
                Problem::MissingDigit {
                    after: "the decimal point",
                },
            ),
            (
                "1e",
                Problem::MissingDigit {
                    after: "the exponent",
                },
            ),
            (
                "1e+",
                Problem::MissingDigit {
                    after: "the exponent",
                },
            ),
            (
                "1E-x",
                Problem::MissingDigit {
                    after: "the exponent",
                },
            ),
        ] {
            assert_eq!(refused_by_both(text).what, what, "{text:?}");
        }
        for text in [
            "+1",
            ".5",
            "0x10",
            "1_000",
            "1.5.3",
            "NaN",
            "-NaN",
            "Infinity",
            "-Infinity",
            "1,5",
            "[1.]",
            "[01]",
            "[-]",
            "{\"a\":+1}",
        ] {
            refused_by_both(text);
        }
    }

    #[test]
    fn escapes_are_decoded_and_reencoded_minimally() {
        for (text, expected) in [
            (r#""\/""#, "\"/\""),
            (r#""a\/b\/""#, "\"a/b/\""),
            (r#""\u00e9""#, "\"é\""),
            (r#""\u00E9t\u00e9""#, "\"été\""),
            (r#""\u0041""#, "\"A\""),
            (r#""\u0022""#, r#""\"""#),
            (r#""\u005c""#, r#""\\""#),
            (r#""\u005C\u002F""#, r#""\\/""#),
            (r#""\u0008\u0009\u000a\u000C\u000d""#, r#""\b\t\n\f\r""#),
            (r#""\u001F\u001A""#, r#""\u001f\u001a""#),
            (r#""\u007f""#, "\"\u{7f}\""),
            (r#""\u2028\u2029""#, "\"\u{2028}\u{2029}\""),
            (r#""\ud83d\ude00""#, "\"😀\""),
            (r#""\uD83D\uDE00!""#, "\"😀!\""),
            (r#""\ud800\udc00""#, "\"\u{10000}\""),
            (r#""\udbff\udfff""#, "\"\u{10ffff}\""),
            (r#""\uffff""#, "\"\u{ffff}\""),
            (r#"{"\u006b\/":"v"}"#, r#"{"k/":"v"}"#),
        ] {
            assert_eq!(ok(text), expected, "{text}");
            let value: Value = serde_json::from_str(text).expect("valid JSON");
            assert_eq!(
                serde_json::to_string(&value).ok().as_deref(),
                Some(expected)
            );
        }
    }

    #[test]
    fn every_character_is_written_as_serde_json_writes_it() {
        for ch in char::MIN..=char::MAX {
            let expected = serde_json::to_string(&ch.to_string()).expect("serializable");
            // Escaped with \u (a surrogate pair beyond the BMP), in both cases.
            let mut units = [0; 2];
            let units = ch.encode_utf16(&mut units);
            let lower: String = units.iter().map(|u| format!("\\u{u:04x}")).collect();
            let upper: String = units.iter().map(|u| format!("\\u{u:04X}")).collect();
            assert_eq!(ok(&format!("\"{lower}\"")), expected);
            assert_eq!(ok(&format!("\"{upper}\"")), expected);
            // Written as itself, wherever JSON allows that.
            if !matches!(ch, '\0'..='\u{1f}' | '"' | '\\') {
                assert_eq!(ok(&format!("\"{ch}\"")), expected);
            }
        }
    }

    #[test]
    fn lone_surrogates_are_refused() {
        for (text, unit) in [
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\uDFFF""#,
            r#""\ud83dx""#,
            r#""\ud83d\n""#,
            r#""\ud83d\u0041""#,
            r#""\ud83d\ud83d""#,
            r#""\udc00\ud800""#,
            r#""a\ud800"#,
            r#"{"\ud800":1}"#,
        ]
        .into_iter()
        .zip([
            0xd800, 0xdc00, 0xdfff, 0xd83d, 0xd83d, 0xd83d, 0xd83d, 0xdc00, 0xd800, 0xd800,
        ]) {
            let problem = refused_by_both(text);
            assert_eq!(problem.what, Problem::LoneSurrogate(unit), "{text}");
            assert!(problem
                .to_string()
                .starts_with(&format!("lone surrogate \\u{unit:04x} ")));
        }
    }

    #[test]
    fn invalid_strings_are_refused() {
        for byte in 0..0x20u8 {
            let text = format!("\"a{}\"", char::from(byte));
            let problem = refused_by_both(&text);
            assert_eq!(problem.what, Problem::ControlCharacter(byte));
            assert_eq!(problem.offset, 2);
        }
        for (text, found) in [
            (r#""\x""#, "\\x"),
            (r#""\'""#, "\\'"),
            (r#""\U0041""#, "\\U"),
            (r#""\0""#, "\\0"),
            (r#""\é""#, "\\é"),
        ] {
            let what = Problem::InvalidEscape {
                found: found.into(),
            };
            assert_eq!(refused_by_both(text).what, what);
        }
        for text in [
            r#""\u12""#,
            r#""\u12G4""#,
            r#""\u""#,
            r#""\u00e"#,
            r#""\ud83d\u12""#,
        ] {
            let problem = refused_by_both(text);
            assert!(
                matches!(problem.what, Problem::InvalidUnicodeEscape { .. }),
                "{text}: {problem}"
            );
        }
        for text in ["\"abc", "\"abc\\", "\"", "[\"a]", "{\"a"] {
            let problem = refused_by_both(text);
            assert_eq!(problem.what, Problem::UnterminatedString, "{text}");
        }
        for text in ["'a'", "[\"a\",'b']", "{'a':1}"] {
            refused_by_both(text);
        }
    }

    #[test]
    fn invalid_structure_is_refused() {
        for text in [
            "",
            "   ",
            "[",
            "[1",
            "[1,",
            "{",
            "{\"a\"",
            "{\"a\":",
            "{\"a\":1",
            "[1,]",
            "[,1]",
            "[,]",
            "{\"a\":1,}",
            "{,}",
            "{\"a\" 1}",
            "{\"a\":}",
            "{\"a\"::1}",
            "{a:1}",
            "{1:2}",
            "{null:2}",
            "[1 2]",
            "[1:2]",
            "{\"a\":1 \"b\":2}",
            "1 2",
            "{} {}",
            "[]]",
            "]",
            "}",
            ":",
            ",",
            "tru",
            "nul",
            "True",
            "nulll",
            "truefalse",
            "undefined",
            "/*c*/1",
            "1 // c",
            "# c\n1",
            "[1]x",
            "\"a\"b",
            "[1]\u{0}",
            "é",
        ] {
            refused_by_both(text);
        }
    }

    #[test]
    fn problems_say_what_and_where() {
        assert_eq!(
            err("[1,]").to_string(),
            "unexpected \"]\", expected a value at line 1, column 4 (byte 3)"
        );
        assert_eq!(
            err("{\n  \"é\": tru\n}").to_string(),
            "unexpected \"tru\", expected a value at line 2, column 8 (byte 10)"
        );
        assert_eq!(
            err("").to_string(),
            "unexpected end of input, expected a value at line 1, column 1 (byte 0)"
        );
        assert_eq!(
            err("{\"a\":1 \"b\":2}").to_string(),
            "unexpected \"\\\"\", expected ',' or '}' at line 1, column 8 (byte 7)"
        );
        assert_eq!(
            err("[NaN]").to_string(),
            "unexpected \"NaN\", expected a value at line 1, column 2 (byte 1)"
        );
        assert_eq!(
            err("{'a':1}").to_string(),
            "unexpected \"'a'\", expected a string key or '}' at line 1, column 2 (byte 1)"
        );
        assert_eq!(
            err("[1] [2]").to_string(),
            "unexpected \"[\" after the JSON value at line 1, column 5 (byte 4)"
        );
        assert_eq!(
            err("01").to_string(),
            "leading zero in number at line 1, column 1 (byte 0)"
        );
        assert_eq!(
            err("[1.]").to_string(),
            "expected a digit after the decimal point at line 1, column 4 (byte 3)"
        );
        assert_eq!(
            err("\"a\tb\"").to_string(),
            "unescaped control character U+0009 in string at line 1, column 3 (byte 2)"
        );
        assert_eq!(
            err("\"\\x\"").to_string(),
            "invalid escape \"\\\\x\" in string at line 1, column 2 (byte 1)"
        );
        assert_eq!(
            err("\"\\u12\"").to_string(),
            "invalid escape \"\\\\u12\\\"\", expected \\u and 4 hex digits at line 1, column 2 (byte 1)"
        );
        assert_eq!(
            err("[\"\\ud800\"]").to_string(),
            "lone surrogate \\ud800 in string (not a character, cannot be stored) at line 1, column 3 (byte 2)"
        );
        assert_eq!(
            err("\n \"abc").to_string(),
            "unterminated string at line 2, column 2 (byte 2)"
        );
        assert_eq!(
            err(&nested_arrays(MAX_DEPTH + 1)).to_string(),
            format!(
                "arrays and objects nested deeper than the limit of {MAX_DEPTH} levels \
                 at line 1, column {} (byte {MAX_DEPTH})",
                MAX_DEPTH + 1
            )
        );
    }

    #[test]
    fn problems_quote_little_of_the_input() {
        let word = "x".repeat(10_000);
        let message = err(&format!("[{word}]")).to_string();
        assert!(message.contains(&format!("\"{}…\"", "x".repeat(EXCERPT_CHARS))));
        assert!(message.len() < 150, "{message}");
        let message = err(&format!("[1] {word}")).to_string();
        assert!(message.len() < 150, "{message}");
    }

    #[test]
    fn depth_limit_matches_serde_json_exactly() {
        for deepest in [
            nested_arrays(MAX_DEPTH),
            nested_objects(MAX_DEPTH),
            "[{\"a\":".repeat(MAX_DEPTH / 2) + "[]" + &"}]".repeat(MAX_DEPTH / 2),
        ] {
            assert_borrowed(&deepest);
            assert!(serde_json::from_str::<Value>(&deepest).is_ok());
            // Also through the owned path.
            let spaced = deepest.replace('[', "[ ").replace(':', " : ");
            assert_eq!(ok(&spaced), deepest);
        }
        for too_deep in [
            nested_arrays(MAX_DEPTH + 1),
            nested_objects(MAX_DEPTH + 1),
            "[{\"a\":".repeat(MAX_DEPTH / 2) + "[[]]" + &"}]".repeat(MAX_DEPTH / 2),
        ] {
            // serde_json refuses it too: the limit is as high as it can be.
            assert_eq!(refused_by_both(&too_deep).what, Problem::TooDeep);
        }
        // Depth counts open containers only, not their length.
        let wide = format!("[{}0]", "[],".repeat(10_000));
        assert_borrowed(&wide);
    }

    #[test]
    fn very_deep_input_fails_without_overflowing_the_stack() {
        let deep = "[".repeat(1_000_000);
        let problem = err(&deep);
        assert_eq!(
            (problem.what, problem.offset),
            (Problem::TooDeep, MAX_DEPTH)
        );
        let deep = "{\"a\":".repeat(1_000_000);
        assert_eq!(err(&deep).what, Problem::TooDeep);
        let closed = nested_arrays(1_000_000);
        assert_eq!(err(&closed).what, Problem::TooDeep);
        let closers = "]".repeat(1_000_000);
        assert!(matches!(err(&closers).what, Problem::Unexpected { .. }));
    }

    #[test]
    fn long_inputs_take_linear_time() {
        // A quadratic implementation would take minutes on these.
        let n = 200_000;
        let escapes = format!("\"{}\"", "\\u00e9\\/".repeat(n));
        assert_eq!(ok(&escapes), format!("\"{}\"", "é/".repeat(n)));
        let spaced = format!("[{}1]", "1 ,\n ".repeat(n));
        assert_eq!(ok(&spaced), format!("[{}1]", "1,".repeat(n)));
        let digits = format!("-{}.{}e+{}", "9".repeat(n), "1".repeat(n), "7".repeat(n));
        assert_borrowed(&digits);
        let plain = format!("\"{}\"", "abc é ".repeat(n));
        assert_borrowed(&plain);
    }

    #[test]
    fn python_ascii_escaped_output_compacts_like_the_unescaped_one() {
        // json.dumps(v, indent=2) and json.dumps(v, indent=2, ensure_ascii=False)
        // of the same Python value.
        let ascii = r#"{
  "name": "caf\u00e9 \u2615 \ud83d\ude00 \u65e5\u672c",
  "ctl": "\u0000\u0001\b\t\n\u000b\f\r\u001f\u007f\u2028\u2029",
  "esc": "\"\\/",
  "cl\u00e9": [
    1,
    -0.5,
    12345678901234567890123,
    1.5e+300,
    true,
    null,
    {},
    []
  ],
  "nested": {
    "z": {
      "y": [
        "\udbff\udfff"
      ]
    }
  }
}"#;
        let unescaped = "{\n  \"name\": \"café ☕ 😀 日本\",\n  \
            \"ctl\": \"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}\u{2028}\u{2029}\",\n  \
            \"esc\": \"\\\"\\\\/\",\n  \"clé\": [\n    1,\n    -0.5,\n    \
            12345678901234567890123,\n    1.5e+300,\n    true,\n    null,\n    {},\n    []\n  ],\n  \
            \"nested\": {\n    \"z\": {\n      \"y\": [\n        \"\u{10ffff}\"\n      ]\n    }\n  }\n}";
        let expected = "{\"name\":\"café ☕ 😀 日本\",\
            \"ctl\":\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f\u{7f}\u{2028}\u{2029}\",\
            \"esc\":\"\\\"\\\\/\",\"clé\":[1,-0.5,12345678901234567890123,1.5e+300,true,null,{},[]],\
            \"nested\":{\"z\":{\"y\":[\"\u{10ffff}\"]}}}";
        assert_eq!(ok(ascii), expected);
        assert_eq!(ok(unescaped), expected);
        assert_eq!(
            serde_json::from_str::<Value>(expected).ok(),
            serde_json::from_str::<Value>(ascii).ok()
        );
    }

    /// Strings over the whole char range, with control characters and the
    /// characters JSON escapes made frequent.
    fn arb_string() -> impl Strategy<Value = String> {
        let ch = prop_oneof![
            4 => any::<char>(),
            2 => prop::char::range('\0', '\u{1f}'),
            1 => prop::sample::select(vec![
                '"', '\\', '/', '\u{7f}', '\u{2028}', '\u{feff}', 'é', '😀', '\u{10ffff}',
            ]),
        ];
        prop::collection::vec(ch, 0..12).prop_map(String::from_iter)
    }

    /// Any JSON value, nested a few levels.
    fn arb_value() -> impl Strategy<Value = Value> {
        let number = prop_oneof![
            any::<i64>().prop_map(serde_json::Number::from),
            any::<u64>().prop_map(serde_json::Number::from),
            any::<f64>().prop_filter_map("not finite", serde_json::Number::from_f64),
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number.prop_map(Value::Number),
            arb_string().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 96, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((arb_string(), inner), 0..6)
                    .prop_map(|members| Value::Object(members.into_iter().collect())),
            ]
        })
    }

    /// Texts close to JSON: serialized values with a few characters
    /// inserted, removed or replaced, and short runs of JSON-ish characters.
    fn arb_almost_json() -> impl Strategy<Value = String> {
        let jsonish = prop::sample::select(
            "[]{}:,\" \t\n\\/u0123456789abcdefABCDEF.eE+-tnrlsx'\u{0}\u{1f}é😀"
                .chars()
                .collect::<Vec<_>>(),
        );
        let edit = (any::<prop::sample::Index>(), 0..3u8, jsonish.clone());
        let edited = (
            arb_value(),
            any::<bool>(),
            prop::collection::vec(edit, 0..4),
        )
            .prop_map(|(value, pretty, edits)| {
                let text = if pretty {
                    serde_json::to_string_pretty(&value)
                } else {
                    serde_json::to_string(&value)
                };
                let mut chars: Vec<char> = text.unwrap_or_default().chars().collect();
                for (at, kind, ch) in edits {
                    let at = at.index(chars.len() + 1);
                    match kind {
                        0 => chars.insert(at, ch),
                        1 if at < chars.len() => {
                            chars.remove(at);
                        }
                        _ if at < chars.len() => chars[at] = ch,
                        _ => chars.push(ch),
                    }
                }
                chars.into_iter().collect()
            });
        let runs = prop::collection::vec(jsonish, 0..24).prop_map(String::from_iter);
        prop_oneof![3 => edited, 1 => runs, 1 => any::<String>()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn pretty_text_compacts_to_serde_json_compact_text(value in arb_value()) {
            let pretty = serde_json::to_string_pretty(&value)?;
            let expected = serde_json::to_string(&value)?;
            prop_assert_eq!(compact(&pretty)?, expected.as_str());
            match compact(&expected) {
                Ok(Cow::Borrowed(out)) => prop_assert_eq!(out, expected.as_str()),
                other => prop_assert!(false, "{:?} gave {:?}", expected, other),
            }
        }

        #[test]
        fn agrees_with_serde_json_on_any_text(text in arb_almost_json()) {
            let parsed = serde_json::from_str::<Value>(&text);
            match compact(&text) {
                Ok(out) => {
                    // Same value read back, and compacting is idempotent.
                    let reparsed = serde_json::from_str::<Value>(&out);
                    match (parsed, reparsed) {
                        (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                        // The one disagreement: numbers beyond f64.
                        (Err(a), Err(b)) => {
                            prop_assert!(a.to_string().contains("number out of range"), "{}", a);
                            prop_assert!(b.to_string().contains("number out of range"), "{}", b);
                        }
                        (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
                    }
                    prop_assert!(matches!(compact(&out), Ok(Cow::Borrowed(again)) if again == out));
                }
                Err(problem) => {
                    prop_assert!(parsed.is_err(), "refused {:?}: {}", text, problem);
                    prop_assert!(problem.offset <= text.len());
                }
            }
        }
    }
}
