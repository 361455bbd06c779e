//! Starting and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use std::path::PathBuf;

use crate::auth::Auth;
use crate::config::{Config, ModelType, RoutingConfig, Tier};
use crate::http::{self, App};
use crate::keys::Keys;
use crate::limits::Limits;
use crate::providers::Provider;
use crate::providers::local::{self, LocalProvider, LocalSpec};
use crate::redis_state::RedisState;
use crate::router::{Catalog, Deployment, ModelEntry};
use crate::store::Store;
use crate::usage::UsageLog;

/// The models served when the config declares none: chat, completion and embeddings, in-process.
pub fn default_local_models() -> Vec<LocalDecl> {
    vec![
        LocalDecl {
            public_name: "smollm2-135m-instruct".into(),
            kind: ModelType::Chat,
            path: None,
            source: Some(engine::source::DEFAULT_CHAT.into()),
            // 8 slots of 4096 tokens: ~750 MB of f16 KV cache for this model.
            context_length: Some(4096),
            parallel: Some(8),
            threads: None,
            queue: None,
            default_temperature: Some(0.7),
        },
        LocalDecl {
            public_name: "gemma-3-270m".into(),
            kind: ModelType::Completion,
            path: None,
            source: Some(engine::source::DEFAULT_COMPLETION.into()),
            context_length: Some(4096),
            parallel: Some(4),
            threads: None,
            queue: None,
            default_temperature: Some(1.0),
        },
        LocalDecl {
            public_name: "all-minilm-l6-v2".into(),
            kind: ModelType::Embedding,
            path: None,
            source: Some(engine::source::DEFAULT_EMBEDDING.into()),
            context_length: None,
            parallel: None,
            threads: None,
            queue: None,
            default_temperature: None,
        },
    ]
}

/// A local model as declared (before its files are resolved).
#[derive(Debug, Clone)]
pub struct LocalDecl {
    pub public_name: String,
    pub kind: ModelType,
    pub path: Option<String>,
    pub source: Option<String>,
    pub context_length: Option<u32>,
    pub parallel: Option<u32>,
    pub threads: Option<u32>,
    pub queue: Option<usize>,
    pub default_temperature: Option<f64>,
}

/// The local models a config asks for: its `provider = "local"` models, or the defaults when it
/// declares no models at all.
pub fn local_decls(config: &Config) -> Vec<LocalDecl> {
    if config.models.is_empty() {
        return default_local_models();
    }
    config
        .models
        .iter()
        .filter(|(_, m)| m.is_local())
        .map(|(name, m)| LocalDecl {
            public_name: name.clone(),
            kind: m.kind.unwrap_or_default(),
            path: m.path.as_ref().map(|p| p.get_ref().clone()),
            source: m.source.as_ref().map(|s| s.get_ref().clone()),
            context_length: m.context_length,
            parallel: m.parallel,
            threads: m.threads,
            queue: m.queue,
            default_temperature: m.default_temperature,
        })
        .collect()
}

/// Resolves (fetching where needed) and loads local models, off the runtime's worker threads.
pub async fn load_local_models(
    decls: Vec<LocalDecl>,
    home: PathBuf,
    routing: &RoutingConfig,
) -> anyhow::Result<Vec<ModelEntry>> {
    let mut entries = Vec::with_capacity(decls.len());
    for d in decls {
        let home = home.clone();
        let name = d.public_name.clone();
        let provider = tokio::task::spawn_blocking(move || -> anyhow::Result<LocalProvider> {
            let path = local::resolve_path(d.path.as_deref(), d.source.as_deref(), &home)
                .map_err(|e| anyhow::anyhow!("model `{}`: {e}", d.public_name))?;
            tracing::info!(model = %d.public_name, path = %path.display(), "loading local model");
            let spec = LocalSpec {
                public_name: d.public_name.clone(),
                kind: d.kind,
                path,
                context_length: d.context_length,
                parallel: d.parallel,
                threads: d.threads,
                queue: d.queue,
                default_temperature: d.default_temperature,
            };
            LocalProvider::load(&spec).map_err(|e| anyhow::anyhow!("model `{}`: {e}", d.public_name))
        })
        .await
        .map_err(|e| anyhow::anyhow!("loading model `{name}` failed: {e}"))??;
        let kind = provider.kind;
        let context_length = provider.context_length();
        let mut dep = Deployment::new(
            Provider::Local(Arc::new(provider)),
            name.clone(),
            Tier::Local,
            routing,
            Arc::default(),
        );
        dep.context_length = context_length;
        let mut entry = ModelEntry::new(name, kind, vec![Arc::new(dep)]);
        entry.context_length = context_length;
        entries.push(entry);
    }
    Ok(entries)
}

