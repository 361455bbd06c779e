//! A JSON object read member by member, each value left as the text it arrived as: for relays that
//! rewrite a few top-level members of an upstream's answer and pass the rest through byte for byte,
//! without building (and then serialising again) a tree of every string and number in it.
//!
//! The object is read by a scanner of its own ([`scan_object`]), not by serde_json. It accepts and
//! refuses what serde_json does when it reads the object member by member with each value as a
//! `&RawValue` (how this was read before; a test compares the two on generated and mutated text), and
//! finds the same members, but it only walks the bytes. serde_json's path, through its visitor
//! machinery and generic reader, took 4,700 instructions for a 200-byte streamed chunk (a quarter of
//! what relaying the chunk cost). The scan reads a chunk in 1.7-1.8 times less time and a whole answer
//! in 1.5 times less (`cargo run --release -p protocol --example raw_scan`), and a streamed answer
//! costs the gateway 8% fewer instructions (`bench/instructions.sh --stream`).

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;

/// The members of a JSON object, in order, each value as its JSON text; keys borrowed where they had no
/// escapes.
#[derive(Debug)]
pub struct RawObject<'a> {
    pub members: Vec<(Cow<'a, str>, &'a str)>,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> RawObject<'a> {
    /// Reads an object (and checks that it is UTF-8 and that every member's value is well-formed JSON).
    pub fn parse(bytes: &'a [u8]) -> Result<RawObject<'a>, ParseError> {
        RawObject::parse_str(std::str::from_utf8(bytes).map_err(|_| ParseError)?)
    }

    /// [`RawObject::parse`] for text already known to be UTF-8.
    pub fn parse_str(text: &'a str) -> Result<RawObject<'a>, ParseError> {
        Ok(RawObject {
            members: scan_object(text)?,
        })
    }

    /// A member's value as JSON text (the last one, if the key repeats, as a parser into a map would
    /// keep).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A member that is a string, unescaped.
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.get(key)?;
        serde_json::from_str::<Key<'a>>(raw).ok().map(|k| k.0)
    }

    /// Whether a member is an array.
    pub fn is_array(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.starts_with('['))
    }

    /// Writes the object to `out` with the members in `set` given new values (raw JSON), in place
    /// where the object had them and at the end where it did not, and without the members `drop`
    /// names. Every other member is copied as it came. A key that repeats is written once. The keys in
    /// `set` are written as given: plain names, with nothing JSON would escape.
    pub fn write_with(&self, out: &mut Vec<u8>, set: &[(&str, &[u8])], drop: impl Fn(&str) -> bool) {
        debug_assert!(set.len() <= 32);
        let mut written = 0u32;
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, key: &Cow<str>, value: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            match key {
                // A key that had no escapes has nothing to escape (JSON strings hold no raw control
                // characters): written as it came.
                Cow::Borrowed(k) => {
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                // A key is a string: serialising it cannot fail.
                Cow::Owned(k) => {
                    let _ = serde_json::to_writer(&mut *out, k);
                }
            }
            out.push(b':');
            out.extend_from_slice(value);
        };
        out.push(b'{');
        for (k, v) in &self.members {
            match set.iter().position(|(s, _)| *s == k.as_ref()) {
                Some(i) => {
                    if written & (1 << i) == 0 {
                        member(out, k, set[i].1);
                        written |= 1 << i;
                    }
                }
                None if drop(k) => {}
                None => member(out, k, v.as_bytes()),
            }
        }
        for (i, (k, v)) in set.iter().enumerate() {
            if written & (1 << i) == 0 {
                member(out, &Cow::Borrowed(k), v);
            }
        }
        out.push(b'}');
    }
}

/// A JSON object read once and kept: its text, and where each member lies in it. A reader that checks an
/// answer when it arrives (to try the next upstream if it is not JSON) and rewrites it later views its
/// members with [`ParsedObject::view`], without a second parse.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    text: String,
    members: Vec<(KeySpan, Range<usize>)>,
}

#[derive(Debug, Clone)]
enum KeySpan {
    /// A key without escapes, as it lies in the text.
    At(Range<usize>),
    /// A key with escapes, unescaped (rare).
    Owned(String),
}

