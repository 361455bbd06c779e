//! The HTTP surfaces. Handlers are thin: decode, call, encode.

pub mod admin;
pub mod anthropic;
pub mod completions;
pub mod cors;
pub mod health;
pub mod openai;
pub mod response;
pub mod responses;
mod shared;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::Layer as _;

use crate::auth::{Auth, Principal};
use crate::error::{Error, ErrorKind};
use crate::router::Catalog;
use crate::telemetry;
pub use response::{Dialect, ModelLabel, error_response};

/// Everything a handler needs, shared by all requests.
pub struct App {
    pub catalog: Catalog,
    pub cors: Arc<cors::Cors>,
    pub limits: Arc<crate::limits::Limits>,
    pub auth: Auth,
    /// Where every request's usage row goes.
    pub usage: Option<crate::usage::UsageLog>,
    /// Shared counters and key invalidation, when `[state] redis_url` is set.
    pub redis: Option<crate::redis_state::RedisState>,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    /// The request layer's metric handles, kept.
    pub request_metrics: RequestMetrics,
}

/// The request layer's metrics (in flight per route; answers and durations per route and model),
/// registered on first use and kept: the metrics layer would otherwise build and hash each one's labels
/// on every request. Bounded, since a model label can be any name a request sent: past
/// [`RequestMetrics::MAX`] pairs, handles are registered per request as before.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    in_flight: parking_lot::RwLock<foldhash::HashMap<Arc<str>, metrics::Gauge>>,
    by_pair: parking_lot::RwLock<foldhash::HashMap<RouteModel, Arc<PairMetrics>>>,
}

/// A route and a model label.
type RouteModel = (Arc<str>, Arc<str>);

#[derive(Debug)]
struct PairMetrics {
    /// `switchyard_requests_total` with status 200 (other statuses are registered when they happen).
    ok: metrics::Counter,
    duration: metrics::Histogram,
}

impl RequestMetrics {
    const MAX: usize = 1024;

    fn in_flight(&self, route: &Arc<str>) -> metrics::Gauge {
        if let Some(g) = self.in_flight.read().get(route) {
            return g.clone();
        }
        let g = metrics::gauge!(telemetry::IN_FLIGHT, "route" => route.clone());
        let mut map = self.in_flight.write();
        if map.len() < Self::MAX {
            map.insert(route.clone(), g.clone());
        }
        g
    }

    fn pair(&self, route: &Arc<str>, model: &Arc<str>) -> Arc<PairMetrics> {
        let key = (route.clone(), model.clone());
        if let Some(p) = self.by_pair.read().get(&key) {
            return p.clone();
        }
        let p = Arc::new(PairMetrics {
            ok: metrics::counter!(
                telemetry::REQUESTS,
                "route" => route.clone(),
                "model" => model.clone(),
                "status" => "200"
            ),
            duration: metrics::histogram!(
                telemetry::REQUEST_DURATION,
                "route" => route.clone(),
                "model" => model.clone()
            ),
        });
        let mut map = self.by_pair.write();
        if map.len() < Self::MAX {
            map.insert(key, p.clone());
        }
        p
    }
}

/// The id of this request, echoed in `x-request-id`, and its usage ticket.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>, pub Arc<Ticket>);

/// When a request started, and whether a handler's settlement writes its usage row (the request
/// layer writes the row of every other request on a model surface: errors and refusals).
#[derive(Debug)]
pub struct Ticket {
    pub start: Instant,
    claimed: std::sync::atomic::AtomicBool,
    /// The issued key that made the request, once authenticated: for the usage row this layer
    /// writes (an error, a refusal, a client that left before its answer).
    key_id: std::sync::OnceLock<String>,
}

