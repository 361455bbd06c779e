//! The HTTP client of every upstream: a connection pool of our own over hyper's client connections,
//! and a connector that does TLS with rustls (the platform's trust store, HTTP/2 by ALPN) and honours
//! the proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read when the provider
//! is made).
//!
//! The pool is ours, not hyper-util's, because a provider's client only ever talks to one origin (its
//! base URL): there is no pool key to hash and compare, no checkout racing a connect, and no task
//! spawned per request to wait for the connection to be free again. An HTTP/1.1 connection goes back
//! to the pool when its answer's body has been read to the end (a body dropped early closes it);
//! an HTTP/2 one, by prior knowledge or by ALPN, carries every request at once. A request that a
//! reused connection could not even start (the upstream closed it while idle) is sent again on
//! another connection, as hyper-util did.
//!
//! HTTP/1.1 is spoken by a client of our own ([`h1`]): the task that sends a request reads its answer,
//! with no connection task or channel between them and no buffer kept between reads, so that an open
//! stream costs its socket and little else. HTTP/2 is hyper's.
//!
//! This replaced reqwest on the hot path. reqwest's layers (a redirect policy that prints and parses
//! the URL again for every request, a copy of the header map, its own URL type) cost about 12% of a
//! proxied request's instructions, and it gave no say over the per-connection buffers. What reqwest did
//! that this does too: connect timeout (TCP, proxy tunnel and TLS handshake together), an idle-read
//! timeout for the answer's head and between its body chunks, `TCP_NODELAY`, a keep-alive pool, proxies.
//! What it does not: redirects are not followed (an LLM API answers a POST, and a 3xx is reported as
//! the upstream's error instead of silently turning the POST into a GET), and HTTPS proxies (TLS to the
//! proxy itself) are refused with a clear error; `http://` proxies tunnel HTTPS with CONNECT.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

mod h1;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Tcp = TokioIo<tokio::net::TcpStream>;
/// An HTTP/1.1 connection: ours, over the connector's stream.
type H1 = h1::H1Conn<TokioIo<Conn>>;

/// Why a request or its answer failed below HTTP.
#[derive(Debug)]
pub enum TransportError {
    /// No connection: refused, unresolvable, TLS refused, proxy refused, or the connect timeout.
    Connect(String),
    /// Nothing came for the idle timeout: no answer head, or no next body chunk.
    Idle,
    /// The request could not be sent or the answer's head not read.
    Send(String),
    /// The answer's body broke off.
    Body(String),
}

/// The message of the innermost cause, the one that says what happened.
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    detail
}

/// Per-provider settings of the client.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/2 from the first byte (h2c for `http://`, ALPN `h2` only for `https://`), every request
    /// multiplexed over one connection.
    pub http2_prior_knowledge: bool,
}

/// One provider's pooled client (cheap to clone: the pool is shared).
#[derive(Clone, Debug)]
pub struct Client {
    pool: Arc<Pool>,
    idle: Duration,
    /// What a plain-HTTP request through a proxy carries as `Proxy-Authorization` (the credentials of
    /// the proxy URL); a tunnel sends them in its CONNECT instead.
    proxy_auth: Option<HeaderValue>,
}