impl ParsedObject {
    /// Checks that `bytes` are one JSON object (UTF-8 included) and records its members.
    pub fn parse(bytes: impl Into<Vec<u8>>) -> Result<ParsedObject, ParseError> {
        let text = String::from_utf8(bytes.into()).map_err(|_| ParseError)?;
        let base = text.as_ptr() as usize;
        // Where a slice of `text` lies in it.
        let span = |s: &str| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let members = {
            let obj = RawObject::parse_str(&text)?;
            obj.members
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Cow::Borrowed(k) => KeySpan::At(span(k)),
                        Cow::Owned(k) => KeySpan::Owned(k),
                    };
                    (key, span(v))
                })
                .collect()
        };
        Ok(ParsedObject { text, members })
    }

    /// The object's text, as it came.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its members, as [`RawObject::parse_str`] would give them.
    pub fn view(&self) -> RawObject<'_> {
        let t = self.text.as_str();
        RawObject {
            members: self
                .members
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        KeySpan::At(r) => Cow::Borrowed(&t[r.clone()]),
                        KeySpan::Owned(k) => Cow::Borrowed(k.as_str()),
                    };
                    (key, &t[v.clone()])
                })
                .collect(),
        }
    }
}

/// Text that is not one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError;

/// Finds whether JSON text may hold a member `key` whose value is not `null`, by a byte search rather
/// than a parse: for readers that need a full parse only in the rare event that carries such a member
/// (an `error`, a `finish_reason`). A `false` is certain for keys written without escapes; a `true` can
/// be a false alarm (the same key deeper in the object, or inside a string), which costs only the
/// parse it asks for. Build one per key and keep it: building the searcher costs more than a search.
pub struct KeyProbe {
    finder: memchr::memmem::Finder<'static>,
    len: usize,
}

impl KeyProbe {
    pub fn new(key: &'static str) -> KeyProbe {
        KeyProbe {
            finder: memchr::memmem::Finder::new(key.as_bytes()),
            len: key.len(),
        }
    }

    pub fn may_hold_non_null(&self, text: &str) -> bool {
        let b = text.as_bytes();
        self.finder.find_iter(b).any(|at| {
            let end = at + self.len;
            // The key as a whole string: quoted on both sides.
            if at == 0 || b[at - 1] != b'"' || b.get(end) != Some(&b'"') {
                return false;
            }
            match b[end + 1..].trim_ascii_start().strip_prefix(b":") {
                Some(value) => !value.trim_ascii_start().starts_with(b"null"),
                // Not followed by a colon: a string value, not a key.
                None => false,
            }
        })
    }
}

/// The members of the JSON object that `text` holds (whitespace around it allowed), each value as its
/// text; an error if `text` is anything else, or if any value in it is not well-formed JSON.
///
/// Well-formed as RFC 8259 and serde_json have it: strings without raw control characters and with
/// only the escapes JSON names (`\uXXXX` with four hex digits, not checked for surrogate pairs, as
/// serde_json does not check them in a value it skips), numbers without leading zeros, the three
/// literals, any depth of nesting (the scan keeps no call stack, so depth cannot overflow one).
/// A key with escapes is unescaped by serde_json (it also refuses lone surrogates there).
pub fn scan_object(text: &str) -> Result<Vec<(Cow<'_, str>, &str)>, ParseError> {
    let mut s = Scan {
        b: text.as_bytes(),
        i: 0,
    };
    let mut members = Vec::with_capacity(8);
    s.ws();
    s.expect(b'{')?;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
    } else {
        loop {
            let (quoted, escaped) = s.key()?;
            let key = if escaped {
                Cow::Owned(serde_json::from_str::<String>(&text[quoted]).map_err(|_| ParseError)?)
            } else {
                Cow::Borrowed(&text[quoted.start + 1..quoted.end - 1])
            };
            s.ws();
            let at = s.i;
            s.value()?;
            members.push((key, &text[at..s.i]));
            s.ws();
            match s.next() {
                Some(b',') => s.ws(),
                Some(b'}') => break,
                _ => return Err(ParseError),
            }
        }
    }
    s.ws();
    if s.i != s.b.len() {
        return Err(ParseError);
    }
    Ok(members)
}