impl Ticket {
    pub fn claim(&self) {
        self.claimed.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn claimed(&self) -> bool {
        self.claimed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The error an answer carries, for its usage row.
#[derive(Debug, Clone)]
pub struct ErrorTag(pub String);

/// The usage surface of a route, for routes whose requests are logged.
fn surface_of(route: &str) -> Option<&'static str> {
    Some(match route {
        "/v1/chat/completions" => "chat_completions",
        "/v1/completions" => "completions",
        "/v1/embeddings" => "embeddings",
        "/v1/messages" | "/anthropic/v1/messages" => "messages",
        "/v1/responses" => "responses",
        _ => return None,
    })
}

/// The whole HTTP service: path normalisation in front of the routes.
pub fn router(app: Arc<App>) -> Router {
    let api = Router::new()
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/embeddings", post(completions::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*id}", get(openai::get_model))
        .route("/v1/responses", post(responses::create).get(responses::websocket))
        .route("/v1/responses/input_tokens", post(responses::input_tokens))
        .route("/v1/responses/compact", post(responses::compact))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/v1/responses/{id}/input_items", get(responses::input_items))
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/anthropic/v1/messages", post(anthropic::messages))
        .route(
            "/anthropic/v1/messages/count_tokens",
            post(anthropic::count_tokens),
        )
        .route("/anthropic/v1/models", get(anthropic::list_models))
        .route("/anthropic/v1/models/{*id}", get(anthropic::get_model))
        .route("/vhealth", get(health::vhealth))
        .route("/v1/me", get(admin::me))
        .route("/admin/keys", post(admin::create).get(admin::list))
        .route("/admin/usage", get(admin::usage))
        .route(
            "/admin/keys/{id}",
            get(admin::get).patch(admin::patch).delete(admin::delete),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    let inner = Router::new()
        .merge(api)
        .route("/health", get(health::health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(app.clone(), observe));
    // CORS only when configured: an idle layer still costs every request a boxed future.
    let inner = if app.cors.enabled() {
        inner.layer(middleware::from_fn_with_state(app.cors.clone(), cors::layer))
    } else {
        inner
    };
    let inner = inner.with_state(app);
    // Normalise the path before routing, so `/api/openai/v1/…` and `/v1/v1/…` reach the same handler.
    Router::new().fallback_service(tower::util::MapRequestLayer::new(normalize_request).layer(inner))
}

fn normalize_request(mut req: Request) -> Request {
    let path = req.uri().path();
    if let Some(new_path) = normalize_path(path) {
        let pq = match req.uri().query() {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Endpoints clients reach without the `/v1` prefix when their base URL lacks it.
const BARE_ENDPOINTS: &[&str] = &[
    "/chat/completions",
    "/completions",
    "/embeddings",
    "/models",
    "/messages",
    "/responses",
];

/// Maps the aliases of every surface onto one canonical path; `None` when the path is already canonical.
pub fn normalize_path(path: &str) -> Option<String> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let (prefix, api, mut rest) = if let Some(r) = trimmed.strip_prefix("/api/openai") {
        ("", true, r)
    } else if let Some(r) = trimmed.strip_prefix("/api/anthropic") {
        ("/anthropic", true, r)
    } else {
        ("", false, trimmed)
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    while rest.starts_with("/v1/v1") {
        rest = &rest[3..];
    }
    let has_v1 = rest == "/v1" || rest.starts_with("/v1/");
    let bare = BARE_ENDPOINTS.iter().any(|e| {
        rest.strip_prefix(e)
            .is_some_and(|t| t.is_empty() || t.starts_with('/'))
    });
    let out = if !has_v1 && (api || bare) {
        format!("{prefix}/v1{rest}")
    } else {
        format!("{prefix}{rest}")
    };
    (out != path).then_some(out)
}

async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    match app.auth.authenticate(req.headers()) {
        Ok(p) => {
            // The key is noted on the request's ticket, for the usage row the request layer writes.
            if let (Some(k), Some(rid)) = (p.key_id(), req.extensions().get::<RequestId>()) {
                let _ = rid.1.key_id.set(k);
            }
            req.extensions_mut().insert::<Principal>(p);
            next.run(req).await
        }
        Err(e) => error_response(Dialect::of_path(req.uri().path()), &e),
    }
}

fn request_id(req: &Request) -> Arc<str> {
    if let Some(v) = req.headers().get("x-request-id").and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return Arc::from(v);
    }
    let mut id = String::with_capacity(36);
    id.push_str("req_");
    crate::usage::push_hex(&mut id, rand::random::<u128>(), 32);
    Arc::from(id)
}

/// Request id, in-flight gauge, request counter and duration histogram. Duration and in-flight cover
/// the whole body, so a stream counts until its last byte.
async fn observe(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route: Arc<str> = match req.extensions().get::<MatchedPath>() {
        Some(m) => Arc::from(m.as_str()),
        None => Arc::from("unmatched"),
    };
    let id = request_id(&req);
    let anthropic = Dialect::of_path(req.uri().path()) == Dialect::Anthropic;
    let ticket = Arc::new(Ticket {
        start,
        claimed: Default::default(),
        key_id: Default::default(),
    });
    req.extensions_mut().insert(RequestId(id.clone(), ticket.clone()));
    let in_flight = app.request_metrics.in_flight(&route);
    in_flight.increment(1.0);
    // A client that hangs up before the answer drops this future inside `next.run`: the guard then
    // still ends the request's count in flight, and logs it.
    let mut abandoned = Abandoned {
        app: &app,
        route: &route,
        id: &id,
        ticket: &ticket,
        in_flight: &in_flight,
        armed: true,
    };
    let mut resp = next.run(req).await;
    abandoned.armed = false;
    drop(abandoned);
    if let Ok(v) = HeaderValue::from_str(&id) {
        if anthropic {
            // Anthropic's own name for it.
            resp.headers_mut().insert("request-id", v.clone());
        }
        resp.headers_mut().insert("x-request-id", v);
    }
    let model: Arc<str> = resp
        .extensions()
        .get::<ModelLabel>()
        .map_or_else(|| Arc::from(""), |m| m.0.clone());
    let pair = app.request_metrics.pair(&route, &model);
    if resp.status() == StatusCode::OK {
        pair.ok.increment(1);
    } else {
        metrics::counter!(
            telemetry::REQUESTS,
            "route" => route.clone(),
            "model" => model.clone(),
            "status" => status_label(resp.status())
        )
        .increment(1);
    }
    // Requests on a model surface that no settlement logged (errors, refusals) get their row here.
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        unclaimed_row(
            &app,
            &route,
            &id,
            &ticket,
            &model,
            resp.status().as_u16(),
            resp.extensions().get::<ErrorTag>().map(|t| t.0.clone()),
        );
    }
    let guard = ObserveGuard {
        start,
        duration: pair.duration.clone(),
        in_flight,
    };
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            inner: body,
            _guard: guard,
        }),
    )
}