impl Client {
    /// A client for requests to `base_url`; its proxy (if the environment names one for that URL)
    /// is chosen now, once.
    pub fn new(base_url: &str, opts: ClientOptions) -> Result<Client, String> {
        let uri: Uri = base_url
            .parse()
            .map_err(|e| format!("base_url `{base_url}` is not a URL: {e}"))?;
        let https = uri.scheme() == Some(&Scheme::HTTPS);
        let route = match PROXIES.intercept(&uri) {
            None => Route::Direct,
            Some(p) => {
                if p.uri().scheme() != Some(&Scheme::HTTP) {
                    return Err(format!(
                        "the proxy for {base_url} ({}) is not an http:// URL; only http:// proxies are supported",
                        p.uri()
                    ));
                }
                let proxy = Arc::new(Proxy {
                    uri: p.uri().clone(),
                    auth: p.basic_auth().cloned(),
                });
                if https {
                    Route::Tunnel(proxy)
                } else {
                    Route::Forward(proxy)
                }
            }
        };
        let proxy_auth = match &route {
            Route::Forward(p) => p.auth.clone(),
            _ => None,
        };
        let h2 = opts.http2_prior_knowledge;
        if h2 && matches!(route, Route::Forward(_)) {
            return Err(format!(
                "http2_prior_knowledge: {base_url} is plain HTTP reached through a forward proxy, which speaks HTTP/1.1; \
                 name the upstream in NO_PROXY or leave HTTP/2 off"
            ));
        }
        // Certificates are loaded only for HTTPS upstreams (once for the process); a plain-HTTP
        // upstream gets a configuration that trusts nothing, and no connection of its uses it.
        let tls = tls_config(https)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(opts.connect_timeout));
        // With prior knowledge, ALPN offers only `h2`: a server that cannot speak it refuses the
        // handshake instead of answering HTTP/1.1 to a client that would send HTTP/2.
        let direct = HttpsConnectorBuilder::new()
            .with_tls_config((*tls).clone())
            .https_or_http();
        let direct = if h2 {
            direct.enable_http2().wrap_connector(http.clone())
        } else {
            direct.enable_http1().enable_http2().wrap_connector(http.clone())
        };
        // The builder above sets ALPN on its own copy; a tunnel's handshake needs the same offer.
        let mut alpn = (*tls).clone();
        alpn.alpn_protocols = if h2 {
            vec![b"h2".to_vec()]
        } else {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        };
        let connector = Connector {
            direct,
            http,
            tls: Arc::new(alpn),
            route,
            timeout: opts.connect_timeout,
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("base_url `{base_url}` has no host"))?;
        // `Host` as hyper-util wrote it: the port only when it is not the scheme's default.
        let host = match authority.port_u16() {
            Some(port) if !(port == 443 && https || port == 80 && !https) => {
                format!("{}:{port}", authority.host())
            }
            _ => authority.host().to_string(),
        };
        let host = HeaderValue::from_str(&host).map_err(|_| format!("base_url `{base_url}`: bad host"))?;
        let dst = Uri::builder()
            .scheme(if https { Scheme::HTTPS } else { Scheme::HTTP })
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| format!("base_url `{base_url}`: {e}"))?;
        let mut h2_builder = http2::Builder::new(BoxingExecutor);
        // One connection carries every request, so a dead one must be noticed: a PING after 30 s of
        // silence, and the connection is dropped when its answer takes longer than 10 s.
        h2_builder
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        let pool = Arc::new(Pool {
            absolute_form: matches!(connector.route, Route::Forward(_)),
            connector,
            dst,
            host,
            h2_only: h2,
            h2: h2_builder,
            idle: parking_lot::Mutex::new(Idle::default()),
            shared_h2: parking_lot::Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
        });
        Ok(Client {
            pool,
            idle: opts.idle_timeout,
            proxy_auth,
        })
    }

    /// Sends a request and waits (at most the idle timeout) for the answer's head.
    pub async fn send(
        &self,
        method: Method,
        uri: Uri,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, TransportError> {
        if let Some(auth) = &self.proxy_auth {
            headers.insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
        // Boxed: the request's state (the request, and the connection while it is sent and its
        // answer's head read) would otherwise grow the future of every handler, which a request
        // holds while it waits for its answer (hyper-util boxed its own, of 3.1 KiB).
        let request = Box::pin(self.pool.request(method, uri, headers, body));
        let (head, body) = match tokio::time::timeout(self.idle, request).await {
            Err(_) => return Err(TransportError::Idle),
            Ok(r) => r?,
        };
        Ok(Response {
            head,
            body,
            idle: self.idle,
        })
    }
}

/// How long an HTTP/1.1 connection may wait in the pool, and how many may wait (hyper-util's
/// settings before).
const POOL_IDLE: Duration = Duration::from_secs(90);
const POOL_MAX_IDLE: usize = 256;

/// The connections of one provider: all to one origin, its base URL's.
struct Pool {
    connector: Connector,
    /// Where every connection goes: the base URL's scheme and authority.
    dst: Uri,
    /// The `Host` of every HTTP/1.1 request.
    host: HeaderValue,
    /// Plain HTTP through a forward proxy: the request line names the whole URL.
    absolute_form: bool,
    h2_only: bool,
    h2: http2::Builder<BoxingExecutor>,
    /// Free HTTP/1.1 connections, the most recently used last.
    idle: parking_lot::Mutex<Idle>,
    /// The HTTP/2 connection, shared by every request while it lives.
    shared_h2: parking_lot::Mutex<Option<http2::SendRequest<Full<Bytes>>>>,
    /// With prior knowledge, one connect at a time: the requests that arrive meanwhile wait for it
    /// instead of each opening a connection of its own.
    h2_connect: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Idle {
    conns: VecDeque<(Box<H1>, Instant)>,
    /// Whether the task that closes connections idle too long runs.
    reaper: bool,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("dst", &self.dst)
            .field("h2_only", &self.h2_only)
            .field("idle", &self.idle.lock().conns.len())
            .finish_non_exhaustive()
    }
}

enum Sender {
    H1(Box<H1>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Spawns what hyper's HTTP/2 client runs beside each request (the request body's pipe, the wait for
/// the answer) boxed, as hyper-util's executor did. Spawned as they are, each task's cell is sized for
/// the largest kind hyper spawns, the connection's own task with its TLS state: heaptrack counted
/// 6.5 MB more at the peak of 2,000 streams over HTTP/2, and RSS with 10,000 was 60–100 MB higher.
#[derive(Clone, Copy, Debug)]
struct BoxingExecutor;

impl<F> hyper::rt::Executor<F> for BoxingExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        let fut: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(fut);
        tokio::spawn(fut);
    }
}

impl Pool {
    /// Sends a request (its URI absolute) on a pooled connection, or a new one. A request that a
    /// reused connection could not start is sent again, on another.
    async fn request(
        self: &Arc<Self>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(http::response::Parts, Body), TransportError> {
        // Each retry follows a reused connection that closed under the request; a bound all the same.
        const MAX_ATTEMPTS: u32 = 4;
        let mut attempt = 0;
        // Made for HTTP/2 only, and given back by hyper when the request could not start.
        let mut h2_req = None;
        loop {
            attempt += 1;
            let (sender, reused) = self.checkout().await?;
            match sender {
                Sender::H2(mut tx) => {
                    let req = h2_req.take().unwrap_or_else(|| {
                        let mut req = Request::new(Full::new(body.clone()));
                        *req.method_mut() = method.clone();
                        *req.uri_mut() = uri.clone();
                        *req.headers_mut() = headers.clone();
                        req
                    });
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let (head, body) = resp.into_parts();
                            return Ok((head, Body::H2(body)));
                        }
                        Err(mut e) => match e.take_message() {
                            // The next checkout passes over this connection: it is closed.
                            Some(back) if reused && attempt < MAX_ATTEMPTS => h2_req = Some(back),
                            _ => return Err(TransportError::Send(innermost(e.error()))),
                        },
                    }
                }
                Sender::H1(mut conn) => {
                    // The request line names the path only, except to a forward proxy.
                    let origin;
                    let target = if self.absolute_form {
                        &uri
                    } else {
                        origin = origin_form(&uri);
                        &origin
                    };
                    match conn.send(&method, target, &headers, &self.host, &body).await {
                        Ok(()) => {}
                        // Nothing of it reached an upstream that had closed the connection.
                        Err(h1::H1Error::Write(_)) if reused && attempt < MAX_ATTEMPTS => continue,
                        Err(e) => return Err(TransportError::Send(e.to_string())),
                    }
                    let (head, framing) = conn
                        .read_head(&method)
                        .await
                        .map_err(|e| TransportError::Send(e.to_string()))?;
                    return Ok((
                        head,
                        Body::H1(H1Body {
                            conn,
                            framing,
                            pool: self.clone(),
                        }),
                    ));
                }
            }
        }
    }

    /// A connection for one request, and whether it carried requests before.
    async fn checkout(self: &Arc<Self>) -> Result<(Sender, bool), TransportError> {
        if let Some(tx) = self.live_h2() {
            return Ok((Sender::H2(tx), true));
        }
        if self.h2_only {
            let _one = self.h2_connect.lock().await;
            if let Some(tx) = self.live_h2() {
                return Ok((Sender::H2(tx), true));
            }
            return Ok((Box::pin(self.connect()).await?, false));
        }
        loop {
            let next = self.idle.lock().conns.pop_back();
            let Some((mut conn, _)) = next else { break };
            // One the upstream closed (or wrote to) while it sat idle closes here.
            if conn.is_reusable() {
                return Ok((Sender::H1(conn), true));
            }
        }
        Ok((Box::pin(self.connect()).await?, false))
    }

    fn live_h2(&self) -> Option<http2::SendRequest<Full<Bytes>>> {
        let shared = self.shared_h2.lock();
        shared.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// A new connection: TCP (through the proxy, if any), TLS, then HTTP/2 when it was asked for or
    /// ALPN chose it, HTTP/1.1 otherwise. Its task runs on the runtime until the connection ends.
    /// Callers box it: its state (the TLS handshake's) is several KiB, and inline it would size the
    /// future of every request, which a request holds while it waits for its answer.
    async fn connect(&self) -> Result<Sender, TransportError> {
        let timeout = self.connector.timeout;
        let conn = match tokio::time::timeout(timeout, self.connector.clone().connect(self.dst.clone())).await
        {
            Err(_) => {
                return Err(TransportError::Connect(format!(
                    "no connection within {} ms",
                    timeout.as_millis()
                )));
            }
            Ok(Err(e)) => return Err(TransportError::Connect(innermost(&*e))),
            Ok(Ok(conn)) => conn,
        };
        let handshake_failed = |e: hyper::Error| TransportError::Connect(innermost(&e));
        if self.h2_only || conn.io.connected().is_negotiated_h2() {
            let (tx, task) = self.h2.handshake(conn).await.map_err(handshake_failed)?;
            tokio::spawn(async move {
                let _ = task.await;
            });
            *self.shared_h2.lock() = Some(tx.clone());
            Ok(Sender::H2(tx))
        } else {
            Ok(Sender::H1(Box::new(h1::H1Conn::new(TokioIo::new(conn)))))
        }
    }

    /// Returns a free HTTP/1.1 connection; the ones idle too long, or beyond the pool's size, close.
    fn put_back(this: &Arc<Self>, conn: Box<H1>) {
        let now = Instant::now();
        let mut idle = this.idle.lock();
        idle.expire(now);
        if idle.conns.len() >= POOL_MAX_IDLE {
            idle.conns.pop_front();
        }
        idle.conns.push_back((conn, now));
        if !idle.reaper {
            idle.reaper = true;
            tokio::spawn(reap(Arc::downgrade(this)));
        }
    }
}

impl Idle {
    fn expire(&mut self, now: Instant) {
        while self
            .conns
            .front()
            .is_some_and(|(_, since)| now.duration_since(*since) >= POOL_IDLE)
        {
            self.conns.pop_front();
        }
    }
}

/// Closes the connections idle longer than [`POOL_IDLE`] while nothing else touches the pool; ends
/// with the pool.
async fn reap(pool: Weak<Pool>) {
    let mut tick = tokio::time::interval(POOL_IDLE / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        pool.idle.lock().expire(Instant::now());
    }
}

/// `/path?query` of an absolute URI, for an HTTP/1.1 request line.
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) if pq.as_str() != "/" => Uri::from(pq.clone()),
        _ => Uri::from(PathAndQuery::from_static("/")),
    }
}

