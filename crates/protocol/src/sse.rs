//! Server-sent events: an incremental decoder (bytes in any split → events) and the encoder.
//!
//! The decoder follows the WHATWG event-stream rules: lines end in `\n`, `\r\n` or `\r`; a blank line
//! dispatches; `data` lines join with `\n`; lines starting with `:` are comments; one optional space after
//! the colon is dropped. A line longer than the configured limit is an error rather than unbounded memory.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field, if any.
    pub event: Option<String>,
    pub data: String,
    pub id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseError {
    pub message: String,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SseError {}

/// Incremental SSE decoder.
#[derive(Debug)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Bytes of `buf` already scanned for a line end.
    scanned: usize,
    /// The previous chunk ended in `\r`: a `\n` at the start of the next one belongs to it.
    pending_cr: bool,
    event: Option<String>,
    data: String,
    has_data: bool,
    id: Option<String>,
    max_line: usize,
    max_event: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        SseDecoder::new()
    }
}

impl SseDecoder {
    /// A decoder with limits of 16 MiB per line and per event.
    pub fn new() -> SseDecoder {
        SseDecoder::with_limits(16 << 20, 16 << 20)
    }

    pub fn with_limits(max_line: usize, max_event: usize) -> SseDecoder {
        SseDecoder {
            buf: Vec::new(),
            scanned: 0,
            pending_cr: false,
            event: None,
            data: String::new(),
            has_data: false,
            id: None,
            max_line,
            max_event,
        }
    }

    /// Feeds bytes; appends every event they complete to `out`.
    pub fn push(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if chunk.is_empty() {
            // An empty read must not use up a pending `\r`: its `\n` may come in the next chunk.
            return Ok(());
        }
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        self.buf.extend_from_slice(chunk);
        let mut start = 0;
        let mut i = self.scanned;
        while let Some(at) = memchr::memchr2(b'\n', b'\r', &self.buf[i..]) {
            let line_end = i + at;
            let mut next = line_end + 1;
            if self.buf[line_end] == b'\r' {
                if next < self.buf.len() {
                    if self.buf[next] == b'\n' {
                        next += 1;
                    }
                } else {
                    self.pending_cr = true;
                }
            }
            let line = std::mem::take(&mut self.buf);
            let res = self.line(&line[start..line_end], out);
            self.buf = line;
            res?;
            start = next;
            i = next;
        }
        self.buf.drain(..start);
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_line {
            return Err(SseError {
                message: format!("SSE line longer than {} bytes", self.max_line),
            });
        }
        Ok(())
    }

    /// Ends the input: a final event not followed by a blank line is still delivered.
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if !self.buf.is_empty() {
            let line = std::mem::take(&mut self.buf);
            self.line(&line, out)?;
            self.scanned = 0;
        }
        self.dispatch(out);
        Ok(())
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(pos) => {
                let v = &line[pos + 1..];
                (&line[..pos], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        // Valid UTF-8 (the usual case) is checked by the fast validator; only invalid bytes take the
        // slower replacing path.
        let value = match std::str::from_utf8(value) {
            Ok(v) => std::borrow::Cow::Borrowed(v),
            Err(_) => String::from_utf8_lossy(value),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
                if self.data.len() > self.max_event {
                    return Err(SseError {
                        message: format!("SSE event larger than {} bytes", self.max_event),
                    });
                }
            }
            b"event" => self.event = Some(value.into_owned()),
            b"id" => self.id = Some(value.into_owned()),
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if !self.has_data && self.event.is_none() {
            self.id = None;
            return;
        }
        out.push(SseEvent {
            event: self.event.take(),
            data: std::mem::take(&mut self.data),
            id: self.id.take(),
        });
        self.has_data = false;
    }
}

/// Encodes `data: <payload>\n\n`.
pub fn data_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + 8);
    b.put_slice(b"data: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// Encodes `event: <name>\ndata: <payload>\n\n`.
pub fn event_frame(event: &str, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(payload.len() + event.len() + 16);
    b.put_slice(b"event: ");
    b.put_slice(event.as_bytes());
    b.put_slice(b"\ndata: ");
    b.put_slice(payload);
    b.put_slice(b"\n\n");
    b.freeze()
}

/// The OpenAI stream terminator.
pub const DONE_FRAME: &[u8] = b"data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        let mut out = Vec::new();
        for c in chunks {
            d.push(c, &mut out).unwrap();
        }
        d.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn decodes_fields_comments_and_multiline_data() {
        let evs = decode_all(&[b": ping\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: x\ndata: y\n\n"]);
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into(),
                    id: None
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into(),
                    id: None
                },
            ]
        );
    }

    #[test]
    fn handles_crlf_split_across_chunks() {
        let evs = decode_all(&[b"data: a\r", b"\n\r", b"\ndata:b\r\r"]);
        assert_eq!(
            evs.iter().map(|e| e.data.as_str()).collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_is_not_a_blank_line() {
        let evs = decode_all(&[b"data: a\r", b"", b"\nevent: e\r\ndata: b\r\n\r\n"]);
        assert_eq!(
            evs,
            vec![SseEvent {
                event: Some("e".into()),
                data: "a\nb".into(),
                id: None
            }]
        );
    }

    #[test]
    fn refuses_overlong_lines() {
        let mut d = SseDecoder::with_limits(8, 8);
        let mut out = Vec::new();
        assert!(d.push(b"data: 0123456789", &mut out).is_err());
    }

    proptest! {
        #[test]
        fn any_split_gives_the_same_events(
            datas in proptest::collection::vec("[a-z{}\":, ]{0,20}", 1..6),
            cuts in proptest::collection::vec(0usize..200, 0..8),
            crlf in any::<bool>(),
        ) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut text = String::new();
            for d in &datas {
                text.push_str(&format!("event: e{nl}data: {d}{nl}{nl}"));
            }
            let bytes = text.as_bytes();
            let whole = decode_all(&[bytes]);
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut pieces = Vec::new();
            let mut last = 0;
            for p in points {
                pieces.push(&bytes[last..p]);
                last = p;
            }
            pieces.push(&bytes[last..]);
            let split = decode_all(&pieces);
            prop_assert_eq!(&whole, &split);
            prop_assert_eq!(whole.len(), datas.len());
            for (ev, d) in whole.iter().zip(&datas) {
                prop_assert_eq!(&ev.data, d);
            }
        }
    }
}
