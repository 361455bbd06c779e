//! What the chat surfaces (OpenAI, Anthropic) share: reading and resolving a request, the usage
//! settlement, and the headers and labels every answer carries.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderName, HeaderValue};
use protocol::WireError;
use protocol::canonical::{self as c, StreamAccumulator};
use serde_json::{Map, Value};

use super::response::{Dialect, ModelLabel, error_response};
use super::{App, RequestId, read_body};
use crate::auth::Principal;
use crate::config::ModelType;
use crate::error::ErrorKind;
use crate::error::{Error, Result};
use crate::limits::{Admission, Ask};
use crate::providers::EventStream;
use crate::router::exec::{AttemptRecord, Attempts};
use crate::router::plan::{self, Candidate, Needs, Plan, RouteRequest};
use crate::router::{Deployment, InFlight};
use crate::usage::UsageRow;

/// What a usage row says of an error: its code when it has one, else its kind.
pub(crate) fn error_tag(e: &Error) -> String {
    match &e.code {
        Some(c) => c.clone(),
        None => format!("{:?}", e.kind).to_lowercase(),
    }
}

/// What served a request: the candidate that answered, every attempt made, and the in-flight count it
/// holds on its deployment until the answer ends.
pub(crate) struct Served {
    pub candidate: Candidate,
    pub attempts: Vec<AttemptRecord>,
    pub strategy: &'static str,
    /// When the attempt that answered started (its TTFT counts from here).
    pub attempt_start: Instant,
    _in_flight: InFlight,
}

impl Served {
    pub fn dep(&self) -> &Arc<Deployment> {
        &self.candidate.dep
    }
}

/// The request's deadline for all attempts: `x-switchyard-timeout-ms`, else `[routing] timeout_ms`.
pub(crate) fn deadline(app: &App, headers: &HeaderMap) -> tokio::time::Instant {
    let ms = headers
        .get("x-switchyard-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map_or(app.catalog.routing.timeout_ms, |ms| ms.min(3_600_000));
    tokio::time::Instant::now() + Duration::from_millis(ms)
}

/// Walks a plan, one [`Attempt`] at a time; a failure moves on by the rules of
/// [`crate::router::exec`]. Handlers use it through [`walk!`].
pub(crate) struct Routing<'a> {
    run: Attempts<'a>,
}

/// Runs attempts of a plan until one answers: `walk!(app, &plan, headers, |cand| attempt_future)`
/// evaluates to `(what the attempt returned, Served)`, or returns the error to answer from the
/// enclosing function. (A macro, not a function taking a closure: the attempt borrows the request
/// body mutably, which an async closure cannot lend to a `Send` future.)
macro_rules! walk {
    ($app:expr, $plan:expr, $headers:expr, |$cand:ident| $attempt:expr) => {{
        let mut routing = $crate::http::shared::Routing::new($app, $plan, $headers);
        loop {
            let Some(attempt) = routing.next().await else {
                return Err(routing.into_error());
            };
            let $cand = &attempt.candidate;
            match attempt.within($attempt).await {
                Ok(v) => break (v, routing.answered(attempt)),
                Err(e) => routing.failed(e)?,
            }
        }
    }};
}
pub(crate) use walk;

/// One attempt: its candidate, counted in flight from now, with its first byte due by `deadline`.
pub(crate) struct Attempt {
    pub candidate: Candidate,
    deadline: tokio::time::Instant,
    started: Instant,
    guard: InFlight,
}

impl Attempt {
    /// Runs the attempt's future within its first-byte deadline.
    ///
    /// A plain function over `Timeout`, not an `async fn`: an `async fn` keeps its argument in its
    /// state beside the `Timeout` it is moved into, so the attempt's future (2.5 KB for a chat) would
    /// sit in every waiting request twice.
    pub fn within<T, F>(&self, fut: F) -> impl std::future::Future<Output = Result<T>>
    where
        F: std::future::Future<Output = Result<T>>,
    {
        use futures::FutureExt;
        tokio::time::timeout_at(self.deadline, fut).map(move |r| match r {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "upstream {} did not start answering within {} ms",
                    self.candidate.dep.provider.name(),
                    self.started.elapsed().as_millis()
                ),
            )),
        })
    }
}