/// An upstream's answer: its head, and its body read with the idle timeout between chunks.
#[derive(Debug)]
pub struct Response {
    head: http::response::Parts,
    body: Body,
    idle: Duration,
}

/// An answer's body: hyper's over HTTP/2; over HTTP/1.1 the connection itself, back to the pool once
/// the body has been read to its end.
#[derive(Debug)]
enum Body {
    H2(Incoming),
    H1(H1Body),
}

#[derive(Debug)]
struct H1Body {
    /// Boxed, as it is in the pool: it moves between the two without a copy.
    conn: Box<H1>,
    framing: h1::Body,
    pool: Arc<Pool>,
}

impl H1Body {
    /// The body has been read: its connection carries the next request if the answer allows.
    fn release(self) {
        if self.framing.reusable() {
            Pool::put_back(&self.pool, self.conn);
        }
    }

    /// Reads the rest of the body, at most [`DRAIN_BYTES`] of it: whether its end came.
    async fn drain(&mut self) -> bool {
        let mut read = 0;
        while let Some(data) = std::future::poll_fn(|cx| self.conn.poll_data(&mut self.framing, cx)).await {
            let Ok(data) = data else { return false };
            read += data.len();
            if read > DRAIN_BYTES {
                return false;
            }
        }
        true
    }
}