/// Builds the shared state from a config, loading its local models.
pub async fn build_app(config: &Config) -> anyhow::Result<Arc<App>> {
    // The recorder first: deployments register their counters as they are built.
    let metrics = crate::telemetry::prometheus();
    let local = load_local_models(local_decls(config), Config::home_dir(), &config.routing).await?;
    let catalog = Catalog::build(config, local).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = open_state(config).await?;
    Ok(Arc::new(App {
        catalog,
        cors: Arc::new(crate::http::cors::Cors::new(&config.server.cors_origins)),
        limits: state.limits,
        auth: Auth::new(config.auth.master_key(), config.auth.required()).with_keys(state.keys),
        usage: Some(state.usage),
        redis: state.redis,
        max_body_bytes: config.server.max_body_bytes,
        metrics,
        request_metrics: Default::default(),
    }))
}

/// The stores and counters a config asks for.
pub struct State {
    pub store: Store,
    pub keys: Keys,
    pub usage: UsageLog,
    pub limits: Arc<Limits>,
    pub redis: Option<RedisState>,
}

/// The database URL of a config: `[state] database_url`, else SQLite in the data directory.
pub fn database_url(config: &Config) -> String {
    config
        .state
        .database_url
        .clone()
        .unwrap_or_else(|| crate::store::sqlite_url(&Config::home_dir().join("switchyard.db")))
}

/// Opens the store (migrating it), the key cache, the usage journal and the limit counters.
pub async fn open_state(config: &Config) -> anyhow::Result<State> {
    let store = Store::open(&database_url(config))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let redis = match &config.state.redis_url {
        Some(url) => Some(
            RedisState::connect(url, config.state.redis_prefix.as_deref())
                .await
                .map_err(|e| anyhow::anyhow!("[state] redis_url: {e}"))?,
        ),
        None => None,
    };
    let mut keys = Keys::open(store.clone())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(r) = &redis {
        // Changes made here are announced; every replica reloads its cache at once.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let r = r.clone();
        tokio::spawn(async move {
            while rx.recv().await.is_some() {
                r.publish_keys_changed().await;
            }
        });
        keys = keys.with_notify(tx);
    }
    let usage = UsageLog::open(store.clone(), &Config::home_dir().join("usage-journal"))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let limits = match &redis {
        Some(r) => Limits::with_redis(&config.limits, r.clone(), Some(store.clone())),
        None => Limits::with_store(&config.limits, store.clone()),
    };
    Ok(State {
        store,
        keys,
        usage,
        limits,
        redis,
    })
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    grace: Duration,
    header_timeout: Duration,
}

