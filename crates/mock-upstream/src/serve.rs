//! The mock's accept loop, plain HTTP or TLS: each connection is served as HTTP/1.1 or HTTP/2
//! (hyper-util's auto builder picks by the connection preface, so a plain-HTTP client may speak
//! HTTP/2 with prior knowledge, and a TLS one by ALPN).
//!
//! HTTP/2 allows up to [`MAX_STREAMS`] concurrent streams a connection, not hyper's default of 200:
//! the mock is a load target, and the benchmark holds 10,000 streams open over one multiplexed
//! connection. Accepted connections are counted in [`MockState::connections`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::MockState;

/// Concurrent HTTP/2 streams a connection may carry.
pub const MAX_STREAMS: u32 = 1 << 20;

/// Accept connections on `listener` (TLS when `tls` is given) and serve `app` on each until
/// `shutdown` fires (or its sender is dropped); then stop accepting, let in-flight requests finish
/// (graceful HTTP/1 and HTTP/2 shutdown) and return — the contract of
/// `axum::serve(..).with_graceful_shutdown`.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    state: MockState,
    tls: Option<Arc<ServerConfig>>,
    shutdown: oneshot::Receiver<()>,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http2().max_concurrent_streams(MAX_STREAMS);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    let _ = tcp.set_nodelay(true);
                    state.note_connection();
                    conns.spawn(serve_tcp(tcp, acceptor.clone(), builder.clone(), app.clone(), stop_rx.clone()));
                }
                // e.g. out of file descriptors: back off a little instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    stop_tx.send_replace(true);
    while conns.join_next().await.is_some() {}
}

/// One connection: the TLS handshake if any, then HTTP.
async fn serve_tcp(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    let Some(acceptor) = acceptor else {
        return serve_io(tcp, &builder, app, stop).await;
    };
    let tls = tokio::select! {
        r = acceptor.accept(tcp) => match r {
            Ok(tls) => tls,
            Err(_) => return, // e.g. the client does not trust the certificate
        },
        _ = stop.wait_for(|s| *s) => return,
    };
    serve_io(tls, &builder, app, stop).await
}

async fn serve_io<I>(
    io: I,
    builder: &auto::Builder<TokioExecutor>,
    app: Router,
    mut stop: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => {}
    }
    conn.as_mut().graceful_shutdown();
    let _ = conn.await;
}