/// A position in JSON text being scanned.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn expect(&mut self, c: u8) -> Result<(), ParseError> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(ParseError)
        }
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// One value, any depth: containers are walked with an explicit stack of frames.
    fn value(&mut self) -> Result<(), ParseError> {
        let mut frames = Frames::default();
        loop {
            // A value is due here.
            self.ws();
            match self.next() {
                Some(open @ (b'{' | b'[')) => {
                    let object = open == b'{';
                    self.ws();
                    // An empty container is a whole value; else its first member or element is due.
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.i += 1;
                    } else {
                        frames.push(object);
                        if object {
                            self.key()?;
                        }
                        continue;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                Some(c @ (b'-' | b'0'..=b'9')) => self.number(c)?,
                Some(b't') => self.rest_of(b"rue")?,
                Some(b'f') => self.rest_of(b"alse")?,
                Some(b'n') => self.rest_of(b"ull")?,
                _ => return Err(ParseError),
            }
            // A value ended: close the containers it ends, or go on to the next member or element.
            loop {
                let Some(object) = frames.top() else {
                    return Ok(());
                };
                self.ws();
                match self.next() {
                    Some(b',') => {
                        if object {
                            self.ws();
                            self.key()?;
                        }
                        break;
                    }
                    Some(b'}') if object => frames.pop(),
                    Some(b']') if !object => frames.pop(),
                    _ => return Err(ParseError),
                }
            }
        }
    }

    /// A member's key and its colon (the scan stands on the key's opening quote): where the key lies,
    /// quotes included, and whether it holds an escape.
    fn key(&mut self) -> Result<(Range<usize>, bool), ParseError> {
        let start = self.i;
        self.expect(b'"')?;
        let escaped = self.string()?;
        let quoted = start..self.i;
        self.ws();
        self.expect(b':')?;
        Ok((quoted, escaped))
    }

    /// The rest of a string whose opening quote was read, up to and past its closing quote; whether
    /// it held an escape.
    fn string(&mut self) -> Result<bool, ParseError> {
        let mut escaped = false;
        loop {
            self.skip_plain();
            match self.next() {
                Some(b'"') => return Ok(escaped),
                Some(b'\\') => {
                    escaped = true;
                    match self.next() {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {}
                        Some(b'u') => {
                            let hex = self.b.get(self.i..self.i + 4).ok_or(ParseError)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(ParseError);
                            }
                            self.i += 4;
                        }
                        _ => return Err(ParseError),
                    }
                }
                // A raw control character, or the end of the text.
                _ => return Err(ParseError),
            }
        }
    }

    /// Moves to the next byte of a string that is a quote, a backslash or a control character (or to
    /// the end): eight bytes a step while none is in them.
    #[inline]
    fn skip_plain(&mut self) {
        const ONES: u64 = u64::MAX / 255;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let x = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            let ctrl = x.wrapping_sub(ONES * 0x20) & !x;
            let q = x ^ (ONES * u64::from(b'"'));
            let quote = q.wrapping_sub(ONES) & !q;
            let bs = x ^ (ONES * u64::from(b'\\'));
            let backslash = bs.wrapping_sub(ONES) & !bs;
            let found = (ctrl | quote | backslash) & (ONES << 7);
            if found != 0 {
                // The lowest flagged byte is a real one (a borrow only flags bytes above a real one).
                self.i += found.trailing_zeros() as usize / 8;
                return;
            }
            self.i += 8;
        }
        while let Some(c) = self.peek() {
            if c == b'"' || c == b'\\' || c < 0x20 {
                return;
            }
            self.i += 1;
        }
    }

    /// The rest of a number whose first byte `first` was read.
    fn number(&mut self, first: u8) -> Result<(), ParseError> {
        let lead = if first == b'-' {
            self.next().ok_or(ParseError)?
        } else {
            first
        };
        match lead {
            // A digit after a leading zero (`01`) is not taken here, and no value may be followed by
            // a digit: the caller refuses it.
            b'0' => {}
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return Err(ParseError),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(ParseError);
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(ParseError);
            }
        }
        Ok(())
    }

    /// Skips digits; how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn rest_of(&mut self, word: &[u8]) -> Result<(), ParseError> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(ParseError)
        }
    }
}

