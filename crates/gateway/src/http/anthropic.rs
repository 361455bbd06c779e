//! The Anthropic surface: `POST /v1/messages` and `POST /v1/messages/count_tokens` (also under
//! `/anthropic/v1/…`, where `/api/anthropic/…` lands too), and `GET /anthropic/v1/models`.
//!
//! A request to an Anthropic upstream takes the same-dialect fast path: its validated body goes upstream
//! with only `model` rewritten, and the answer comes back as it was sent (stream relayed event by event)
//! with the public model name. Any other upstream goes through the canonical model:
//! [`MessagesRequest::to_canonical`] → `provider.chat` → [`EventEncoder`] (a stream) or
//! [`MessagesResponse::from_canonical`] (JSON). What the upstream's dialect cannot carry is listed in the
//! `x-switchyard-warnings` header and, for JSON answers, in a top-level `warnings` array; what would change
//! the answer materially is refused with 400.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue};
use protocol::anthropic::messages::CARRY_KEY;
use protocol::anthropic::{
    self as wire, CountTokensRequest, EventDecoder, EventEncoder, MessagesRequest, MessagesResponse,
    carried_fields, validate,
};
use protocol::canonical::{self as c, Part, StreamEvent};
use protocol::sse::{self, SseEvent};
use serde_json::{Value, json};

use super::openai::{answer_model, routing_headers};
use super::response::{Dialect, anthropic_error_body, error_response, json_body, sse_response};
use super::shared::{
    Settle, admit, answer, candidate_headers, collect, cost_header, first_item, labelled, read_chat_request,
    walk,
};
use super::{App, RequestId};
use crate::auth::Principal;
use crate::config::ModelType;
use crate::error::{Error, Result};
use crate::providers::{ChatOutput, EventStream, Provider, Raw};
use crate::router::ModelEntry;
use crate::router::plan::{Candidate, Needs};

/// The header that says how `count_tokens` counted: `exact` (the upstream's own count, or the local
/// model's tokenizer over its chat template) or `estimate` (OpenAI-compatible upstreams have no count
/// endpoint: o200k_base over the rendered request, see [`estimate_tokens`]).
pub const TOKEN_COUNT_HEADER: &str = "x-switchyard-token-count";

