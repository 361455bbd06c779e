//! An HTTP/1.1 client connection of our own: the request written and its answer read by the task
//! that sent it, with no connection task, no channel between the two, and no buffer kept between
//! reads.
//!
//! hyper's client connection is a task of its own, fed by a channel, with an 8 KiB read buffer and a
//! write buffer held for the connection's life: about 22 KB of RSS for each open stream (bench
//! `faults.sh`), and two task wake-ups for every request. Here a read lands in a buffer on the stack
//! and only what it brought is kept, in an allocation of that size, shared with the chunks handed on:
//! a stream that waits between events holds its socket and a few hundred bytes.
//!
//! What it reads (RFC 9112): a status line and headers (at most [`MAX_HEAD`] bytes and
//! [`MAX_HEADERS`] fields; interim 1xx answers are passed over), then a body framed by
//! `Transfer-Encoding: chunked` (extensions and trailers read and dropped), by `Content-Length`, or by
//! the connection's close. An answer that cannot carry a body (to `HEAD`, 1xx, 204, 304) has none.
//! The connection can carry another request only when the answer was read to its framed end and
//! neither side asked to close it.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// The longest answer head read (hyper's default buffer limit is about 400 KB; an LLM API's head is
/// under 2 KB).
pub const MAX_HEAD: usize = 64 * 1024;
/// The most header fields an answer may have (hyper's default).
pub const MAX_HEADERS: usize = 100;
/// What one read takes from the socket at most (on the stack, then kept at its size).
const READ: usize = 16 * 1024;
/// The longest chunk-size line or trailer field.
const MAX_LINE: usize = 8 * 1024;
/// A request body at most this long is written with its head in one write.
const COALESCE: usize = 16 * 1024;

/// Why a request or its answer failed.
#[derive(Debug)]
pub enum H1Error {
    /// Writing the request failed: nothing of an answer was read.
    Write(io::Error),
    /// Reading the answer failed, or it broke the protocol.
    Read(String),
}

impl std::fmt::Display for H1Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            H1Error::Write(e) => write!(f, "sending the request failed: {e}"),
            H1Error::Read(e) => f.write_str(e),
        }
    }
}

fn broken(what: impl Into<String>) -> H1Error {
    H1Error::Read(what.into())
}

/// One HTTP/1.1 connection, idle or carrying a request.
pub struct H1Conn<T> {
    io: T,
    /// What was read and not yet consumed; empty (and unallocated) between answers.
    buf: BytesMut,
}