/// A status code as a metrics label: the usual ones without an allocation.
fn status_label(s: StatusCode) -> metrics::SharedString {
    let known: &'static str = match s.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        413 => "413",
        422 => "422",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        other => return metrics::SharedString::from(other.to_string()),
    };
    metrics::SharedString::const_str(known)
}

/// The usage row of a request on a model surface that no settlement logged (an error, a refusal, a
/// client that left before the answer).
fn unclaimed_row(
    app: &App,
    route: &str,
    id: &str,
    ticket: &Ticket,
    model: &str,
    status: u16,
    error_kind: Option<String>,
) {
    if let (Some(log), Some(surface)) = (&app.usage, surface_of(route))
        && !ticket.claimed()
    {
        log.record(crate::usage::UsageRow {
            id: crate::usage::new_id(),
            request_id: id.to_string(),
            ts: crate::store::now_ms(),
            key_id: ticket.key_id.get().cloned(),
            surface: surface.to_string(),
            model: model.to_string(),
            provider: None,
            upstream_model: None,
            input_tokens: 0,
            output_tokens: 0,
            cached_tokens: 0,
            cost_usd: None,
            latency_ms: ticket.start.elapsed().as_millis() as u64,
            ttft_ms: None,
            status,
            error_kind,
        });
    }
}

/// A request whose client hung up before its answer (the handler's future dropped, which cancels its
/// upstream request): no longer in flight, counted with status 499 (nginx's "client closed request"),
/// and given its usage row unless a settlement already wrote one.
struct Abandoned<'a> {
    app: &'a App,
    route: &'a Arc<str>,
    id: &'a Arc<str>,
    ticket: &'a Ticket,
    in_flight: &'a metrics::Gauge,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.in_flight.decrement(1.0);
        metrics::counter!(
            telemetry::REQUESTS,
            "route" => self.route.clone(),
            "model" => "",
            "status" => "499"
        )
        .increment(1);
        unclaimed_row(
            self.app,
            self.route,
            self.id,
            self.ticket,
            "",
            499,
            Some("client_closed".to_string()),
        );
    }
}

struct ObserveGuard {
    start: Instant,
    duration: metrics::Histogram,
    in_flight: metrics::Gauge,
}

impl Drop for ObserveGuard {
    fn drop(&mut self) {
        self.in_flight.decrement(1.0);
        self.duration.record(self.start.elapsed().as_secs_f64());
    }
}