impl<'a> Routing<'a> {
    pub fn new(app: &'a App, plan: &'a Plan, headers: &HeaderMap) -> Routing<'a> {
        Routing {
            run: Attempts::new(plan, &app.catalog.routing, deadline(app, headers)),
        }
    }

    pub async fn next(&mut self) -> Option<Attempt> {
        let step = self.run.next().await?;
        Some(Attempt {
            guard: InFlight::new(step.candidate.dep.clone()),
            candidate: step.candidate,
            deadline: step.first_byte_deadline,
            started: Instant::now(),
        })
    }

    /// The attempt answered: what served the request.
    pub fn answered(mut self, a: Attempt) -> Served {
        self.run.succeeded();
        let strategy = self.run.strategy();
        Served {
            candidate: a.candidate,
            attempts: self.run.log,
            strategy,
            attempt_start: a.started,
            _in_flight: a.guard,
        }
    }

    /// The attempt failed: `Err` is the answer to give now.
    pub fn failed(&mut self, e: Error) -> Result<()> {
        self.run.failed(e)
    }

    pub fn into_error(self) -> Error {
        self.run.into_error()
    }
}

/// Waits for a stream's first item, so an upstream that fails before its first byte can still be
/// replaced by the next deployment; the item is put back in front.
pub(crate) async fn first_item<T: Send + 'static>(
    mut s: BoxStream<'static, Result<T>>,
) -> Result<BoxStream<'static, Result<T>>> {
    match s.next().await {
        Some(Ok(first)) => Ok(futures::stream::once(std::future::ready(Ok(first)))
            .chain(s)
            .boxed()),
        Some(Err(e)) => Err(e),
        None => Ok(s),
    }
}

/// `routing_metadata`, serialized straight from the request's own state.
#[derive(serde::Serialize)]
pub(crate) struct Metadata<'a> {
    provider: &'a str,
    provider_model_id: &'a str,
    model_canonical: &'a str,
    deployment: &'a str,
    tier: &'static str,
    routing_strategy: &'static str,
    attempts: &'a [AttemptRecord],
    ttft_ms: Option<u64>,
    throughput_tps: Option<f64>,
    cost: Cost,
}

impl Metadata<'_> {
    /// What serde writes for it, written by hand (see [`crate::json_out`]).
    fn write_json(&self, out: &mut Vec<u8>) {
        use crate::json_out::Obj;
        let mut o = Obj::new(out);
        o.str("provider", self.provider);
        o.str("provider_model_id", self.provider_model_id);
        o.str("model_canonical", self.model_canonical);
        o.str("deployment", self.deployment);
        o.str("tier", self.tier);
        o.str("routing_strategy", self.routing_strategy);
        let out = o.key("attempts");
        out.push(b'[');
        for (i, a) in self.attempts.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut m = Obj::new(out);
            m.str("deployment", &a.dep.id);
            m.str("provider", a.dep.provider.name());
            m.str("model", &a.dep.upstream_model);
            m.u64("status", u64::from(a.status));
            m.u64("latency_ms", a.latency_ms);
            if let Some(e) = &a.error {
                m.str("error", e);
            }
            m.end();
        }
        out.push(b']');
        o.opt_u64("ttft_ms", self.ttft_ms);
        o.opt_f64("throughput_tps", self.throughput_tps);
        let out = o.key("cost");
        let mut c = Obj::new(out);
        c.opt_f64("usd", self.cost.usd);
        if let Some(known) = self.cost.price_known {
            c.bool("price_known", known);
        }
        c.end();
        o.end();
    }
}

#[derive(serde::Serialize)]
struct Cost {
    usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    price_known: Option<bool>,
}