impl Response {
    pub fn status(&self) -> StatusCode {
        self.head.status
    }

    pub fn headers(&self) -> &HeaderMap {
        &self.head.headers
    }

    /// The body's chunks as they arrive; a silence longer than the idle timeout ends it with
    /// [`TransportError::Idle`].
    pub fn into_stream(self) -> BodyStream {
        BodyStream {
            body: Some(self.body),
            idle: self.idle,
            sleep: Box::pin(tokio::time::sleep(self.idle)),
        }
    }

    /// The whole body (one chunk is returned as it is, without a copy).
    pub async fn bytes(self) -> Result<Bytes, TransportError> {
        self.bytes_limited(usize::MAX).await
    }

    /// The body up to `limit` bytes (the rest is not read).
    pub async fn bytes_limited(self, limit: usize) -> Result<Bytes, TransportError> {
        use futures::StreamExt as _;
        let mut stream = self.into_stream();
        let Some(first) = stream.next().await.transpose()? else {
            return Ok(Bytes::new());
        };
        let mut more = BytesMut::new();
        while more.len() + first.len() < limit {
            match stream.next().await.transpose()? {
                None => break,
                Some(chunk) => {
                    if more.is_empty() {
                        more.reserve(first.len() + chunk.len());
                        more.extend_from_slice(&first);
                    }
                    more.extend_from_slice(&chunk);
                }
            }
        }
        let mut all = if more.is_empty() { first } else { more.freeze() };
        all.truncate(limit);
        Ok(all)
    }
}

