//! Realistic fake of the OpenAI, Anthropic, Google Gemini and AWS Bedrock (Converse) HTTP APIs for the gateway's tests and benchmarks.
//!
//! Behaviour is chosen per request, either by `x-mock-<option>: value` headers or by a model-name
//! suffix such as `mock-ok+tokens=5+delay=10` (a bare `+flag` means true; headers win). See the
//! crate README-style docs on [`router`] for the options.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mock = mock_upstream::MockServer::start().await?;
//! let base = mock.base_url(); // http://127.0.0.1:PORT   (append /v1/chat/completions etc.)
//! // ... drive the gateway against `base` ...
//! assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
//! # Ok(()) }
//! ```

mod anthropic;
mod bedrock;
mod common;
mod gemini;
mod openai;
mod opts;
pub mod proxy;
mod responses;
mod serve;
mod sigv4;
mod state;
pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use bedrock::event_stream_message;
pub use common::{REASONING_TEXT, TOOL_PREFACE, error_body, pieces, words};
pub use openai::{MODELS, embedding_for_text, embedding_for_tokens};
pub use opts::{Opts, base_model};
pub use state::{MAX_RECORDED, MockState, RecordedRequest};
pub use tls::TestCa;

/// The API routes (mounted both under `/v1` and at the root), plus `GET /_mock/stats`,
/// `POST /_mock/reset` and `POST /_mock/set` (options for every request).
///
/// Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `POST /v1/embeddings`,
/// `GET /v1/models`, `GET /v1/models/{id}`, `POST /v1/messages`, `POST /v1/messages/count_tokens`.
///
/// Google Gemini (model options in the path segment): `POST /v1beta/models/{model}:generateContent`,
/// `:streamGenerateContent` (`?alt=sse`: SSE; else a streamed JSON array), `:embedContent`,
/// `:batchEmbedContents`, `:countTokens`; recorded as `POST /v1beta/models:<method>`.
///
/// AWS Bedrock Runtime (model id URL-encoded in the path): `POST /model/{modelId}/converse` and
/// `POST /model/{modelId}/converse-stream` (binary event stream); recorded as `POST /model/converse`
/// and `POST /model/converse-stream`. SigV4 is verified when [`MockState::with_aws_credentials`] is set.
///
/// Options (`x-mock-<opt>` header or `model+opt=val`): `ttfb`, `delay`, `tokens`, `status`,
/// `retry_after`, `drop_after`, `hang`, `hang_after`, `error_after`, `garbage`, `truncate`, `tools`,
/// `interleave`, `notext`, `thinking`, `redacted`, `finish=length`, `echo_request`, `cache`, `html` (a 200
/// HTML page instead of the API); Bedrock streams also `badcrc` (one event's message CRC is wrong;
/// `badcrc=prelude`: its prelude CRC) and `exception=<type>` (the `error_after` exception, default
/// `throttlingException`).
///
/// Every response carries `x-mock-http-version` (`HTTP/1.1`, `HTTP/2.0`): the request's protocol as
/// the server saw it; [`MockState::last_http_version`] keeps the last one.
pub fn router(state: MockState) -> Router {
    let api: Router<MockState> = Router::new()
        .route("/chat/completions", post(openai::chat_completions))
        .route("/completions", post(openai::completions))
        .route("/embeddings", post(openai::embeddings))
        .route("/models", get(openai::list_models))
        .route("/models/{id}", get(openai::get_model))
        .route("/responses", post(responses::create))
        .route("/messages", post(anthropic::messages))
        .route("/messages/count_tokens", post(anthropic::count_tokens));
    Router::new()
        .route("/_mock/stats", get(stats))
        .route("/_mock/reset", post(reset))
        .route("/_mock/set", post(set_defaults))
        // Azure OpenAI's deployment paths reach the same handlers.
        .route(
            "/openai/deployments/{deployment}/chat/completions",
            post(openai::chat_completions),
        )
        .route(
            "/openai/deployments/{deployment}/completions",
            post(openai::completions),
        )
        .route(
            "/openai/deployments/{deployment}/embeddings",
            post(openai::embeddings),
        )
        .route("/openai/models", get(openai::list_models))
        .route("/v1beta/models/{*rest}", post(gemini::models_post))
        .route("/model/{model_id}/converse", post(bedrock::converse))
        .route(
            "/model/{model_id}/converse-stream",
            post(bedrock::converse_stream),
        )
        .nest("/v1", api.clone())
        .merge(api)
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(256 << 20))
        .layer(middleware::from_fn_with_state(state.clone(), http_version))
        .with_state(state)
}

/// Header naming the HTTP version of the request a response answers.
pub const HTTP_VERSION_HEADER: &str = "x-mock-http-version";