/// The caller's `anthropic-beta` values, for the same-dialect path.
fn client_betas(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

fn fallback_id(rid: &RequestId) -> String {
    format!("msg_{}", rid.0.trim_start_matches("req_"))
}

pub async fn messages(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = messages_inner(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::Anthropic, &model, result)
}

enum Started {
    Raw(Raw),
    Canonical(ChatOutput, Vec<String>),
}

/// One attempt of a messages request: the same-dialect fast path for an Anthropic upstream, the
/// canonical path (with what only Anthropic understands as warnings) for any other.
async fn attempt_messages(
    cand: &Candidate,
    obj: &mut serde_json::Map<String, Value>,
    canonical: Option<&(c::ChatRequest, Vec<String>)>,
    betas: &[&str],
) -> Result<Started> {
    let dep = &cand.dep;
    if let Provider::Anthropic(p) = &dep.provider {
        // Same dialect: forward with only the model name rewritten.
        return match p.forward("messages", obj, &dep.upstream_model, betas).await? {
            Raw::Stream(s) => Ok(Started::Raw(Raw::Stream(first_item(s).await?))),
            full => Ok(Started::Raw(full)),
        };
    }
    let Some((req, carried)) = canonical else {
        return Err(Error::internal("no canonical request"));
    };
    // Boxed, as in the chat handler: the largest provider's call would size every request's state.
    let (output, more) = Box::pin(dep.provider.chat(req, &dep.upstream_model)).await?;
    let mut warnings = carried.clone();
    for w in more {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    let output = match output {
        ChatOutput::Stream(s) => ChatOutput::Stream(first_item(s).await?),
        full => full,
    };
    Ok(Started::Canonical(output, warnings))
}

async fn messages_inner(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (mut obj, plan) =
        read_chat_request(app, who, headers, body, validate::messages_request, model_out).await?;
    let admission = admit(app, who, &plan, || Needs::of_chat(&obj)).await?;
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let fallback_id = fallback_id(rid);
    let betas = client_betas(headers);
    // The canonical request (and what only Anthropic understands, which other upstreams cannot take),
    // built before any same-dialect attempt rewrites the body.
    let canonical = if plan
        .candidates
        .iter()
        .any(|c| !matches!(c.dep.provider, Provider::Anthropic(_)))
    {
        let req: MessagesRequest = wire::from_object(obj.clone())?;
        let mut canonical = req.to_canonical()?;
        let warnings = carried_fields(&canonical.extra);
        canonical.extra.remove(CARRY_KEY);
        Some((canonical, warnings))
    } else {
        None
    };
    let (started, served) = walk!(app, &plan, headers, |cand| attempt_messages(
        cand,
        &mut obj,
        canonical.as_ref(),
        &betas
    ));
    let model = answer_model(model_out, &served);
    // Local ids are synthetic (`chatcmpl-…`): answer with a message id of our own.
    let own_id = matches!(served.dep().provider, Provider::Local(_));
    let mut settle = Settle::new(app, (rid, who, "messages"), model_out, served, admission);
    let (output, warnings) = match started {
        Started::Raw(raw) => return relay_raw(raw, &model, fallback_id, settle),
        Started::Canonical(o, w) => (o, w),
    };
    let headers = routing_headers(&settle, &warnings);
    let mut resp = if stream {
        let events = match output {
            ChatOutput::Stream(s) => s,
            ChatOutput::Full(r) => {
                futures::stream::iter(c::response_to_events(&r).into_iter().map(Ok)).boxed()
            }
        };
        sse_response(encode_events(events, model, fallback_id, own_id, settle))
    } else {
        let mut response = match output {
            ChatOutput::Full(r) => r,
            ChatOutput::Stream(s) => collect(s).await.inspect_err(|e| settle.failed(e))?,
        };
        settle.token();
        if own_id || response.id.is_empty() {
            response.id = fallback_id;
        }
        if let Some(u) = response.usage {
            settle.usage(u);
        }
        response.model.clone_from(&model);
        let mut wire = MessagesResponse::from_canonical(&response);
        if !warnings.is_empty() {
            wire.extra.insert("warnings".into(), json!(warnings));
        }
        let mut resp = json_body(&wire);
        cost_header(&mut resp, &settle);
        resp
    };
    headers.apply(&mut resp);
    Ok(resp)
}

/// An Anthropic usage object → canonical.
fn usage_of(v: &Value) -> Option<c::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    <wire::Usage as serde::Deserialize>::deserialize(u)
        .ok()
        .map(|u| u.to_canonical())
}

/// Answers from the same-dialect fast path: the upstream's message with the public model name. The
/// body stays exactly Anthropic's shape: routing is told in headers only.
fn relay_raw(raw: Raw, model: &str, fallback_id: String, mut settle: Settle) -> Result<Response> {
    let headers = routing_headers(&settle, &[]);
    let raw = raw.parsed(&settle.provider).inspect_err(|e| settle.failed(e))?;
    let mut resp = match raw {
        Raw::Json(_) => return Err(Error::internal("an unparsed answer after parsing")),
        // Only the OpenAI provider streams chunk texts, and it never answers here.
        Raw::Chunks(_) => {
            return Err(Error::internal(
                "a stream of OpenAI chunks on the Anthropic relay",
            ));
        }
        Raw::Full(mut v) => {
            if v.get("type").and_then(Value::as_str) != Some("message")
                || !v.get("content").is_some_and(Value::is_array)
            {
                let e = Error::bad_gateway(format!(
                    "upstream {} answered with something that is not a message",
                    settle.provider
                ));
                settle.failed(&e);
                return Err(e);
            }
            settle.token();
            v["model"] = Value::String(model.to_string());
            if v.get("id").and_then(Value::as_str).is_none_or(str::is_empty) {
                v["id"] = Value::String(fallback_id);
            }
            if let Some(u) = usage_of(&v) {
                settle.usage(u);
            }
            let mut resp = json_body(&v);
            cost_header(&mut resp, &settle);
            resp
        }
        Raw::Stream(events) => sse_response(relay_events(events, model.to_string(), fallback_id, settle)),
    };
    headers.apply(&mut resp);
    Ok(resp)
}

/// An error as the last event of an Anthropic stream.
fn error_frame(e: &Error) -> Bytes {
    let body = anthropic_error_body(e);
    sse::event_frame("error", body.to_string().as_bytes())
}

struct Relay {
    inner: BoxStream<'static, Result<Value>>,
    model: Value,
    fallback_id: String,
    settle: Settle,
    /// Reads the usage of `message_start` and `message_delta` (only those are fed to it).
    usage: EventDecoder,
    done: bool,
}

/// The fast path's stream: each upstream event as it came, with the public model name in
/// `message_start`; an upstream error or a cut ends it with an `error` event.
fn relay_events(
    events: BoxStream<'static, Result<Value>>,
    model: String,
    fallback_id: String,
    settle: Settle,
) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    let st = Relay {
        inner: events,
        model: Value::String(model),
        fallback_id,
        settle,
        usage: EventDecoder::new(),
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.inner.next().await {
                None => return None,
                Some(Err(e)) => {
                    st.done = true;
                    st.settle.failed(&e);
                    return Some((Ok(error_frame(&e)), st));
                }
                Some(Ok(mut v)) => {
                    let ty = v
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string();
                    match ty.as_str() {
                        "message_start" => {
                            if let Some(msg) = v.get_mut("message").and_then(Value::as_object_mut) {
                                msg.insert("model".into(), st.model.clone());
                                if msg.get("id").and_then(Value::as_str).is_none_or(str::is_empty) {
                                    msg.insert("id".into(), Value::String(st.fallback_id.clone()));
                                }
                            }
                            st.read_usage(&ty, &v);
                        }
                        "message_delta" => st.read_usage(&ty, &v),
                        "content_block_delta" => st.settle.stream_token(),
                        _ => {}
                    }
                    match serde_json::to_vec(&v) {
                        Ok(b) if !ty.is_empty() => return Some((Ok(sse::event_frame(&ty, &b)), st)),
                        _ => continue,
                    }
                }
            }
        }
    })
}