impl<T> std::fmt::Debug for H1Conn<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H1Conn")
            .field("buffered", &self.buf.len())
            .finish_non_exhaustive()
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> H1Conn<T> {
    pub fn new(io: T) -> H1Conn<T> {
        H1Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can carry a request: the peer has neither closed it nor sent
    /// anything (an answer nobody asked for, or a TLS alert). Reads without waiting.
    pub fn is_reusable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut tmp = [MaybeUninit::<u8>::uninit(); 64];
        let mut rb = ReadBuf::uninit(&mut tmp);
        // Pending: nothing arrived, the connection is open (TLS may have read a session ticket).
        matches!(Pin::new(&mut self.io).poll_read(&mut cx, &mut rb), Poll::Pending)
    }

    /// Writes a request. `target` is the request line's (`/path?query`, or the whole URL to a forward
    /// proxy); `host` is sent unless `headers` has one; the framing headers are the connection's own.
    pub async fn send(
        &mut self,
        method: &Method,
        target: &Uri,
        headers: &HeaderMap,
        host: &HeaderValue,
        body: &[u8],
    ) -> Result<(), H1Error> {
        let mut head = Vec::with_capacity(
            64 + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>()
                + if body.len() <= COALESCE { body.len() } else { 0 },
        );
        head.extend_from_slice(method.as_str().as_bytes());
        head.push(b' ');
        match target.path_and_query() {
            Some(pq) if target.scheme().is_none() => head.extend_from_slice(pq.as_str().as_bytes()),
            None if target.scheme().is_none() => head.push(b'/'),
            _ => head.extend_from_slice(target.to_string().as_bytes()),
        }
        head.extend_from_slice(b" HTTP/1.1\r\n");
        if !headers.contains_key(HOST) {
            field(&mut head, b"host", host.as_bytes());
        }
        for (name, value) in headers {
            if name == CONTENT_LENGTH || name == TRANSFER_ENCODING {
                continue;
            }
            field(&mut head, name.as_str().as_bytes(), value.as_bytes());
        }
        if !body.is_empty() || !matches!(*method, Method::GET | Method::HEAD) {
            let mut n = itoa::Buffer::new();
            field(&mut head, b"content-length", n.format(body.len()).as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let result = async {
            if body.len() <= COALESCE {
                head.extend_from_slice(body);
                self.io.write_all(&head).await?;
            } else {
                self.io.write_all(&head).await?;
                self.io.write_all(body).await?;
            }
            self.io.flush().await
        };
        result.await.map_err(H1Error::Write)
    }

    /// Reads the answer's head (interim 1xx answers passed over) and how its body is framed.
    pub async fn read_head(&mut self, method: &Method) -> Result<(http::response::Parts, Body), H1Error> {
        loop {
            if let Some((parts, body)) = self.parse_head(method)? {
                return Ok((parts, body));
            }
            if self.buf.len() >= MAX_HEAD {
                return Err(broken(format!(
                    "the answer's head is longer than {MAX_HEAD} bytes"
                )));
            }
            let n = poll_fn(|cx| self.poll_fill(cx))
                .await
                .map_err(|e| broken(e.to_string()))?;
            if n == 0 {
                return Err(broken(if self.buf.is_empty() {
                    "the connection closed before an answer came"
                } else {
                    "the connection closed in the middle of the answer's head"
                }));
            }
        }
    }

    /// The head, if the buffer holds all of it.
    fn parse_head(&mut self, method: &Method) -> Result<Option<(http::response::Parts, Body)>, H1Error> {
        loop {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut resp = httparse::Response::new(&mut fields);
            let len = match resp.parse(&self.buf) {
                Ok(httparse::Status::Complete(len)) => len,
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(httparse::Error::TooManyHeaders) => {
                    return Err(broken(format!(
                        "the answer has more than {MAX_HEADERS} header fields"
                    )));
                }
                Err(e) => return Err(broken(format!("the answer is not HTTP/1.1: {e}"))),
            };
            let code = resp.code.unwrap_or(0);
            let status = StatusCode::from_u16(code).map_err(|_| broken(format!("bad status {code}")))?;
            let http10 = resp.version == Some(0);
            if status.is_informational() {
                if status == StatusCode::SWITCHING_PROTOCOLS {
                    return Err(broken("the upstream switched protocols"));
                }
                self.buf.advance(len);
                continue;
            }
            // Where each field lies in the head, so that its name and value are read from the head
            // once it is frozen: values are slices of it, not copies.
            let base = self.buf.as_ptr() as usize;
            let count = resp.headers.len();
            let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
            for (span, f) in spans.iter_mut().zip(resp.headers.iter()) {
                let name = f.name.as_ptr() as usize - base;
                let value = f.value.as_ptr() as usize - base;
                *span = (
                    name as u32,
                    (name + f.name.len()) as u32,
                    value as u32,
                    (value + f.value.len()) as u32,
                );
            }
            let head = self.buf.split_to(len).freeze();
            if self.buf.is_empty() {
                self.buf = BytesMut::new();
            }
            let mut headers = HeaderMap::with_capacity(count);
            for &(ns, ne, vs, ve) in &spans[..count] {
                let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                    .map_err(|_| broken("the answer has a bad header name"))?;
                let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                    .map_err(|_| broken(format!("bad value of header `{name}`")))?;
                headers.append(name, value);
            }
            let body = Body::framed(method, status, http10, &headers)?;
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = status;
            parts.version = if http10 {
                Version::HTTP_10
            } else {
                Version::HTTP_11
            };
            parts.headers = headers;
            return Ok(Some((parts, body)));
        }
    }

    /// Reads once into a buffer on the stack and keeps what came: how many bytes (0 at the end).
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let mut tmp = [MaybeUninit::<u8>::uninit(); READ];
        let mut rb = ReadBuf::uninit(&mut tmp);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut rb))?;
        let got = rb.filled();
        self.buf.extend_from_slice(got);
        Poll::Ready(Ok(got.len()))
    }

    /// The body's next piece: `None` at its framed end (then `body.reusable()` says whether the
    /// connection can carry another request).
    pub fn poll_data(
        &mut self,
        body: &mut Body,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, H1Error>>> {
        loop {
            match body.decode(&mut self.buf) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                Ok(Some(data)) => {
                    if self.buf.is_empty() {
                        // Not kept for the next read: the chunk handed on holds it, at its size.
                        self.buf = BytesMut::new();
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Ok(None) if body.ended() => return Poll::Ready(None),
                Ok(None) => {}
            }
            match ready!(self.poll_fill(cx)) {
                Err(e) => return Poll::Ready(Some(Err(broken(e.to_string())))),
                Ok(0) => {
                    return Poll::Ready(match body.eof() {
                        Ok(()) => None,
                        Err(e) => Some(Err(e)),
                    });
                }
                Ok(_) => {}
            }
        }
    }

    /// Reads what is already buffered of the body, up to `limit` bytes of it, without waiting:
    /// whether its end was there.
    pub fn skip_buffered(&mut self, body: &mut Body, limit: usize) -> Result<bool, H1Error> {
        let mut read = 0;
        loop {
            match body.decode(&mut self.buf)? {
                Some(data) => {
                    read += data.len();
                    if read > limit {
                        return Err(broken("the rest of the body is too long"));
                    }
                }
                None => return Ok(body.ended()),
            }
        }
    }
}

fn field(head: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    head.extend_from_slice(name);
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// How an answer's body is framed, and how far it has been read.
#[derive(Debug)]
pub struct Body {
    framing: Framing,
    /// Whether the connection can carry another request once the body has ended.
    keep_alive: bool,
}

#[derive(Debug, PartialEq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the connection closes.
    Close,
    Ended,
}

#[derive(Debug, PartialEq)]
enum Chunk {
    /// A chunk-size line comes next.
    Size,
    /// This many bytes of the chunk's data are left.
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// Trailer fields, until an empty line.
    Trailers,
}

impl Body {
    fn framed(
        method: &Method,
        status: StatusCode,
        http10: bool,
        headers: &HeaderMap,
    ) -> Result<Body, H1Error> {
        let close = headers.get_all(CONNECTION).iter().any(|v| has_token(v, "close"));
        let keep_alive = if http10 {
            headers
                .get_all(CONNECTION)
                .iter()
                .any(|v| has_token(v, "keep-alive"))
                && !close
        } else {
            !close
        };
        if *method == Method::HEAD || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return Ok(Body {
                framing: Framing::Ended,
                keep_alive,
            });
        }
        let mut te = headers.get_all(TRANSFER_ENCODING).iter().peekable();
        if te.peek().is_some() {
            // Chunked only when it is the last coding; with a Content-Length beside it the message is
            // suspect and the connection is not used again (RFC 9112 §6.3).
            let chunked = te
                .last()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            let with_length = headers.contains_key(CONTENT_LENGTH);
            return Ok(if chunked && !http10 {
                Body {
                    framing: Framing::Chunked(Chunk::Size),
                    keep_alive: keep_alive && !with_length,
                }
            } else {
                Body {
                    framing: Framing::Close,
                    keep_alive: false,
                }
            });
        }
        let mut length = None;
        for v in headers.get_all(CONTENT_LENGTH) {
            for part in v.to_str().unwrap_or("x").split(',') {
                let part = part.trim();
                let n = (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
                    .then(|| part.parse::<u64>().ok())
                    .flatten()
                    .ok_or_else(|| broken("the answer's Content-Length is not a number"))?;
                if length.is_some_and(|l| l != n) {
                    return Err(broken("the answer has two different Content-Lengths"));
                }
                length = Some(n);
            }
        }
        Ok(match length {
            Some(0) => Body {
                framing: Framing::Ended,
                keep_alive,
            },
            Some(n) => Body {
                framing: Framing::Length(n),
                keep_alive,
            },
            None => Body {
                framing: Framing::Close,
                keep_alive: false,
            },
        })
    }

    /// Whether the body has been read to its end.
    pub fn ended(&self) -> bool {
        self.framing == Framing::Ended
    }

    /// Whether the connection can carry another request: the body ended where its framing said.
    pub fn reusable(&self) -> bool {
        self.ended() && self.keep_alive
    }

    /// The next piece of data in `buf`, if any; the framing consumed as it goes.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, H1Error> {
        loop {
            match &mut self.framing {
                Framing::Ended => return Ok(None),
                Framing::Close => {
                    return Ok((!buf.is_empty()).then(|| buf.split().freeze()));
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let n = (*left).min(buf.len() as u64) as usize;
                    *left -= n as u64;
                    if *left == 0 {
                        self.framing = Framing::Ended;
                    }
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Framing::Chunked(chunk) => match chunk {
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(None);
                        }
                        let n = (*left).min(buf.len() as u64) as usize;
                        *left -= n as u64;
                        if *left == 0 {
                            *chunk = Chunk::DataEnd;
                        }
                        return Ok(Some(buf.split_to(n).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(broken("a chunk of the answer's body does not end with CRLF"));
                        }
                        buf.advance(2);
                        *chunk = Chunk::Size;
                    }
                    Chunk::Size => {
                        let Some(line) = line(buf)? else { return Ok(None) };
                        let size = line.split(|&b| b == b';').next().unwrap_or_default().trim_ascii();
                        let n = std::str::from_utf8(size)
                            .ok()
                            .filter(|s| !s.is_empty() && s.len() <= 16)
                            .and_then(|s| u64::from_str_radix(s, 16).ok())
                            .ok_or_else(|| broken("a chunk size of the answer's body is not hexadecimal"))?;
                        let len = line.len() + 2;
                        buf.advance(len);
                        *chunk = if n == 0 { Chunk::Trailers } else { Chunk::Data(n) };
                    }
                    Chunk::Trailers => {
                        let Some(line) = line(buf)? else { return Ok(None) };
                        let last = line.is_empty();
                        let len = line.len() + 2;
                        buf.advance(len);
                        if last {
                            self.framing = Framing::Ended;
                        }
                    }
                },
            }
        }
    }

    /// The connection closed: the end of a body framed by it, else a body cut short.
    fn eof(&mut self) -> Result<(), H1Error> {
        match self.framing {
            Framing::Ended => Ok(()),
            Framing::Close => {
                self.framing = Framing::Ended;
                Ok(())
            }
            _ => Err(broken("the connection closed before the answer's body ended")),
        }
    }
}

