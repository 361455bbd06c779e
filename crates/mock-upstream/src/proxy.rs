//! A minimal HTTP forward proxy for tests: `CONNECT host:port` tunnels (what clients use for
//! `https://` targets) and absolute-form plain requests (`POST http://host:port/path`), relayed as
//! they stream. It logs what it served, so a test can assert that traffic really went through it.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let proxy = mock_upstream::proxy::TestProxy::start().await?;
//! // point a client at proxy.url() (e.g. HTTPS_PROXY), send requests, then:
//! assert!(proxy.connects().iter().all(|c| c.starts_with("localhost:")));
//! # Ok(()) }
//! ```

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::Scheme;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// A forward proxy on `127.0.0.1:<random port>`. Stops (and cuts open tunnels) when dropped.
pub struct TestProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What every connection of one proxy shares.
struct Shared {
    /// `Basic <base64(user:pass)>` that `Proxy-Authorization` must equal, when auth is required.
    auth: Option<String>,
    client: Client<HttpConnector, Incoming>,
    connects: Mutex<Vec<String>>,
    forwarded: Mutex<Vec<String>>,
    rejected: AtomicU64,
    connections: AtomicU64,
    /// Connection and tunnel tasks, aborted together when the proxy is dropped.
    tasks: Mutex<JoinSet<()>>,
}

impl Shared {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let mut tasks = self.tasks.lock();
        while tasks.try_join_next().is_some() {} // reap finished ones
        tasks.spawn(fut);
    }
}

impl std::fmt::Debug for TestProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestProxy")
            .field("addr", &self.addr)
            .field("auth", &self.shared.auth.is_some())
            .finish_non_exhaustive()
    }
}

impl TestProxy {
    /// Bind `127.0.0.1:0` and serve anyone.
    pub async fn start() -> io::Result<TestProxy> {
        Self::bind(None).await
    }

    /// Like [`TestProxy::start`], but every request must carry
    /// `Proxy-Authorization: Basic base64(user:pass)`; others get `407` (and count in
    /// [`TestProxy::rejected`]).
    pub async fn start_with_auth(user: &str, pass: &str) -> io::Result<TestProxy> {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        Self::bind(Some(format!("Basic {token}"))).await
    }

    async fn bind(auth: Option<String>) -> io::Result<TestProxy> {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            auth,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            connects: Mutex::new(Vec::new()),
            forwarded: Mutex::new(Vec::new()),
            rejected: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            tasks: Mutex::new(JoinSet::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(TestProxy { addr, shared, accept })
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, the proxy URL to give a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:pass@127.0.0.1:PORT`.
    pub fn url_with_auth(&self, user: &str, pass: &str) -> String {
        format!("http://{user}:{pass}@{}", self.addr)
    }

    /// The `host:port` of each tunnel opened (`CONNECT` accepted and the target reached), in order.
    pub fn connects(&self) -> Vec<String> {
        self.shared.connects.lock().clone()
    }

    /// The request-target (absolute form, `http://host:port/path`) of each plain request forwarded
    /// and answered by its target, in order.
    pub fn forwarded(&self) -> Vec<String> {
        self.shared.forwarded.lock().clone()
    }

    /// How many client connections the proxy accepted (a client that keeps its connection alive
    /// opens one for many plain requests).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// How many requests were refused with `407` (missing or wrong `Proxy-Authorization`).
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.tasks.lock().abort_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // e.g. out of file descriptors: back off a little instead of spinning.
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let _ = tcp.set_nodelay(true);
        shared.connections.fetch_add(1, Ordering::Relaxed);
        let conn_shared = shared.clone();
        shared.spawn(async move {
            let svc = service_fn(move |req| handle(conn_shared.clone(), req));
            // HTTP/1.1 with keep-alive; `with_upgrades` hands CONNECT's socket to the tunnel.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .with_upgrades()
                .await;
        });
    }
}

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Response<ProxyBody>, Infallible> {
    if let Some(expected) = &shared.auth {
        let given = req.headers().get(header::PROXY_AUTHORIZATION);
        if given.is_none_or(|v| v.as_bytes() != expected.as_bytes()) {
            shared.rejected.fetch_add(1, Ordering::Relaxed);
            let mut resp = text(
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "proxy credentials required",
            );
            resp.headers_mut().insert(
                header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"test-proxy\""),
            );
            return Ok(resp);
        }
    }
    if req.method() == Method::CONNECT {
        Ok(tunnel(&shared, req).await)
    } else {
        Ok(forward(&shared, req).await)
    }
}

/// `CONNECT host:port`: reach the target first (502 if it cannot be reached), answer
/// `200 Connection established`, then copy bytes both ways until either side closes.
async fn tunnel(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let Some(target) = req.uri().authority().map(|a| a.to_string()) else {
        return text(StatusCode::BAD_REQUEST, "CONNECT needs host:port");
    };
    let mut upstream = match TcpStream::connect(&target).await {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_GATEWAY, &format!("connect {target}: {e}")),
    };
    let _ = upstream.set_nodelay(true);
    shared.connects.lock().push(target);
    let on_upgrade = hyper::upgrade::on(req);
    shared.spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        }
    });
    let mut resp = Response::new(empty());
    resp.extensions_mut()
        .insert(hyper::ext::ReasonPhrase::from_static(b"Connection established"));
    resp
}

/// Absolute-form `METHOD http://host:port/path`: send it on (pooled connections) and relay the
/// answer, body streamed as it arrives.
async fn forward(shared: &Shared, req: Request<Incoming>) -> Response<ProxyBody> {
    let uri = req.uri();
    if uri.scheme() != Some(&Scheme::HTTP) || uri.authority().is_none() {
        return text(
            StatusCode::BAD_REQUEST,
            "a proxy request needs an absolute http:// target",
        );
    }
    let target = uri.to_string();
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    match shared.client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            shared.forwarded.lock().push(target);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, &format!("forward {target}: {e}")),
    }
}

/// Remove headers that describe one hop (RFC 9110 §7.6.1), including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

fn text(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let body = Full::new(Bytes::from(format!("{msg}\n")))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