/// A JSON answer with `routing_metadata` added as its last key (when the switch is on), written into
/// the serialized body rather than through a `Value`.
pub(crate) fn json_with_metadata(v: &impl serde::Serialize, settle: &Settle) -> Response {
    match serde_json::to_vec(v) {
        Ok(b) => json_bytes_with_metadata(b, settle),
        Err(e) => {
            tracing::error!("could not encode a response: {e}");
            super::response::error_response(
                super::Dialect::OpenAi,
                &Error::internal("could not encode the response"),
            )
        }
    }
}

/// [`json_with_metadata`] for an object already serialized.
pub(crate) fn json_bytes_with_metadata(mut bytes: Vec<u8>, settle: &Settle) -> Response {
    append_metadata(&mut bytes, settle);
    let mut resp = super::response::answer_with(axum::body::Body::from(bytes));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    cost_header(&mut resp, settle);
    resp
}

/// Adds `routing_metadata` as the last member of the serialized object that ends `bytes` (when the
/// config puts it in bodies).
pub(crate) fn append_metadata(bytes: &mut Vec<u8>, settle: &Settle) {
    if settle.in_body && bytes.last() == Some(&b'}') {
        bytes.pop();
        if bytes.last() != Some(&b'{') {
            bytes.push(b',');
        }
        bytes.extend_from_slice(b"\"routing_metadata\":");
        let meta = settle.metadata();
        let at = bytes.len();
        meta.write_json(bytes);
        crate::json_out::debug_check(&bytes[at..], &meta, "routing_metadata");
        bytes.push(b'}');
    }
}

/// Usage and timing of one call, recorded when the response ends — or when the client goes away, so a
/// disconnect never loses what was already spent. It also feeds the deployment's measurements (time to
/// first token, tokens per second) and renders `routing_metadata`.
pub(crate) struct Settle {
    /// The model and provider, shared with the metrics labels (a reference count, not a copy, each).
    model: Arc<str>,
    pub(crate) provider: Arc<str>,
    /// The metrics this answer adds to (tokens, cost, time to first token), under those labels.
    metrics: Arc<crate::router::ServedCounters>,
    start: Instant,
    rid: RequestId,
    key_id: Option<String>,
    surface: &'static str,
    /// The error that ended an answer that had started (the usage row's status).
    error: Option<(u16, String)>,
    usage: Option<c::Usage>,
    first_token: Option<Instant>,
    streamed: bool,
    served: Served,
    pub(crate) in_body: bool,
    admission: Option<Admission>,
    log: Option<crate::usage::UsageLog>,
}

