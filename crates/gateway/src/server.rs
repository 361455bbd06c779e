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
use crate::providers::Provider;
use crate::providers::local::{self, LocalProvider, LocalSpec};
use crate::router::{Catalog, Deployment, ModelEntry};

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
    Ok(Arc::new(App {
        catalog,
        cors: Arc::new(crate::http::cors::Cors::new(&config.server.cors_origins)),
        limits: crate::limits::Limits::new(&config.limits),
        auth: Auth::new(config.auth.master_key(), config.auth.required()).with_keys(
            crate::keys::Keys::open(&Config::home_dir().join("switchyard.db"))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        max_body_bytes: config.server.max_body_bytes,
        metrics,
    }))
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    grace: Duration,
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
        let serve = axum::serve(self.listener, http::service(self.app)).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let mut task = tokio::spawn(async move { serve.await });
        // Active health checks live as long as the server.
        let checks = {
            let app = app.clone();
            tokio::spawn(async move { app.catalog.health_checks().await })
        };
        let _checks = AbortOnDrop(checks);
        // The key cache follows the store (a revocation by another process shows within a second).
        let refresh = tokio::spawn(async move {
            match app.auth.keys() {
                Some(k) => k.refresh_forever().await,
                None => std::future::pending().await,
            }
        });
        let _refresh = AbortOnDrop(refresh);
        tokio::select! {
            res = &mut task => return res.context("server task failed")?.context("server failed"),
            () = shutdown => {}
        }
        tracing::info!(
            "shutting down; waiting up to {:?} for in-flight requests",
            self.grace
        );
        let _ = tx.send(());
        match tokio::time::timeout(self.grace, &mut task).await {
            Ok(res) => res.context("server task failed")?.context("server failed"),
            Err(_) => {
                tracing::warn!("grace period over; closing the remaining connections");
                task.abort();
                Ok(())
            }
        }
    }
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