/// The line at the start of `buf`, without its CRLF, once all of it is there.
fn line(buf: &BytesMut) -> Result<Option<&[u8]>, H1Error> {
    match memchr::memchr(b'\n', buf) {
        Some(0) => Err(broken("a bare LF in the answer's chunked body")),
        Some(i) if buf[i - 1] == b'\r' => Ok(Some(&buf[..i - 1])),
        Some(_) => Err(broken("a bare LF in the answer's chunked body")),
        None if buf.len() > MAX_LINE => Err(broken("a line of the answer's chunked body is too long")),
        None => Ok(None),
    }
}

fn has_token(v: &HeaderValue, token: &str) -> bool {
    v.to_str()
        .is_ok_and(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, DuplexStream};

    async fn answer(
        raw: &[u8],
        method: Method,
    ) -> (H1Conn<DuplexStream>, DuplexStream, http::response::Parts, Body) {
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut conn = H1Conn::new(ours);
        theirs.write_all(raw).await.unwrap();
        let (parts, body) = conn.read_head(&method).await.unwrap();
        (conn, theirs, parts, body)
    }

    async fn read_all(conn: &mut H1Conn<DuplexStream>, body: &mut Body) -> Result<Vec<Bytes>, H1Error> {
        let mut out = Vec::new();
        while let Some(d) = poll_fn(|cx| conn.poll_data(body, cx)).await {
            out.push(d?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn the_request_is_written_with_host_and_length() {
        let (ours, mut theirs) = tokio::io::duplex(1 << 16);
        let mut conn = H1Conn::new(ours);
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer k"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        let host = HeaderValue::from_static("up:8080");
        let target: Uri = "/v1/chat?x=1".parse().unwrap();
        conn.send(&Method::POST, &target, &headers, &host, b"{}")
            .await
            .unwrap();
        let mut got = vec![0; 200];
        let n = theirs.read(&mut got).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&got[..n]).unwrap(),
            "POST /v1/chat?x=1 HTTP/1.1\r\nhost: up:8080\r\nauthorization: Bearer k\r\ncontent-length: 2\r\n\r\n{}"
        );
        // To a forward proxy the whole URL; a GET without a body has no length.
        let target: Uri = "http://up:8080/v1/models".parse().unwrap();
        conn.send(&Method::GET, &target, &HeaderMap::new(), &host, b"")
            .await
            .unwrap();
        let n = theirs.read(&mut got).await.unwrap();
        assert_eq!(
            std::str::from_utf8(&got[..n]).unwrap(),
            "GET http://up:8080/v1/models HTTP/1.1\r\nhost: up:8080\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_length_framed_answer_leaves_the_connection_reusable() {
        let (mut conn, _theirs, parts, mut body) = answer(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello",
            Method::POST,
        )
        .await;
        assert_eq!(parts.status, 200);
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(read_all(&mut conn, &mut body).await.unwrap().concat(), b"hello");
        assert!(body.reusable());
        assert!(conn.is_reusable());
    }

    #[tokio::test]
    async fn a_chunked_answer_is_read_piece_by_piece_with_extensions_and_trailers() {
        let (mut conn, mut theirs, _, mut body) = answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n",
            Method::POST,
        )
        .await;
        let first = poll_fn(|cx| conn.poll_data(&mut body, cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"hello");
        // The rest arrives split at every awkward place.
        for piece in [
            &b"1"[..],
            b"0\r",
            b"\n0123456789",
            b"abcdef\r",
            b"\n0\r\nx-t: 1\r\n",
            b"\r\n",
        ] {
            theirs.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        let rest = read_all(&mut conn, &mut body).await.unwrap().concat();
        assert_eq!(rest, b"0123456789abcdef");
        assert!(body.reusable());
    }

    #[tokio::test]
    async fn a_body_read_to_the_close_is_not_reused() {
        let (mut conn, theirs, _, mut body) = answer(b"HTTP/1.1 200 OK\r\n\r\nall of it", Method::GET).await;
        drop(theirs);
        assert_eq!(
            read_all(&mut conn, &mut body).await.unwrap().concat(),
            b"all of it"
        );
        assert!(body.ended() && !body.reusable());
    }

    #[tokio::test]
    async fn connection_close_and_http10_are_not_reused() {
        let (mut conn, _t, _, mut body) = answer(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
            Method::POST,
        )
        .await;
        read_all(&mut conn, &mut body).await.unwrap();
        assert!(body.ended() && !body.reusable());
        let (mut conn, _t, parts, mut body) =
            answer(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx", Method::POST).await;
        assert_eq!(parts.version, Version::HTTP_10);
        read_all(&mut conn, &mut body).await.unwrap();
        assert!(!body.reusable());
    }

    #[tokio::test]
    async fn bodies_cut_short_or_malformed_are_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhiXX",
        ] {
            let (mut conn, theirs, _, mut body) = answer(raw, Method::POST).await;
            drop(theirs);
            assert!(
                read_all(&mut conn, &mut body).await.is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }

    #[tokio::test]
    async fn bad_heads_are_errors() {
        for raw in [
            &b"SMTP ready\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        ] {
            let (ours, mut theirs) = tokio::io::duplex(1 << 16);
            let mut conn = H1Conn::new(ours);
            theirs.write_all(raw).await.unwrap();
            drop(theirs);
            assert!(
                conn.read_head(&Method::POST).await.is_err(),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        // Closed before any answer, or in the middle of the head.
        let (ours, theirs) = tokio::io::duplex(64);
        drop(theirs);
        let e = H1Conn::new(ours).read_head(&Method::POST).await.unwrap_err();
        assert!(e.to_string().contains("before an answer"), "{e}");
        // A head longer than the limit.
        let (ours, mut theirs) = tokio::io::duplex(1 << 20);
        let mut conn = H1Conn::new(ours);
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        theirs.write_all(&[b'a'; MAX_HEAD + 10]).await.unwrap();
        let e = conn.read_head(&Method::POST).await.unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[tokio::test]
    async fn answers_without_a_body() {
        let (mut conn, _t, _, mut body) = answer(b"HTTP/1.1 204 No Content\r\n\r\n", Method::POST).await;
        assert!(read_all(&mut conn, &mut body).await.unwrap().is_empty());
        assert!(body.reusable());
        let (mut conn, _t, _, mut body) =
            answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", Method::HEAD).await;
        assert!(read_all(&mut conn, &mut body).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_idle_connection_the_peer_closed_or_wrote_to_is_not_reused() {
        let (ours, theirs) = tokio::io::duplex(64);
        let mut conn = H1Conn::new(ours);
        assert!(conn.is_reusable());
        drop(theirs);
        assert!(!conn.is_reusable());
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut conn = H1Conn::new(ours);
        theirs
            .write_all(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
            .await
            .unwrap();
        assert!(!conn.is_reusable());
    }

    #[tokio::test]
    async fn what_is_buffered_after_the_last_event_is_skipped_without_waiting() {
        let (mut conn, _t, _, mut body) = answer(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nlast\r\n0\r\n\r\n",
            Method::POST,
        )
        .await;
        let first = poll_fn(|cx| conn.poll_data(&mut body, cx))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&first[..], b"last");
        assert!(conn.skip_buffered(&mut body, 1024).unwrap());
        assert!(body.reusable());
    }
}