impl Settle {
    pub(crate) fn new(
        app: &App,
        req: (&RequestId, &Principal, &'static str),
        model: &str,
        served: Served,
        admission: Option<Admission>,
    ) -> Settle {
        let (rid, who, surface) = req;
        // This settlement writes the request's usage row (the request layer writes the others).
        rid.1.claim();
        let model: Arc<str> = Arc::from(model);
        let provider: Arc<str> = Arc::from(served.dep().provider.name());
        Settle {
            admission,
            metrics: served.dep().served_metrics.get(&model, &provider),
            model,
            provider,
            start: Instant::now(),
            rid: rid.clone(),
            key_id: who.key_id(),
            surface,
            error: None,
            usage: None,
            first_token: None,
            streamed: false,
            served,
            in_body: app.catalog.routing.metadata_in_body,
            log: app.usage.clone(),
        }
    }

    pub(crate) fn usage(&mut self, u: c::Usage) {
        self.usage = Some(u);
    }

    /// A token reached the client (the whole answer, for JSON answers).
    pub(crate) fn token(&mut self) {
        if self.first_token.is_none() {
            let now = Instant::now();
            self.first_token = Some(now);
            self.metrics
                .ttft
                .record(now.duration_since(self.start).as_secs_f64());
            self.served
                .dep()
                .health
                .record_ttft(now.duration_since(self.served.attempt_start));
        }
    }

    /// A streamed token (as opposed to a whole answer at once).
    pub(crate) fn stream_token(&mut self) {
        self.streamed = true;
        self.token();
    }

    /// The upstream broke off after its answer had started.
    pub(crate) fn failed(&mut self, e: &Error) {
        self.error = Some((e.status().as_u16(), error_tag(e)));
        if matches!(
            e.kind,
            ErrorKind::Upstream | ErrorKind::BadGateway | ErrorKind::Timeout
        ) {
            self.served
                .dep()
                .health
                .failure(std::time::Instant::now(), e, None);
        }
    }

    /// What the answer cost; `None` while usage is unknown, or when the deployment's price is.
    fn cost(&self) -> Option<f64> {
        let u = self.usage.as_ref()?;
        Some(self.served.dep().price?.cost(u))
    }

    fn tps(&self) -> Option<f64> {
        let u = self.usage.as_ref()?;
        let first = self.first_token?;
        let since = if self.streamed && u.output_tokens > 1 {
            first
        } else {
            self.served.attempt_start
        };
        let secs = Instant::now().duration_since(since).as_secs_f64();
        (secs > 0.0 && u.output_tokens > 0).then(|| u.output_tokens as f64 / secs)
    }

    /// `routing_metadata`: what served the request, how it was chosen, what it took and cost.
    pub(crate) fn metadata(&self) -> Metadata<'_> {
        let dep = self.served.dep();
        Metadata {
            provider: dep.provider.name(),
            provider_model_id: &dep.upstream_model,
            model_canonical: &self.served.candidate.entry.public_name,
            deployment: &dep.id,
            tier: dep.tier.as_str(),
            routing_strategy: self.served.strategy,
            attempts: &self.served.attempts,
            ttft_ms: self
                .first_token
                .map(|t| t.duration_since(self.served.attempt_start).as_millis() as u64),
            throughput_tps: self.tps().map(|t| (t * 10.0).round() / 10.0),
            cost: Cost {
                usd: self.cost().map(|c| (c * 1e9).round() / 1e9),
                price_known: dep.price.is_none().then_some(false),
            },
        }
    }

    /// The metadata as a JSON value (for the rare places that need one: the last chunk of a stream).
    pub(crate) fn metadata_value(&self) -> Value {
        serde_json::to_value(self.metadata()).unwrap_or(Value::Null)
    }

    pub(crate) fn admission(&self) -> Option<&Admission> {
        self.admission.as_ref()
    }

    pub(crate) fn served(&self) -> &Served {
        &self.served
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        let cost = self.cost();
        if let Some(a) = self.admission.take() {
            // The reservation becomes what was really spent (all of it, if usage never came).
            let spent = self
                .usage
                .map_or(a.reserved(), |u| u.input_tokens + u.output_tokens);
            a.settle(spent, cost.unwrap_or(0.0));
        }
        if let Some(log) = &self.log {
            let dep = self.served.dep();
            let u = self.usage.unwrap_or_default();
            let (status, error_kind) = match self.error.take() {
                Some((s, k)) => (s, Some(k)),
                None => (200, None),
            };
            log.record(UsageRow {
                id: crate::usage::new_id(),
                request_id: self.rid.0.to_string(),
                ts: crate::store::now_ms(),
                key_id: self.key_id.take(),
                surface: self.surface.to_string(),
                model: self.model.to_string(),
                provider: Some(self.provider.to_string()),
                upstream_model: Some(dep.upstream_model.clone()),
                input_tokens: u.input_tokens,
                output_tokens: u.output_tokens,
                cached_tokens: u.cache_read_tokens,
                cost_usd: cost,
                latency_ms: self.rid.1.start.elapsed().as_millis() as u64,
                ttft_ms: self
                    .first_token
                    .map(|t| t.duration_since(self.rid.1.start).as_millis() as u64),
                status,
                error_kind,
            });
        }
        if let Some(u) = self.usage {
            let m = &self.metrics;
            m.input_tokens.increment(u.input_tokens);
            m.output_tokens.increment(u.output_tokens);
            if let Some(tps) = self.tps() {
                self.served.dep().health.record_tps(tps);
            }
            if let Some(cost) = self.cost().filter(|c| *c > 0.0) {
                m.cost_micro_usd.increment((cost * 1e6).round() as u64);
            }
        }
    }
}