/// What serde_json makes of `text` read as an object member by member, each value a `&RawValue` (how
/// [`RawObject`] was read before it had its own scanner): the reference that [`scan_object`] must agree
/// with, on what it refuses and on every member it finds. For tests and `examples/raw_scan.rs` only.
#[doc(hidden)]
pub fn members_by_serde_json(text: &str) -> Option<Vec<(Cow<'_, str>, &str)>> {
    use serde::de::{Deserializer, MapAccess, Visitor};
    use serde_json::value::RawValue;

    struct Members<'a>(Vec<(Cow<'a, str>, &'a str)>);

    impl<'de> Deserialize<'de> for Members<'de> {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Members<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                    let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                    while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                        let v: &'de RawValue = map.next_value()?;
                        members.push((k, v.get()));
                    }
                    Ok(Members(members))
                }
            }
            d.deserialize_map(V)
        }
    }

    serde_json::from_str::<Members>(text).ok().map(|m| m.0)
}

/// The open containers of a scan, innermost first: whether each is an object. Sixty-four fit in a
/// word; deeper ones spill to the heap.
#[derive(Default)]
struct Frames {
    bits: u64,
    len: usize,
    spill: Vec<u64>,
}

impl Frames {
    #[inline]
    fn push(&mut self, object: bool) {
        if self.len > 0 && self.len.is_multiple_of(64) {
            self.spill.push(self.bits);
            self.bits = 0;
        }
        self.bits = (self.bits << 1) | u64::from(object);
        self.len += 1;
    }

    #[inline]
    fn pop(&mut self) {
        self.len -= 1;
        self.bits >>= 1;
        if self.len > 0 && self.len.is_multiple_of(64) {
            self.bits = self.spill.pop().unwrap_or_default();
        }
    }