impl Relay {
    fn read_usage(&mut self, ty: &str, v: &Value) {
        let ev = SseEvent {
            event: Some(ty.to_string()),
            data: v.to_string(),
            id: None,
        };
        let mut out = Vec::new();
        if self.usage.decode(&ev, &mut out).is_ok() {
            for e in out {
                if let StreamEvent::Usage { usage } = e {
                    self.settle.usage(usage);
                }
            }
        }
    }
}

struct Encode {
    inner: EventStream,
    encoder: EventEncoder,
    fallback_id: String,
    own_id: bool,
    settle: Settle,
    pending: VecDeque<Bytes>,
    started: bool,
    done: bool,
}

/// The canonical path's stream: canonical events rendered as Anthropic events. An error ends it with
/// an `error` event; the end of the events closes what is open and sends `message_delta` and
/// `message_stop` if they have not gone yet.
fn encode_events(
    events: EventStream,
    model: String,
    fallback_id: String,
    own_id: bool,
    settle: Settle,
) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    let st = Encode {
        inner: events,
        encoder: EventEncoder::new(model),
        fallback_id,
        own_id,
        settle,
        pending: VecDeque::new(),
        started: false,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok(frame), st));
            }
            if st.done {
                return None;
            }
            let mut out = Vec::new();
            match st.inner.next().await {
                None => {
                    st.done = true;
                    st.encoder.finish(&mut out);
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.settle.failed(&e);
                    st.encoder.error(e.anthropic_type(), &e.message, &mut out);
                }
                Some(Ok(mut ev)) => {
                    match &mut ev {
                        StreamEvent::Start { id, .. } if st.own_id || id.is_empty() => {
                            id.clone_from(&st.fallback_id);
                        }
                        StreamEvent::Usage { usage } => st.settle.usage(*usage),
                        StreamEvent::TextDelta { .. }
                        | StreamEvent::ReasoningDelta { .. }
                        | StreamEvent::ToolCallStart { .. } => st.settle.stream_token(),
                        _ => {}
                    }
                    if !st.started {
                        st.started = true;
                        if !matches!(ev, StreamEvent::Start { .. }) {
                            // A stream without `Start`: open the message with our id.
                            let start = StreamEvent::Start {
                                id: st.fallback_id.clone(),
                                model: String::new(),
                                created: 0,
                            };
                            st.encoder.encode(&start, &mut out);
                        }
                    }
                    st.encoder.encode(&ev, &mut out);
                }
            }
            st.pending
                .extend(out.iter().map(wire::MessageStreamEvent::to_frame));
            if st.encoder.is_done() {
                st.done = true;
            }
        }
    })
}