/// A handler's answer: its response, or its error in the caller's envelope; labelled with the model
/// for the metrics layer either way.
pub(crate) fn answer(dialect: Dialect, model: &str, result: Result<Response>) -> Response {
    match result {
        Ok(resp) => labelled(resp, model),
        Err(e) => labelled(error_response(dialect, &e), model),
    }
}

pub(crate) fn labelled(mut resp: Response, model: &str) -> Response {
    resp.extensions_mut().insert(ModelLabel(Arc::from(model)));
    resp
}

/// The routing headers every routed answer carries, taken before the settlement moves into a stream
/// (values made once per deployment, so this is a few reference-count increments).
pub(crate) struct RoutingHeaders {
    provider: HeaderValue,
    upstream_model: HeaderValue,
    model: HeaderValue,
    tier: HeaderValue,
    strategy: &'static str,
    attempts: usize,
    warnings: Option<HeaderValue>,
    rate: Option<crate::limits::RateHeaders>,
}

impl RoutingHeaders {
    pub(crate) fn of(served: &Served, warnings: &[String]) -> RoutingHeaders {
        let dep = served.dep();
        let warnings = (!warnings.is_empty())
            .then(|| {
                // Header values are visible ASCII: anything else is shown as `?`.
                let text: String = warnings
                    .join("; ")
                    .chars()
                    .map(|ch| {
                        if ch == ' ' || ch.is_ascii_graphic() {
                            ch
                        } else {
                            '?'
                        }
                    })
                    .collect();
                HeaderValue::from_str(&text).ok()
            })
            .flatten();
        RoutingHeaders {
            provider: dep.header_values.provider.clone(),
            upstream_model: dep.header_values.upstream_model.clone(),
            model: served.candidate.entry.name_header.clone(),
            tier: dep.header_values.tier.clone(),
            strategy: served.strategy,
            attempts: served.attempts.len(),
            warnings,
            rate: None,
        }
    }

    /// Adds the `x-ratelimit-*` headers of the request's admission.
    pub(crate) fn with_rate(mut self, admission: Option<&Admission>) -> RoutingHeaders {
        self.rate = admission.map(Admission::rate_headers);
        self
    }

    pub(crate) fn apply(self, resp: &mut Response) {
        const PROVIDER: HeaderName = HeaderName::from_static("x-switchyard-provider");
        const UPSTREAM_MODEL: HeaderName = HeaderName::from_static("x-switchyard-upstream-model");
        const MODEL: HeaderName = HeaderName::from_static("x-switchyard-model");
        const TIER: HeaderName = HeaderName::from_static("x-switchyard-tier");
        const STRATEGY: HeaderName = HeaderName::from_static("x-switchyard-routing-strategy");
        const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchyard-attempts");
        const WARNINGS: HeaderName = HeaderName::from_static("x-switchyard-warnings");
        let h = resp.headers_mut();
        // Room for all of them at once (the rate headers and the request id included); a map made by
        // `answer_with` has it already.
        h.reserve(super::response::ANSWER_HEADERS.saturating_sub(h.len()));
        h.insert(PROVIDER, self.provider);
        h.insert(UPSTREAM_MODEL, self.upstream_model);
        h.insert(MODEL, self.model);
        h.insert(TIER, self.tier);
        h.insert(STRATEGY, HeaderValue::from_static(self.strategy));
        h.insert(ATTEMPTS, HeaderValue::from(self.attempts));
        if let Some(w) = self.warnings {
            h.insert(WARNINGS, w);
        }
        if let Some(rate) = self.rate {
            rate.apply(h);
        }
    }
}