/// Record the request's HTTP version and echo it in [`HTTP_VERSION_HEADER`], so tests can see which
/// protocol an upstream client really used (a gateway does not forward upstream headers).
async fn http_version(State(st): State<MockState>, req: Request, next: Next) -> Response {
    // Static names: this runs on every request, benchmarks' included.
    let version = match req.version() {
        axum::http::Version::HTTP_09 => "HTTP/0.9",
        axum::http::Version::HTTP_10 => "HTTP/1.0",
        axum::http::Version::HTTP_11 => "HTTP/1.1",
        axum::http::Version::HTTP_2 => "HTTP/2.0",
        axum::http::Version::HTTP_3 => "HTTP/3.0",
        _ => "unknown",
    };
    st.set_last_http_version(version);
    let mut resp = next.run(req).await;
    resp.headers_mut()
        .insert(HTTP_VERSION_HEADER, HeaderValue::from_static(version));
    resp
}

async fn stats(State(st): State<MockState>) -> Response {
    axum::Json(st.stats_json()).into_response()
}

async fn reset(State(st): State<MockState>) -> Response {
    st.reset();
    axum::Json(serde_json::json!({"ok": true})).into_response()
}

/// `POST /_mock/set` with a JSON object of options (`{"status": 500}`): every later request gets them
/// unless it sets them itself; `{}` clears them.
async fn set_defaults(State(st): State<MockState>, body: axum::body::Bytes) -> Response {
    let Ok(serde_json::Value::Object(m)) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return common::error_response(
            common::Dialect::OpenAi,
            400,
            "send a JSON object of options",
            None,
        );
    };
    let defaults = m
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    st.set_defaults(defaults);
    axum::Json(serde_json::json!({"ok": true, "defaults": st.defaults()})).into_response()
}

async fn fallback(
    State(st): State<MockState>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    st.record(
        &format!("{method} {}", uri.path()),
        &uri.to_string(),
        &headers,
        &body,
    );
    let msg = format!("Invalid URL ({method} {})", uri.path());
    common::error_response(common::Dialect::OpenAi, 404, &msg, None)
}

/// An in-process mock server on `127.0.0.1:<random port>`, plain HTTP or HTTPS
/// ([`MockServer::start_tls`]). Stops when dropped (or via [`MockServer::shutdown`]); stopping also
/// releases any `hang` requests.
pub struct MockServer {
    pub addr: SocketAddr,
    pub state: MockState,
    tls: bool,
    shutdown_tx: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockServer")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Bind `127.0.0.1:0` with a fresh [`MockState`] and serve in a spawned task.
    pub async fn start() -> std::io::Result<MockServer> {
        Self::start_with_state(MockState::new()).await
    }

    /// Like [`MockServer::start`] but with a given state (e.g. [`MockState::with_require_key`]).
    pub async fn start_with_state(state: MockState) -> std::io::Result<MockServer> {
        Self::bind(SocketAddr::from(([127, 0, 0, 1], 0)), state).await
    }

    /// Bind a specific address.
    pub async fn bind(addr: SocketAddr, state: MockState) -> std::io::Result<MockServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(
            listener,
            router(state.clone()),
            state.clone(),
            None,
            rx,
        ));
        Ok(MockServer {
            addr,
            state,
            tls: false,
            shutdown_tx: Some(tx),
            task: Some(task),
        })
    }

    /// Serve over TLS on `127.0.0.1:0` with this certificate chain and key (PEM; see
    /// [`tls::TestCa::leaf`]), offering ALPN `h2` and `http/1.1`.
    pub async fn start_tls(state: MockState, cert_pem: &str, key_pem: &str) -> std::io::Result<MockServer> {
        Self::bind_tls(SocketAddr::from(([127, 0, 0, 1], 0)), state, cert_pem, key_pem).await
    }

    /// Like [`MockServer::start_tls`] on a specific address.
    pub async fn bind_tls(
        addr: SocketAddr,
        state: MockState,
        cert_pem: &str,
        key_pem: &str,
    ) -> std::io::Result<MockServer> {
        let config = tls::server_config(cert_pem, key_pem)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve::serve(
            listener,
            router(state.clone()),
            state.clone(),
            Some(config),
            rx,
        ));
        Ok(MockServer {
            addr,
            state,
            tls: true,
            shutdown_tx: Some(tx),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` for a TLS server (certificates name
    /// `localhost`) — no `/v1`.
    pub fn base_url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// `base_url() + path`, e.g. `url("/v1/chat/completions")`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Stop accepting, release hanging requests and wait (up to 2 s) for in-flight ones.
    pub async fn shutdown(mut self) {
        self.signal();
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), task).await.is_err() {
                abort.abort();
            }
        }
    }

    fn signal(&mut self) {
        self.state.close();
        if let Some(tx) = self.shutdown_tx.take() {
            let _ = tx.send(());
        }
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.signal();
    }
}