impl Server {
    /// Checks the auth exposure rule and binds the configured address.
    pub async fn bind(config: &Config, app: Arc<App>) -> anyhow::Result<Server> {
        config.check_auth_exposure().map_err(|e| anyhow::anyhow!(e))?;
        let addr = config.address();
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        Ok(Server {
            listener,
            app,
            grace: Duration::from_millis(config.server.shutdown_grace_ms),
            header_timeout: Duration::from_millis(config.server.header_read_timeout_ms.max(1)),
        })
    }

    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests and streams finish for up to the
    /// grace period.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let app = self.app.clone();
        let serve = serve_connections(
            self.listener,
            http::router(self.app),
            self.header_timeout,
            async move {
                let _ = rx.await;
            },
        );
        let mut task = tokio::spawn(serve);
        // Active health checks live as long as the server.
        let checks = {
            let app = app.clone();
            tokio::spawn(async move { app.catalog.health_checks().await })
        };
        let _checks = AbortOnDrop(checks);
        // The key cache follows the store (a revocation by another process shows within a second).
        let refresh = {
            let app = app.clone();
            tokio::spawn(async move {
                match app.auth.keys() {
                    Some(k) => k.refresh_forever().await,
                    None => std::future::pending().await,
                }
            })
        };
        let _refresh = AbortOnDrop(refresh);
        let watch = match (app.redis.clone(), app.auth.keys().cloned()) {
            (Some(r), Some(keys)) => Some(AbortOnDrop(tokio::spawn(async move {
                r.watch_keys(|| async {
                    if let Err(e) = keys.reload().await {
                        tracing::warn!("could not reload keys after a change: {e}");
                    }
                })
                .await;
            }))),
            _ => None,
        };
        let _watch = watch;
        // Usage rows go from the journal to the database in the background.
        let writer = app.usage.clone().map(|u| {
            AbortOnDrop(tokio::spawn(async move {
                u.run_writer().await;
            }))
        });
        tokio::select! {
            res = &mut task => return res.context("server task failed")?.context("server failed"),
            () = shutdown => {}
        }
        tracing::info!(
            "shutting down; waiting up to {:?} for in-flight requests",
            self.grace
        );
        let _ = tx.send(());
        let result = match tokio::time::timeout(self.grace, &mut task).await {
            Ok(res) => res.context("server task failed")?.context("server failed"),
            Err(_) => {
                tracing::warn!("grace period over; closing the remaining connections");
                task.abort();
                Ok(())
            }
        };
        // The last rows go in before exit (what cannot is replayed from the journal by the next start).
        if let Some(u) = &app.usage {
            u.flush(Duration::from_secs(2)).await;
        }
        drop(writer);
        result
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and lets every open connection
/// finish what it is serving (its streams included) before resolving. A client gets `header_timeout`
/// to send a request's head (from connecting, or from the end of the previous answer on its
/// connection); one that dawdles longer is disconnected, so slow clients cannot hold every socket.
/// (`axum::serve` sets no such timeout, and offers no way to.)
///
/// HTTP/2 with prior knowledge is told from HTTP/1.1 by peeking at the socket for the HTTP/2 preface,
/// and each connection is then served by hyper's own HTTP/1.1 or HTTP/2 server. hyper-util's `auto`
/// server read the first bytes out instead and handed them back through a wrapper on every read; its
/// first 24-byte read made hyper grow the HTTP/1.1 read buffer from 8 to 16 KiB, held for the life of
/// every connection (a tenth of the memory of an open stream).
async fn serve_connections(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;
    use tower::ServiceExt as _;

    let mut h1 = hyper::server::conn::http1::Builder::new();
    // hyper does not read while it answers: `hangup::HangUp` watches for the client leaving instead
    // (an 8 KiB read buffer less for every request in flight; see `hangup`).
    h1.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    // WebSockets over HTTP/2 use CONNECT.
    h2.timer(TokioTimer::new()).enable_connect_protocol();
    // Every connection task holds a receiver of `closing`; a send tells them to finish and close, and
    // `done` resolves once the last of them is gone.
    let (closing, _) = tokio::sync::watch::channel(false);
    let (done_tx, done) = tokio::sync::mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Stream chunks are small writes: without TCP_NODELAY, Nagle's algorithm holds each one back
        // until the client acknowledges the last.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("could not set TCP_NODELAY: {e}");
        }
        let service = TowerToHyperService::new(
            router
                .clone()
                .map_request(|r: ::http::Request<hyper::body::Incoming>| r.map(axum::body::Body::new)),
        );
        let (h1, h2) = (h1.clone(), h2.clone());
        let mut closing = closing.subscribe();
        let done_tx = done_tx.clone();
        let task = async move {
            let http2 = match tokio::time::timeout(header_timeout, http2_preface(&tcp)).await {
                Ok(Ok(v)) => v,
                // Nothing sensible came in time, or the socket failed: close it.
                _ => return,
            };
            let res = if http2 {
                let io = TokioIo::new(tcp);
                // Boxed: an HTTP/2 connection's state is larger than an HTTP/1.1 one's, and inline
                // it would size every connection's task (3.5 KiB, 1.8 KiB without it), all the
                // HTTP/1.1 ones with an open stream included.
                Box::pin(serve_until_closing(
                    h2.serve_connection(io, service),
                    &mut closing,
                    |c| c.graceful_shutdown(),
                    std::future::pending(),
                ))
                .await
            } else {
                let (io, hang_up) = crate::hangup::watch(tcp);
                let conn = h1.serve_connection(TokioIo::new(io), service).with_upgrades();
                serve_until_closing(conn, &mut closing, |c| c.graceful_shutdown(), hang_up).await
            };
            if let Err(e) = res {
                tracing::trace!("connection ended: {e}");
            }
            drop(done_tx);
        };
        tokio::spawn(task);
    }
    drop(listener);
    let _ = closing.send(true);
    drop(closing);
    drop(done_tx);
    let mut done = done;
    // `recv` answers `None` once every connection task has dropped its sender.
    let _ = done.recv().await;
    Ok(())
}

/// Serves a connection to its end; when `closing` changes, it takes no new request and finishes what
/// it is serving. When `hang_up` resolves (the client left), the connection is dropped, and with it
/// whatever it was serving: the handler and its upstream request are cancelled.
async fn serve_until_closing<C>(
    conn: C,
    closing: &mut tokio::sync::watch::Receiver<bool>,
    graceful: impl FnOnce(std::pin::Pin<&mut C>),
    hang_up: impl Future<Output = ()>,
) -> hyper::Result<()>
where
    C: Future<Output = hyper::Result<()>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut hang_up = std::pin::pin!(hang_up);
    // The connection first: the watch looks again only after hyper has read what it saw waiting.
    tokio::select! {
        biased;
        res = conn.as_mut() => res,
        () = hang_up.as_mut() => Ok(()),
        _ = closing.changed() => {
            graceful(conn.as_mut());
            tokio::select! {
                biased;
                res = conn => res,
                () = hang_up => Ok(()),
            }
        }
    }
}

/// Whether the connection opens with the HTTP/2 preface (prior knowledge), read without consuming it.
/// An HTTP/1.1 request differs at its second byte at the latest; only a client that sends a part of
/// the preface and pauses makes this look again.
async fn http2_preface(tcp: &tokio::net::TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; 24];
    loop {
        let n = tcp.peek(&mut buf).await?;
        if n == 0 || buf[..n] != PREFACE[..n] {
            // End of stream, or not HTTP/2: HTTP/1.1 answers (or closes) as it should.
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A part of the preface so far: `peek` would answer at once with the same bytes.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A failed accept: the connection's own trouble is skipped at once; running out of descriptors waits
/// a little first, so the loop does not spin while it lasts.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(e.kind(), ConnectionAborted | ConnectionRefused | ConnectionReset) {
        return;
    }
    tracing::error!("accept failed: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Aborts its task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