/// The provider headers of an answer that made no attempt (counting tokens).
pub(crate) fn candidate_headers(resp: &mut Response, c: &Candidate) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(c.dep.provider.name()) {
        h.insert("x-switchyard-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&c.dep.upstream_model) {
        h.insert("x-switchyard-upstream-model", v);
    }
    if let Ok(v) = HeaderValue::from_str(&c.entry.public_name) {
        h.insert("x-switchyard-model", v);
    }
}

/// The cost header of a whole (JSON) answer.
pub(crate) fn cost_header(resp: &mut Response, settle: &Settle) {
    if let Some(c) = settle.cost()
        && let Ok(v) = HeaderValue::from_str(&format!("{c:.9}"))
    {
        resp.headers_mut().insert("x-switchyard-cost-usd", v);
    }
}

/// Folds a canonical stream into a whole response.
pub(crate) async fn collect(mut s: EventStream) -> Result<c::ChatResponse> {
    let mut acc = StreamAccumulator::new();
    while let Some(ev) = s.next().await {
        acc.push(&ev?);
    }
    Ok(acc.finish())
}

/// A chat request read (within the body limit), parsed into a JSON object, its routing fields taken
/// out, validated by the surface's own rules, and planned. `model_out` gets the requested name as soon
/// as it is known, for the metrics label of an error answer too.
pub(crate) async fn read_chat_request(
    app: &App,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    validate: fn(&Map<String, Value>) -> std::result::Result<(), WireError>,
    model_out: &mut String,
) -> Result<(Map<String, Value>, Plan)> {
    let (obj, route) = read_routed(app, who, headers, body, model_out).await?;
    validate(&obj)?;
    let plan = plan::build(&app.catalog, &route, || Needs::of_chat(&obj), &[ModelType::Chat])?;
    Ok((obj, plan))
}

/// A body read (within the body limit) as a JSON object, its routing fields taken out and checked
/// against the caller's key. `model_out` gets the requested name as soon as it is known, for the
/// metrics label of an error answer too.
pub(crate) async fn read_routed(
    app: &App,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<(Map<String, Value>, RouteRequest)> {
    let bytes = read_body(body, headers, app.max_body_bytes).await?;
    let mut obj = protocol::openai::parse_object(&bytes)?;
    let route = RouteRequest::take(&mut obj)?;
    if let Some((m, _)) = route.models.first() {
        model_out.clone_from(m);
    }
    check_scope(who, &route)?;
    Ok((obj, route))
}

/// A key scoped to some models may name only those (every model of a fallback list included).
pub(crate) fn check_scope(who: &Principal, route: &RouteRequest) -> Result<()> {
    route.models.iter().try_for_each(|(m, _)| who.check_model(m))
}

/// `[limits]` and the key's own limits: admits a request expected to spend these tokens (prompt
/// estimate plus its output allowance, from the plan's needs when it has them) and, for a key with a
/// budget, to cost what it would at the dearest deployment of its plan; or refuses it (429, or 402
/// over budget). `None` when no limit applies.
pub(crate) async fn admit(
    app: &App,
    who: &Principal,
    plan: &Plan,
    needs: impl FnOnce() -> Needs,
) -> Result<Option<Admission>> {
    let key = match who {
        Principal::Key(k) => Some(k.as_ref()),
        _ => None,
    };
    if !app.limits.applies(key) {
        return Ok(None);
    }
    let e = plan.needs.map_or_else(|| needs().estimate, |n| n.estimate);
    let cost_usd = if key.is_some_and(|k| k.budget_usd.is_some()) {
        plan.candidates
            .iter()
            .filter_map(|c| c.dep.price)
            .map(|p| p.expected(e.prompt_tokens, e.output_tokens))
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    let ask = Ask {
        tokens: e.prompt_tokens + e.output_tokens,
        cost_usd,
    };
    app.limits.admit(key, ask).await.map(Some)
}