// ------------------------------------------------------------------------------------- count_tokens

pub async fn count_tokens(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = count_inner(&app, &who, &headers, body, &mut model).await;
    answer(Dialect::Anthropic, &model, result)
}

async fn count_inner(
    app: &App,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (obj, plan) =
        read_chat_request(app, who, headers, body, validate::count_tokens_request, model_out).await?;
    // Counting needs no fallback: the first deployment of the plan counts.
    let Some(cand) = plan.candidates.first() else {
        return Err(Error::model_not_found(model_out));
    };
    let dep = &cand.dep;
    let (count, how) = match &dep.provider {
        Provider::Anthropic(p) => {
            let v = p
                .count_tokens(obj, &dep.upstream_model, &client_betas(headers))
                .await?;
            let mut resp = json_body(&v);
            resp.headers_mut()
                .insert(TOKEN_COUNT_HEADER, HeaderValue::from_static("exact"));
            candidate_headers(&mut resp, cand);
            return Ok(resp);
        }
        Provider::Local(p) => {
            let canonical = count_request(obj)?;
            let p = p.clone();
            let n = tokio::task::spawn_blocking(move || p.count_chat_tokens(&canonical))
                .await
                .map_err(|e| Error::internal(format!("token counting failed: {e}")))??;
            (n, "exact")
        }
        Provider::OpenAi(_) | Provider::Cli(_) | Provider::Gemini(_) | Provider::Bedrock(_) => {
            let canonical = count_request(obj)?;
            let n = tokio::task::spawn_blocking(move || estimate_tokens(&canonical))
                .await
                .map_err(|e| Error::internal(format!("token counting failed: {e}")))?;
            (n, "estimate")
        }
    };
    let mut resp = json_body(&json!({"input_tokens": count}));
    resp.headers_mut()
        .insert(TOKEN_COUNT_HEADER, HeaderValue::from_static(how));
    candidate_headers(&mut resp, cand);
    Ok(resp)
}

/// A count_tokens body as a canonical request (without the Anthropic-only carry, which adds nothing
/// another tokenizer could count).
fn count_request(obj: serde_json::Map<String, Value>) -> Result<c::ChatRequest> {
    let req: CountTokensRequest = wire::from_object(obj)?;
    let mut canonical = req.into_messages_request().to_canonical()?;
    canonical.extra.remove(CARRY_KEY);
    Ok(canonical)
}

/// Tokens OpenAI's own framing adds per message, and once to prime the reply (the OpenAI cookbook's
/// figures for current models).
const TOKENS_PER_MESSAGE: u64 = 3;
const REPLY_PRIMING: u64 = 3;
/// An image counts as OpenAI's low-detail flat rate: the real cost depends on its size and detail,
/// which only the upstream knows.
const IMAGE_TOKENS: u64 = 85;

