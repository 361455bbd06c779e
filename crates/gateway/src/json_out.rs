//! JSON objects written by hand, for the two that every request writes: its usage row and its
//! `routing_metadata`. serde's derived serialisers went through a map serialiser that escaped every
//! key and grew the buffer as it went, about 5,500 instructions each (callgrind); these write the
//! known keys as they are and copy a string in one piece unless it holds something JSON escapes.
//!
//! The output is byte for byte what `serde_json` writes for the same struct; debug builds check it on
//! every call ([`debug_check`]), so every test that logs a request or returns metadata compares them.

/// Debug builds check that `written` is what `serde_json` writes for `value` (`what` names it in the
/// failure); release builds check nothing.
pub(crate) fn debug_check<T: serde::Serialize>(written: &[u8], value: &T, what: &str) {
    debug_assert_eq!(
        std::str::from_utf8(written).ok(),
        serde_json::to_string(value).ok().as_deref(),
        "the hand-written {what} differs from serde's"
    );
}

/// Writes `s` as a JSON string: as `serde_json` would (which escapes `"`, `\` and control characters,
/// and nothing else).
pub(crate) fn string(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // A string cannot fail to serialise.
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// Whether `bytes` hold a control character, `"` or `\`: eight bytes at a time (the usual test per byte
/// took about 5 instructions a byte, most of the cost of writing an id).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // A byte of `x` that is zero sets its high bit here (bytes above it may be set spuriously only
    // when a lower byte was zero, so "any set" stays exact).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let v = u64::from_ne_bytes(w);
        // Bytes below 0x20: subtracting 0x20 from each borrows into its high bit (exact for any byte
        // below 0x80, and bytes at or above 0x80 are masked out by `!v`).
        let control = v.wrapping_sub(ONES * 0x20) & !v & HIGH;
        let quote = zero(v ^ (ONES * u64::from(b'"')));
        let backslash = zero(v ^ (ONES * u64::from(b'\\')));
        if control | quote | backslash != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// An object being written: `{` when made, `}` at [`Obj::end`].
pub(crate) struct Obj<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> Obj<'a> {
    pub(crate) fn new(out: &'a mut Vec<u8>) -> Obj<'a> {
        out.push(b'{');
        Obj { out, first: true }
    }

    /// Starts a member; `key` is a plain name with nothing to escape.
    pub(crate) fn key(&mut self, key: &str) -> &mut Vec<u8> {
        debug_assert!(!key.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\'));
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    pub(crate) fn str(&mut self, key: &str, v: &str) {
        string(self.key(key), v);
    }

    pub(crate) fn opt_str(&mut self, key: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(key, v),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    pub(crate) fn u64(&mut self, key: &str, v: u64) {
        let mut buf = itoa::Buffer::new();
        let text = buf.format(v);
        self.key(key).extend_from_slice(text.as_bytes());
    }

    pub(crate) fn i64(&mut self, key: &str, v: i64) {
        let mut buf = itoa::Buffer::new();
        let text = buf.format(v);
        self.key(key).extend_from_slice(text.as_bytes());
    }

    pub(crate) fn opt_u64(&mut self, key: &str, v: Option<u64>) {
        match v {
            Some(v) => self.u64(key, v),
            None => self.key(key).extend_from_slice(b"null"),
        }
    }

    /// A number, or `null` when there is none or it is not finite (as `serde_json` writes NaN).
    pub(crate) fn opt_f64(&mut self, key: &str, v: Option<f64>) {
        let out = self.key(key);
        match v {
            Some(v) if v.is_finite() => {
                let mut buf = ryu::Buffer::new();
                out.extend_from_slice(buf.format_finite(v).as_bytes());
            }
            _ => out.extend_from_slice(b"null"),
        }
    }

    pub(crate) fn bool(&mut self, key: &str, v: bool) {
        self.key(key)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    pub(crate) fn end(self) {
        self.out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        for s in [
            "",
            "plain",
            "quote \" inside",
            "back\\slash",
            "new\nline\ttab\r",
            "\u{1}\u{1f}",
            "ünïcødé and emoji 🚀",
            "slash / and del \u{7f}",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn the_escape_test_finds_every_byte_that_needs_one_wherever_it_lies() {
        for len in 0..24 {
            for at in 0..len {
                for b in 0u8..=255 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let want = b < 0x20 || b == b'"' || b == b'\\';
                    assert_eq!(needs_escape(&bytes), want, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        // A zero byte next to others that borrow.
        assert!(needs_escape(b"\x00\x01abcdefgh"));
        assert!(!needs_escape("ünïcødé 🚀 and more text".as_bytes()));
    }

    #[test]
    fn an_object_is_written_as_serde_json_writes_it() {
        let mut out = Vec::new();
        let mut o = Obj::new(&mut out);
        o.str("a", "x\"y");
        o.opt_str("b", None);
        o.u64("c", u64::MAX);
        o.i64("d", -5);
        o.opt_u64("e", None);
        o.opt_f64("f", Some(0.1 + 0.2));
        o.opt_f64("g", Some(f64::NAN));
        o.opt_f64("h", Some(3.0));
        o.bool("i", false);
        o.end();
        let want = serde_json::json!({
            "a": "x\"y", "b": null, "c": u64::MAX, "d": -5, "e": null, "f": 0.1 + 0.2,
            "g": null, "h": 3.0, "i": false,
        });
        assert_eq!(
            String::from_utf8(out).unwrap(),
            serde_json::to_string(&want).unwrap()
        );
    }
}