/// A response body as a stream of chunks, with the idle timeout between them.
pub struct BodyStream {
    /// `None` once it has ended, failed, or been [finished](BodyStream::finish).
    body: Option<Body>,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
}

/// What [`BodyStream::finish`] reads after the payload's end, at most, for the connection's sake.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

impl BodyStream {
    /// The caller has read the payload's last event (`[DONE]`, `message_stop`): what follows is at
    /// most the body's own end. Over HTTP/1.1 it is read here, without the caller waiting for it, so
    /// that the connection can carry the next request instead of being closed: at once when the end
    /// has already arrived (the usual case: it comes with the last event), else by a task that waits
    /// for it (at most [`DRAIN_TIME`] and [`DRAIN_BYTES`]). The stream then ends.
    pub fn finish(&mut self) {
        let Some(Body::H1(mut body)) = self.body.take() else {
            return;
        };
        match body.conn.skip_buffered(&mut body.framing, DRAIN_BYTES) {
            Ok(true) => body.release(),
            Ok(false) => {
                tokio::spawn(async move {
                    if let Ok(true) = tokio::time::timeout(DRAIN_TIME, body.drain()).await {
                        body.release();
                    }
                });
            }
            Err(_) => {}
        }
    }
}

impl Stream for BodyStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let polled = match this.body.as_mut() {
            None => return Poll::Ready(None),
            Some(Body::H1(body)) => match body.conn.poll_data(&mut body.framing, cx) {
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.to_string()))),
                Poll::Ready(Some(Ok(data))) => Poll::Ready(Some(Ok(data))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Some(Body::H2(body)) => loop {
                match Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => break Poll::Ready(Some(Ok(data))),
                        Err(_) => continue, // trailers
                    },
                    Poll::Ready(Some(Err(e))) => break Poll::Ready(Some(Err(innermost(&e)))),
                    Poll::Ready(None) => break Poll::Ready(None),
                    Poll::Pending => break Poll::Pending,
                }
            },
        };
        match polled {
            Poll::Ready(Some(Ok(data))) => {
                this.sleep.as_mut().reset(Instant::now() + this.idle);
                Poll::Ready(Some(Ok(data)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.body = None;
                Poll::Ready(Some(Err(TransportError::Body(e))))
            }
            Poll::Ready(None) => {
                if let Some(Body::H1(body)) = this.body.take() {
                    body.release();
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.sleep.as_mut().poll(cx));
                this.body = None;
                Poll::Ready(Some(Err(TransportError::Idle)))
            }
        }
    }
}

