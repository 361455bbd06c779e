//! Streaming text: UTF-8 assembly across token boundaries, and stop strings that may span tokens.

/// Turns a stream of byte pieces (one per token) into text without ever splitting a character:
/// an incomplete multi-byte sequence at the end of a piece waits for the next piece. Invalid bytes
/// become U+FFFD.
#[derive(Debug, Default, Clone)]
pub struct Utf8Decoder {
    pending: Vec<u8>,
}

impl Utf8Decoder {
    /// A decoder with nothing pending.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `bytes` and returns every complete character available so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut start = 0;
        loop {
            match std::str::from_utf8(&self.pending[start..]) {
                Ok(s) => {
                    out.push_str(s);
                    start = self.pending.len();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    if let Ok(s) = std::str::from_utf8(&self.pending[start..start + valid]) {
                        out.push_str(s);
                    }
                    match e.error_len() {
                        // Incomplete sequence at the end: keep it for the next piece.
                        None => {
                            start += valid;
                            break;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            start += valid + bad;
                        }
                    }
                }
            }
        }
        self.pending.drain(..start);
        out
    }

    /// Whether bytes of an unfinished character are waiting.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Flushes what is left at the end of the stream (an unfinished character becomes U+FFFD).
    pub fn finish(&mut self) -> String {
        let out = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        out
    }
}

/// Matches stop strings across token boundaries. Text that could still turn out to be the start of
/// a stop string is held back; a stop string itself is never emitted.
#[derive(Debug, Default, Clone)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// Text that is safe to emit now (may be empty); generation goes on.
    Emit(String),
    /// A stop string was found: emit this text (everything before it) and stop.
    Stop(String),
}

impl StopMatcher {
    /// A matcher for `stops` (empty strings are ignored).
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds newly decoded text.
    pub fn push(&mut self, text: &str) -> StopOutcome {
        if self.stops.is_empty() {
            return StopOutcome::Emit(text.to_owned());
        }
        self.pending.push_str(text);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.pending[..at].to_owned();
            self.pending.clear();
            return StopOutcome::Stop(out);
        }
        // Longest suffix of `pending` that is a proper prefix of some stop string.
        let mut hold = 0;
        for stop in &self.stops {
            let max = (stop.len() - 1).min(self.pending.len());
            for len in (hold + 1..=max).rev() {
                let start = self.pending.len() - len;
                if self.pending.is_char_boundary(start)
                    && stop.as_bytes().starts_with(&self.pending.as_bytes()[start..])
                {
                    hold = len;
                    break;
                }
            }
        }
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_owned();
        self.pending.drain(..cut);
        StopOutcome::Emit(out)
    }

    /// Releases held-back text at the end of the stream (no stop string completed).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_pieces() {
        let text = "héllo 👋🏽 wörld — 日本";
        let bytes = text.as_bytes();
        // Every possible split into single bytes, then into 2- and 3-byte pieces.
        for size in 1..=4 {
            let mut d = Utf8Decoder::new();
            let mut out = String::new();
            for piece in bytes.chunks(size) {
                let s = d.push(piece);
                // Whatever comes out is valid UTF-8 by construction; make sure it is never a
                // replacement character from a split sequence.
                assert!(!s.contains('\u{FFFD}'), "split at size {size}: {s:?}");
                out.push_str(&s);
            }
            out.push_str(&d.finish());
            assert_eq!(out, text);
        }
    }

    #[test]
    fn utf8_holds_incomplete_and_replaces_invalid() {
        let mut d = Utf8Decoder::new();
        assert_eq!(d.push(&[0xF0, 0x9F]), "");
        assert!(d.has_pending());
        assert_eq!(d.push(&[0x98, 0x80, b'a']), "😀a");
        assert_eq!(d.push(&[0xFF, b'b']), "\u{FFFD}b");
        assert_eq!(d.push(&[0xE2, 0x82]), "");
        assert_eq!(d.finish(), "\u{FFFD}");
    }

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let stops: Vec<String> = stops.iter().map(|s| (*s).to_owned()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = String::new();
        for p in pieces {
            match m.push(p) {
                StopOutcome::Emit(s) => out.push_str(&s),
                StopOutcome::Stop(s) => {
                    out.push_str(&s);
                    return (out, true);
                }
            }
        }
        out.push_str(&m.finish());
        (out, false)
    }

    #[test]
    fn stop_across_tokens() {
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
        assert_eq!(run(&["END"], &["abc EN", "X"]), ("abc ENX".into(), false));
        assert_eq!(run(&["END"], &["abc EN"]), ("abc EN".into(), false));
        assert_eq!(
            run(&["\n\n", "###"], &["a\n", "b##", "#c"]),
            ("a\nb".into(), true)
        );
        assert_eq!(run(&[], &["a", "b"]), ("ab".into(), false));
        assert_eq!(run(&["é!"], &["caf", "é", "!"]), ("caf".into(), true));
        // The earliest stop wins even if a longer one started before.
        assert_eq!(run(&["abcd", "bc"], &["xab", "cd"]), ("x".into(), true));
        assert_eq!(run(&["abcd", "bc"], &["xab", "ce"]), ("xa".into(), true));
    }

    #[test]
    fn stop_holds_back_only_possible_prefixes() {
        let mut m = StopMatcher::new(&["<|end|>".to_owned()]);
        assert_eq!(m.push("hello <"), StopOutcome::Emit("hello ".into()));
        assert_eq!(m.push("|en"), StopOutcome::Emit(String::new()));
        assert_eq!(m.push("x"), StopOutcome::Emit("<|enx".into()));
    }
}
