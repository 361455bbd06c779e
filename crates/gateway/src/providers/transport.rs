//! The HTTP client of every upstream: hyper-util's pooled client over our own connector, which does
//! TLS with rustls (the platform's trust store, HTTP/2 by ALPN) and honours the proxy variables
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`, `NO_PROXY`, read when the provider is made).
//!
//! This replaced reqwest on the hot path. reqwest's layers (a redirect policy that prints and parses
//! the URL again for every request, a copy of the header map, its own URL type) cost about 12% of a
//! proxied request's instructions, and it gave no say over the per-connection buffers. What reqwest did
//! that this does too: connect timeout (TCP, proxy tunnel and TLS handshake together), an idle-read
//! timeout for the answer's head and between its body chunks, `TCP_NODELAY`, a keep-alive pool, proxies.
//! What it does not: redirects are not followed (an LLM API answers a POST, and a 3xx is reported as
//! the upstream's error instead of silently turning the POST into a GET), and HTTPS proxies (TLS to the
//! proxy itself) are refused with a clear error; `http://` proxies tunnel HTTPS with CONNECT.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::Stream;
use http::uri::Scheme;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::time::{Instant, Sleep};
use tower::{Service, ServiceExt as _};

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

impl TransportError {
    fn from_client(e: hyper_util::client::legacy::Error) -> TransportError {
        let detail = innermost(&e);
        if e.is_connect() {
            TransportError::Connect(detail)
        } else {
            TransportError::Send(detail)
        }
    }
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
    pool: Pool<Connector, Full<Bytes>>,
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
        let mut pool = Pool::builder(TokioExecutor::new());
        pool.pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if h2 {
            // One connection carries every request, so a dead one must be noticed: a PING after 30 s
            // of silence, and the connection is dropped when its answer takes longer than 10 s.
            pool.http2_only(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .http2_keep_alive_timeout(Duration::from_secs(10));
        }
        let pool = pool.build(connector);
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
        let resp = match tokio::time::timeout(self.idle, self.pool.request(req)).await {
            Err(_) => return Err(TransportError::Idle),
            Ok(Err(e)) => return Err(TransportError::from_client(e)),
            Ok(Ok(r)) => r,
        };
        let (head, body) = resp.into_parts();
        Ok(Response {
            head,
            body,
            idle: self.idle,
        })
    }
}

/// An upstream's answer: its head, and its body read with the idle timeout between chunks.
#[derive(Debug)]
pub struct Response {
    head: http::response::Parts,
    body: Incoming,
    idle: Duration,
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
            body: self.body,
            idle: self.idle,
            sleep: Box::pin(tokio::time::sleep(self.idle)),
            done: false,
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
    body: Incoming,
    idle: Duration,
    sleep: Pin<Box<Sleep>>,
    done: bool,
}

impl Stream for BodyStream {
    type Item = Result<Bytes, TransportError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            match Pin::new(&mut this.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    this.sleep.as_mut().reset(Instant::now() + this.idle);
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(TransportError::Body(innermost(&e)))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {
                    ready!(this.sleep.as_mut().poll(cx));
                    this.done = true;
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
                proxied: false,
            }),
            Route::Forward(proxy) => Ok(Conn {
                io: MaybeHttpsStream::Http(self.http.oneshot(proxy.uri.clone()).await?),
                proxied: true,
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
                    proxied: false,
                })
            }
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Conn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Both inner connectors are always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let this = self.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, this.connect(dst)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no connection within {} ms", timeout.as_millis()).into()),
            }
        })
    }
}

/// A connection to an upstream or to its proxy.
struct Conn {
    io: MaybeHttpsStream<Tcp>,
    /// To the proxy, for plain HTTP: requests go in absolute form.
    proxied: bool,
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
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