/// The proxy variables, read once (as reqwest read them when each client was built).
static PROXIES: LazyLock<Matcher> = LazyLock::new(Matcher::from_env);

/// The TLS configuration of a provider: for HTTPS, rustls with the platform's verifier (on Linux, the
/// system's CA bundle; `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured); for plain HTTP, one that
/// trusts nothing and that no connection uses. Each is built once for the process: loading the
/// system's certificates costs tens of millions of instructions (reqwest did it once per provider).
fn tls_config(https: bool) -> Result<Arc<ClientConfig>, String> {
    fn builder() -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup failed: {e}"))
    }
    static PLATFORM: LazyLock<Result<Arc<ClientConfig>, String>> = LazyLock::new(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new(provider)
            .map_err(|e| format!("could not load the system's certificates: {e}"))?;
        Ok(Arc::new(
            builder()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth(),
        ))
    });
    static NONE: LazyLock<Result<Arc<ClientConfig>, String>> = LazyLock::new(|| {
        Ok(Arc::new(
            builder()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth(),
        ))
    });
    if https { PLATFORM.clone() } else { NONE.clone() }
}

#[derive(Debug)]
struct Proxy {
    uri: Uri,
    /// `Basic …` from the proxy URL's credentials.
    auth: Option<HeaderValue>,
}

/// How a provider's connections are made.
#[derive(Debug, Clone)]
enum Route {
    Direct,
    /// HTTPS through an HTTP proxy: CONNECT, then TLS inside the tunnel.
    Tunnel(Arc<Proxy>),
    /// Plain HTTP through an HTTP proxy: the connection is to the proxy, and requests name the
    /// whole URL (absolute form).
    Forward(Arc<Proxy>),
}

#[derive(Clone, Debug)]
struct Connector {
    direct: HttpsConnector<HttpConnector>,
    http: HttpConnector,
    /// For the TLS inside a tunnel (ALPN offered).
    tls: Arc<ClientConfig>,
    route: Route,
    /// For the whole connect: TCP, the proxy's CONNECT and the TLS handshake.
    timeout: Duration,
}

impl Connector {
    async fn connect(self, dst: Uri) -> Result<Conn, BoxError> {
        match self.route {
            Route::Direct => Ok(Conn {
                io: self.direct.oneshot(dst).await?,
            }),
            Route::Forward(proxy) => Ok(Conn {
                io: MaybeHttpsStream::Http(self.http.oneshot(proxy.uri.clone()).await?),
            }),
            Route::Tunnel(proxy) => {
                let mut tunnel = Tunnel::new(proxy.uri.clone(), self.http);
                if let Some(auth) = &proxy.auth {
                    tunnel = tunnel.with_auth(auth.clone());
                }
                let tcp: Tcp = tunnel.oneshot(dst.clone()).await?;
                let host = dst.host().ok_or("the URL has no host")?;
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name = rustls::pki_types::ServerName::try_from(host.to_string())
                    .map_err(|_| format!("`{host}` is not a valid TLS server name"))?;
                let tls = tokio_rustls::TlsConnector::from(self.tls)
                    .connect(name, TokioIo::new(tcp))
                    .await?;
                Ok(Conn {
                    io: MaybeHttpsStream::Https(TokioIo::new(tls)),
                })
            }
        }
    }
}

/// A connection to an upstream or to its proxy.
struct Conn {
    io: MaybeHttpsStream<Tcp>,
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}