/// A body that holds a guard until it is finished or dropped.
struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Unpin + Send + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Deployment gauges are read off live state at scrape time.
    let now = std::time::Instant::now();
    for d in app.catalog.deployments() {
        let available = d.health.check(now, false).is_ok();
        metrics::gauge!(telemetry::DEPLOYMENT_AVAILABLE, "deployment" => d.id.clone()).set(if available {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(telemetry::DEPLOYMENT_IN_FLIGHT, "deployment" => d.id.clone())
            .set(f64::from(d.health.in_flight()));
    }
    match &app.metrics {
        Some(h) => (
            [(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            h.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

async fn not_found(method: Method, uri: Uri) -> Response {
    let e = Error::new(
        ErrorKind::NotFound,
        format!(
            "Unknown request URL: {method} {}. Please check the URL for typos.",
            uri.path()
        ),
    )
    .with_code("unknown_url");
    error_response(Dialect::of_path(uri.path()), &e)
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    let mut e = Error::invalid(format!("Method {method} is not allowed for {}.", uri.path()));
    e.code = Some("method_not_allowed".into());
    let mut resp = error_response(Dialect::of_path(uri.path()), &e);
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

/// Reads a request body up to the configured limit: 413 beyond it.
///
/// Past the limit the rest of the body is still read and thrown away (up to [`DRAIN_CAP`] bytes or
/// [`DRAIN_TIME`]), so a client that writes its whole body before reading gets the 413 rather than a
/// broken pipe.
pub async fn read_body(body: Body, headers: &http::HeaderMap, limit: usize) -> Result<Bytes, Error> {
    use http_body_util::BodyExt as _;
    let too_large = || {
        Error::new(
            ErrorKind::PayloadTooLarge,
            format!("The request body is larger than the limit of {limit} bytes."),
        )
        .with_code("request_too_large")
    };
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut body = body;
    if declared.is_some_and(|len| len > limit as u64) {
        drain(body).await;
        return Err(too_large());
    }
    let mut buf = bytes::BytesMut::with_capacity(declared.map_or(8 * 1024, |l| l as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Error::invalid(format!("Could not read the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > limit {
                drain(body).await;
                return Err(too_large());
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf.freeze())
}

/// How much of an oversized body is read and discarded before answering 413.
const DRAIN_CAP: usize = 64 * 1024 * 1024;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(2);

async fn drain(mut body: Body) {
    use http_body_util::BodyExt as _;
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(d) = frame.data_ref() {
                seen += d.len();
            }
            if seen > DRAIN_CAP {
                break;
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::normalize_path;

    /// The size of the future a handler returns, from its signature alone.
    fn future_size<F, A, B, C, D, E, Fut>(_: F) -> usize
    where
        F: FnOnce(A, B, C, D, E) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every request waiting for its first chunk holds its handler's future (boxed by the router), so
    /// with 10,000 streams opening at once each KB here is 10 MB. It was 6.9 KB for a chat before the
    /// attempt's future stopped being kept twice and the translating providers' calls were boxed.
    #[test]
    fn model_handlers_futures_stay_small() {
        // The Responses handler holds the Responses request beside its chat translation (about
        // 1.3 KB more than a chat); it was 7.5 KB before its native path was boxed.
        let sizes = [
            (
                "chat_completions",
                future_size(super::openai::chat_completions),
                4096,
            ),
            ("messages", future_size(super::anthropic::messages), 4096),
            ("responses::create", future_size(super::responses::create), 5120),
        ];
        for (name, size, bound) in sizes {
            assert!(size <= bound, "{name}'s future is {size} bytes");
        }
    }

    #[test]
    fn aliases_map_onto_canonical_paths() {
        let cases = [
            ("/v1/chat/completions", None),
            ("/v1/v1/chat/completions", Some("/v1/chat/completions")),
            ("/api/openai/chat/completions", Some("/v1/chat/completions")),
            ("/api/openai/v1/chat/completions", Some("/v1/chat/completions")),
            ("/api/openai/v1/v1/models", Some("/v1/models")),
            ("/api/openai/models/gpt-4o", Some("/v1/models/gpt-4o")),
            ("/api/anthropic/v1/messages", Some("/anthropic/v1/messages")),
            ("/api/anthropic/messages", Some("/anthropic/v1/messages")),
            (
                "/api/anthropic/v1/v1/messages/count_tokens",
                Some("/anthropic/v1/messages/count_tokens"),
            ),
            ("/chat/completions", Some("/v1/chat/completions")),
            ("/v1/models/", Some("/v1/models")),
            ("/health", None),
            ("/api/openaix", None),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_path(input).as_deref(), want, "{input}");
        }
    }
}