/// An estimate of a request's input tokens for an OpenAI-compatible upstream, which has no counting
/// endpoint: `o200k_base` (the GPT-4o / o-series tokenizer) over each message's text, tool calls and
/// tool results, plus the cookbook's framing (3 per message, 3 for the reply), 85 per image, and the
/// tool definitions' JSON. Other models' tokenizers differ; the answer says `estimate`.
pub fn estimate_tokens(req: &c::ChatRequest) -> u64 {
    let bpe = tiktoken_rs::o200k_base_singleton();
    let count = |s: &str| bpe.encode_ordinary(s).len() as u64;
    let mut total = REPLY_PRIMING;
    for m in &req.messages {
        total += TOKENS_PER_MESSAGE + count(m.role.as_str());
        for p in &m.content {
            total += match p {
                Part::Text { text } => count(text),
                Part::Image { .. } => IMAGE_TOKENS,
                Part::ToolCall { name, arguments, .. } => 1 + count(name) + count(arguments),
                Part::ToolResult { content, .. } => content
                    .iter()
                    .map(|p| match p {
                        Part::Text { text } => count(text),
                        Part::Image { .. } => IMAGE_TOKENS,
                        _ => 0,
                    })
                    .sum(),
                Part::Reasoning { text, .. } => count(text),
                Part::RedactedReasoning { .. } => 0,
            };
        }
    }
    for t in &req.tools {
        let def = json!({"name": t.name, "description": t.description, "parameters": t.parameters});
        total += count(&def.to_string());
    }
    total
}

// ------------------------------------------------------------------------------------------- models

/// `2024-10-22T00:00:00Z` from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A model in Anthropic's shape.
pub fn model_object(entry: &ModelEntry) -> Value {
    json!({
        "type": "model",
        "id": entry.public_name,
        "display_name": entry.public_name,
        "created_at": rfc3339(entry.created),
    })
}

/// Anthropic's model list: chat models only (the others cannot answer `/v1/messages`), paged with
/// `limit` (1–1000, default 20), `after_id` and `before_id`.
pub fn models_page(app: &App, params: &HashMap<String, String>) -> Result<Value> {
    let limit = match params.get("limit") {
        None => 20,
        Some(l) => match l.parse::<usize>() {
            Ok(n @ 1..=1000) => n,
            _ => {
                return Err(Error::invalid_param(
                    "limit",
                    "limit: Input should be an integer between 1 and 1000.",
                ));
            }
        },
    };
    let all: Vec<&Arc<ModelEntry>> = app.catalog.iter().filter(|e| e.kind == ModelType::Chat).collect();
    let position = |id: &str| all.iter().position(|e| e.public_name == id);
    let (page, has_more) = if let Some(before) = params.get("before_id") {
        let end = position(before).unwrap_or(0);
        let start = end.saturating_sub(limit);
        (&all[start..end], start > 0)
    } else {
        let start = params
            .get("after_id")
            .map_or(0, |after| position(after).map_or(all.len(), |i| i + 1));
        let end = (start + limit).min(all.len());
        (&all[start..end], end < all.len())
    };
    let data: Vec<Value> = page.iter().map(|e| model_object(e)).collect();
    Ok(json!({
        "data": data,
        "has_more": has_more,
        "first_id": page.first().map(|e| e.public_name.clone()),
        "last_id": page.last().map(|e| e.public_name.clone()),
    }))
}

pub async fn list_models(
    State(app): State<Arc<App>>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    match models_page(&app, &params) {
        Ok(v) => json_body(&v),
        Err(e) => error_response(Dialect::Anthropic, &e),
    }
}

pub async fn get_model(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.catalog.resolve(&id) {
        Ok(entry) => labelled(json_body(&model_object(entry)), &id),
        Err(e) => error_response(Dialect::Anthropic, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;

    #[test]
    fn dates_render_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_729_555_200 + 3661), "2024-10-22T01:01:01Z");
    }
}
