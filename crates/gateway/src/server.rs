//! Starting and stopping the server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::auth::Auth;
use crate::config::Config;
use crate::http::{self, App};
use crate::router::Catalog;

/// Builds the shared state from a config.
pub fn build_app(config: &Config) -> anyhow::Result<Arc<App>> {
    let catalog = Catalog::from_config(config).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Arc::new(App {
        catalog,
        auth: Auth::new(config.auth.master_key(), config.auth.required()),
        max_body_bytes: config.server.max_body_bytes,
        metrics: crate::telemetry::prometheus(),
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
        let serve = axum::serve(self.listener, http::service(self.app)).with_graceful_shutdown(async move {
            let _ = rx.await;
        });
        let mut task = tokio::spawn(async move { serve.await });
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
