//! The HTTP client of every upstream: a connection pool of our own over hyper's client connections,
//! and a connector that does TLS with rustls (the platform's trust store, HTTP/2 by ALPN) and honours
//! the proxy variables (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read when the provider
//! is made).
//!
//! The pool is ours, not hyper-util's, because a provider's client only ever talks to one origin (its
//! base URL): there is no pool key to hash and compare, no checkout racing a connect, and no task
//! spawned per request to wait for the connection to be free again. An HTTP/1.1 connection goes back
//! to the pool when its answer's body has been read to the end (a body dropped early closes it, as
//! hyper must); an HTTP/2 one, by prior knowledge or by ALPN, carries every request at once. A request
//! that a reused connection could not even start (the upstream closed it while idle) is sent again on
//! another connection, as hyper-util did.
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
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt as _;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Tcp = TokioIo<tokio::net::TcpStream>;

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
            h1: http1::Builder::new(),
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
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        // Boxed: the request's state (944 bytes, the request itself twice over while hyper holds it)
        // would otherwise grow the future of every handler, which a request holds while it waits
        // for its answer (hyper-util boxed its own, of 3.1 KiB).
        let request = Box::pin(self.pool.request(req));
        let (resp, lease) = match tokio::time::timeout(self.idle, request).await {
            Err(_) => return Err(TransportError::Idle),
            Ok(r) => r?,
        };
        let (head, body) = resp.into_parts();
        Ok(Response {
            head,
            body,
            idle: self.idle,
            lease,
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
    h1: http1::Builder,
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
    conns: VecDeque<(http1::SendRequest<Full<Bytes>>, Instant)>,
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
    H1(http1::SendRequest<Full<Bytes>>),
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

/// An HTTP/1.1 connection lent to one request until its answer's body has been read.
#[derive(Debug)]
struct Lease {
    tx: http1::SendRequest<Full<Bytes>>,
    pool: Arc<Pool>,
}

impl Lease {
    /// The answer was read to its end: the connection can carry the next request.
    fn release(self) {
        Pool::put_back(&self.pool, self.tx);
    }
}

impl Pool {
    /// Sends `req` (its URI absolute) on a pooled connection, or a new one. A request that a reused
    /// connection could not start is sent again, on another.
    async fn request(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<(http::Response<Incoming>, Option<Lease>), TransportError> {
        // Each retry follows a reused connection that closed under the request; a bound all the same.
        const MAX_ATTEMPTS: u32 = 4;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (sender, reused) = self.checkout().await?;
            let back = match sender {
                Sender::H2(mut tx) => match tx.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, None)),
                    Err(mut e) => match e.take_message() {
                        // The next checkout passes over this connection: it is closed.
                        Some(back) if reused && attempt < MAX_ATTEMPTS => back,
                        _ => return Err(TransportError::Send(innermost(e.error()))),
                    },
                },
                Sender::H1(mut tx) => {
                    // The request line names the path only, except to a forward proxy; the whole URL
                    // is kept for a retry, which may go over HTTP/2.
                    let absolute = (!self.absolute_form).then(|| {
                        let origin = origin_form(req.uri());
                        std::mem::replace(req.uri_mut(), origin)
                    });
                    // A `Host` of the provider's own headers stays.
                    if let http::header::Entry::Vacant(host) = req.headers_mut().entry(http::header::HOST) {
                        host.insert(self.host.clone());
                    }
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let lease = Lease {
                                tx,
                                pool: self.clone(),
                            };
                            return Ok((resp, Some(lease)));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(mut back) if reused && attempt < MAX_ATTEMPTS => {
                                if let Some(absolute) = absolute {
                                    *back.uri_mut() = absolute;
                                }
                                back
                            }
                            _ => return Err(TransportError::Send(innermost(e.error()))),
                        },
                    }
                }
            };
            req = back;
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
            let Some((mut tx, _)) = next else { break };
            if tx.is_ready() {
                return Ok((Sender::H1(tx), true));
            }
            // Put back a moment ago: its connection has not yet taken in that the answer ended,
            // or it is closing.
            if !tx.is_closed() && tx.ready().await.is_ok() {
                return Ok((Sender::H1(tx), true));
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
            let (mut tx, task) = self.h1.handshake(conn).await.map_err(handshake_failed)?;
            tokio::spawn(async move {
                let _ = task.await;
            });
            tx.ready().await.map_err(handshake_failed)?;
            Ok(Sender::H1(tx))
        }
    }

    /// Returns a free HTTP/1.1 connection; the ones idle too long, or beyond the pool's size, close.
    fn put_back(this: &Arc<Self>, tx: http1::SendRequest<Full<Bytes>>) {
        if tx.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = this.idle.lock();
        idle.expire(now);
        if idle.conns.len() >= POOL_MAX_IDLE {
            idle.conns.pop_front();
        }
        idle.conns.push_back((tx, now));
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
            .is_some_and(|(tx, since)| tx.is_closed() || now.duration_since(*since) >= POOL_IDLE)
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
    body: Incoming,
    idle: Duration,
    /// The HTTP/1.1 connection, back to the pool once the body has been read to its end.
    lease: Option<Lease>,
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
            lease: self.lease,
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
    body: Option<Incoming>,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    lease: Option<Lease>,
}

/// What [`BodyStream::finish`] reads after the payload's end, at most, for the connection's sake.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

impl BodyStream {
    /// The caller has read the payload's last event (`[DONE]`, `message_stop`): what follows is at
    /// most the body's own end. It is read here, without the caller waiting for it, so that the
    /// connection can carry the next request instead of being closed: at once when the end has
    /// already arrived (the usual case: it comes with the last event), else by a task that waits for
    /// it (at most [`DRAIN_TIME`] and [`DRAIN_BYTES`]). The stream then ends.
    pub fn finish(&mut self) {
        let (Some(body), Some(lease)) = (self.body.take(), self.lease.take()) else {
            return;
        };
        let mut drain = Box::pin(read_to_end(body));
        match futures::FutureExt::now_or_never(drain.as_mut()) {
            Some(ended) => {
                if ended {
                    lease.release();
                }
            }
            None => {
                tokio::spawn(async move {
                    if let Ok(true) = tokio::time::timeout(DRAIN_TIME, drain).await {
                        lease.release();
                    }
                });
            }
        }
    }
}

/// Reads a body to its end, at most [`DRAIN_BYTES`] of it: whether the end came.
async fn read_to_end(mut body: Incoming) -> bool {
    let mut read = 0;
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        let Ok(frame) = frame else { return false };
        read += frame.data_ref().map_or(0, |d| d.len());
        if read > DRAIN_BYTES {
            return false;
        }
    }
    true
}

impl Stream for BodyStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    this.sleep.as_mut().reset(Instant::now() + this.idle);
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.body = None;
                    this.lease = None;
                    return Poll::Ready(Some(Err(TransportError::Body(innermost(&e)))));
                }
                Poll::Ready(None) => {
                    this.body = None;
                    if let Some(lease) = this.lease.take() {
                        lease.release();
                    }
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(this.sleep.as_mut().poll(cx));
                    this.body = None;
                    this.lease = None;
                    return Poll::Ready(Some(Err(TransportError::Idle)));
                }
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