    /// Whether the innermost container is an object; `None` when none is open.
    #[inline]
    fn top(&self) -> Option<bool> {
        (self.len > 0).then_some(self.bits & 1 == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The scanner and serde_json agree on `text`: both refuse it, or both read the same members.
    fn agrees(text: &str) -> std::result::Result<(), TestCaseError> {
        let ours = scan_object(text).ok();
        let theirs = members_by_serde_json(text);
        prop_assert_eq!(&ours, &theirs, "text: {:?}", text);
        Ok(())
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            any::<String>().prop_map(serde_json::Value::from),
            "[a-z\\\\\"/\u{0}-\u{1f}\u{7f}\u{e9}\u{1F600}]{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::vec((any::<String>(), inner), 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON text of an object, compact or pretty, with its members in the order given (keys may
    /// repeat and need escapes).
    fn object_text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(("[a-z\\\\\"\u{1}\u{e9}]{0,6}", json_value()), 0..6),
            any::<bool>(),
        )
            .prop_map(|(members, pretty)| {
                let mut out = String::from("{");
                for (i, (k, v)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push_str(if pretty { ",\n  " } else { "," });
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(if pretty { " : " } else { ":" });
                    let v = if pretty {
                        serde_json::to_string_pretty(v).unwrap()
                    } else {
                        serde_json::to_string(v).unwrap()
                    };
                    out.push_str(&v);
                }
                out.push('}');
                if pretty {
                    out = format!(" \t{out}\r\n");
                }
                out
            })
    }

    /// Bytes that matter to a JSON scanner, for edits.
    const EDIT_BYTES: &[u8] = b"{}[]\",:\\/-+.0123456789eEtrufalsn ubfu\t\n\r\x00\x1f";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_scanner_reads_what_serde_json_reads(text in object_text()) {
            prop_assert!(scan_object(&text).is_ok(), "refused: {text:?}");
            agrees(&text)?;
        }

        #[test]
        fn the_scanner_refuses_what_serde_json_refuses(
            text in object_text(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), 0..3u8, prop::sample::select(EDIT_BYTES)), 1..4),
        ) {
            let mut b = text.into_bytes();
            for (at, kind, byte) in edits {
                let i = at.index(b.len() + 1);
                match kind {
                    0 if i < b.len() => { b.remove(i); }
                    1 if i < b.len() => b[i] = byte,
                    _ => b.insert(i, byte),
                }
            }
            // Edits of ASCII bytes can split a multi-byte character: such text is not a `&str`, and
            // `RawObject::parse` refuses it before any scan, as serde_json refuses it.
            match std::str::from_utf8(&b) {
                Ok(text) => agrees(text)?,
                Err(_) => {
                    prop_assert!(RawObject::parse(&b).is_err());
                    prop_assert!(serde_json::from_slice::<serde_json::Value>(&b).is_err());
                }
            }
        }

        #[test]
        fn short_texts_of_json_bytes_agree(body in prop::collection::vec(prop::sample::select(EDIT_BYTES), 0..24)) {
            let mut b = b"{\"k\":".to_vec();
            b.extend_from_slice(&body);
            if let Ok(text) = std::str::from_utf8(&b) {
                agrees(text)?;
                agrees(&text[5..])?;
            }
        }
    }

    #[test]
    fn edge_cases_agree_with_serde_json() {
        let cases = [
            r#"{"a":0}"#,
            r#"{"a":-0}"#,
            r#"{"a":01}"#,
            r#"{"a":-}"#,
            r#"{"a":1.}"#,
            r#"{"a":1.5e}"#,
            r#"{"a":1e+5}"#,
            r#"{"a":1E-5}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1.5e+}"#,
            r#"{"a":"\u00e9\ud83d\ude00"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\x"}"#,
            "{\"a\":\"\u{1}\"}",
            "{\"a\":\"\u{7f}\"}",
            r#"{"a":tru}"#,
            r#"{"a":nul}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":{"b":1,}}"#,
            r#"{"a":1,}"#,
            r#"{,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[]}"#,
            r#"{"a":{}}"#,
            r#"{"a":[ ]}"#,
            r#"{"a":{ }}"#,
            r#"{}"#,
            r#" { } "#,
            r#"{} x"#,
            r#"{}{}"#,
            r#"{"a":1}}"#,
            r#"{"a":[1}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":}}"#,
            r#"{"a":{1:2}}"#,
            "{\"a\":\"x\\\"y\"}",
            r#"{"a":"0123456789abcdef\"quoted\" and \\ slash, then more text"}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":[1}}"#,
            r#"{"a":[{"b":1]]}"#,
            r#"{"a":[[1},2]}"#,
            r#"{"a":00}"#,
            r#"{"a":-01.5}"#,
            r#"{"a":[0,01]}"#,
            "{\"a\":\"unterminated",
            "{\"a\":\"ends in backslash\\",
            r#"{"a":1"#,
            r#"{"a""#,
            "{",
        ];
        for text in cases {
            agrees(text).unwrap();
        }
    }

    #[test]
    fn any_depth_is_scanned_without_a_call_stack() {
        for depth in [63, 64, 65, 128, 129, 100_000] {
            let text = format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth));
            let members = scan_object(&text).unwrap();
            assert_eq!(members[0].1.len(), 2 * depth + 1);
            let objects = format!(r#"{{"a":{}1{}}}"#, r#"{"k":"#.repeat(depth), "}".repeat(depth));
            assert!(scan_object(&objects).is_ok(), "{depth}");
            // One bracket of the wrong kind anywhere is refused.
            let mut bad = objects.clone().into_bytes();
            bad[5 + 5 * (depth / 2)] = b'[';
            assert!(
                scan_object(std::str::from_utf8(&bad).unwrap()).is_err(),
                "{depth}"
            );
            let unclosed = format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth - 1));
            assert!(scan_object(&unclosed).is_err(), "{depth}");
        }
    }

    #[test]
    fn members_keep_their_text_and_order() {
        let body = br#"{"id":"c1","model":"m","choices":[{"index":0}],"usage":{"prompt_tokens":3},"k\"q":1}"#;
        let o = RawObject::parse(body).unwrap();
        let s = RawObject::parse_str(std::str::from_utf8(body).unwrap()).unwrap();
        assert_eq!(format!("{:?}", o.members), format!("{:?}", s.members));
        let keys: Vec<&str> = o.members.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["id", "model", "choices", "usage", "k\"q"]);
        assert!(matches!(o.members[0].0, Cow::Borrowed(_)));
        assert_eq!(o.get("choices").unwrap(), r#"[{"index":0}]"#);
        assert!(o.is_array("choices") && !o.is_array("usage"));
        assert_eq!(o.get_str("id").as_deref(), Some("c1"));
        assert_eq!(o.get_str("usage"), None);
    }

    #[test]
    fn a_parsed_object_views_the_members_a_parse_gives() {
        let body =
            br#" {"id":"c1", "k\"q" : [1, {"a":"\u00e9"}], "model":"m","usage":{"p":3}, "e":"\u00e9t\u00e9"}
"#;
        let p = ParsedObject::parse(body.to_vec()).unwrap();
        let direct = RawObject::parse(body).unwrap();
        assert_eq!(format!("{:?}", p.view().members), format!("{:?}", direct.members));
        assert_eq!(p.view().get_str("e").as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(p.text().as_bytes(), body);
        assert!(p.clone().view().is_array("k\"q"));
        for bad in [&b"[1]"[..], b"{\"a\":}", b"", b"{\"a\":\"\xff\"}"] {
            assert_eq!(ParsedObject::parse(bad.to_vec()).unwrap_err(), ParseError);
        }
    }

    #[test]
    fn written_with_members_set_and_dropped() {
        let o =
            RawObject::parse(br#"{"id":"", "model":"up", "x":[1, 2], "usage":{"a":1}, "k\"q":2}"#).unwrap();
        let mut out = Vec::new();
        o.write_with(&mut out, &[("model", b"\"pub\""), ("created", b"7")], |k| {
            k == "usage"
        });
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"","model":"pub","x":[1, 2],"k\"q":2,"created":7}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["k\"q"], 2);
        // A key that repeats is written once, with the new value.
        let o = RawObject::parse(br#"{"model":"a","model":"b"}"#).unwrap();
        out.clear();
        o.write_with(&mut out, &[("model", b"\"m\"")], |_| false);
        assert_eq!(out, br#"{"model":"m"}"#);
        // An empty object gets the members set, and nothing else.
        let o = RawObject::parse(b"{}").unwrap();
        out.clear();
        o.write_with(&mut out, &[("id", b"\"x\"")], |_| true);
        assert_eq!(out, br#"{"id":"x"}"#);
    }

    #[test]
    fn a_non_null_member_is_found_by_its_bytes() {
        let (finish, error) = (KeyProbe::new("finish_reason"), KeyProbe::new("error"));
        let may_hold_non_null = |text: &str, key: &str| match key {
            "error" => error.may_hold_non_null(text),
            _ => finish.may_hold_non_null(text),
        };
        let chunk = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        assert!(!may_hold_non_null(chunk, "finish_reason"));
        assert!(!may_hold_non_null(chunk, "error"));
        let spaced = r#"{"choices": [{"finish_reason" :  null}], "error": null}"#;
        assert!(!may_hold_non_null(spaced, "finish_reason"));
        assert!(!may_hold_non_null(spaced, "error"));
        assert!(may_hold_non_null(
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            "finish_reason"
        ));
        assert!(may_hold_non_null(
            r#"{"choices":[{"finish_reason" : "length"}]}"#,
            "finish_reason"
        ));
        assert!(may_hold_non_null(r#"{"error":{"message":"boom"}}"#, "error"));
        // The word as a value, or inside a longer key, is not the member.
        assert!(!may_hold_non_null(
            r#"{"type":"error","delta":{"content":"an error"}}"#,
            "error"
        ));
        assert!(!may_hold_non_null(
            r#"{"last_error":{"m":1},"errors":[1]}"#,
            "error"
        ));
        // Every object whose parse finds the member non-null is caught.
        for text in [
            r#"{"a":1,"error":{"message":"x"}}"#,
            r#"{"error":"text"}"#,
            r#"{"error":0}"#,
            "{\"choices\":[{\"finish_reason\":\n\"stop\"}]}",
        ] {
            let key = if text.contains("choices") {
                "finish_reason"
            } else {
                "error"
            };
            assert!(may_hold_non_null(text, key), "{text}");
        }
    }

    #[test]
    fn what_is_not_an_object_is_refused() {
        for bad in [&b"[1]"[..], b"\"s\"", b"{\"a\":}", b"{\"a\":1", b"", b"null"] {
            assert!(RawObject::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Whitespace around the value, as upstreams send it, is fine.
        assert_eq!(
            RawObject::parse(b" {\"a\": [1, 2] }\n")
                .unwrap()
                .get("a")
                .unwrap(),
            "[1, 2]"
        );
    }
}
