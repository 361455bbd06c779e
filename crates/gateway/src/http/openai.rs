//! The OpenAI surface: `/v1/chat/completions`, `/v1/models`.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use protocol::canonical::{self as c, StreamEvent};
use protocol::openai::chat::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkEncoder, UsageCounts,
};
use protocol::openai::{self as wire, validate};
use protocol::raw::{ParsedObject, RawObject};
use protocol::sse;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use super::response::{Dialect, error_body, error_response, json_body, sse_response};
pub(crate) use super::shared::{
    RoutingHeaders, Served, Settle, collect, json_bytes_with_metadata, json_with_metadata, labelled,
};
use super::shared::{admit, answer, append_metadata, first_item, read_chat_request, walk};
use super::{App, RequestId};
use crate::auth::Principal;
use crate::error::{Error, Result};
use crate::providers::{ChatOutput, EventStream, Provider, Raw};
use crate::router::ModelEntry;
use crate::router::plan::{Candidate, Needs};

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = chat(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

/// What an attempt produced before the answer is committed: the same-dialect upstream's raw answer, or a
/// canonical one (with what could not be carried).
enum Started {
    Raw(Raw),
    Canonical(ChatOutput, Vec<String>),
}

/// One attempt of a chat request: the same-dialect fast path for an OpenAI-compatible upstream, the
/// canonical path for any other; a stream counts as started once its first item is here.
async fn attempt_chat(
    cand: &Candidate,
    obj: &mut Map<String, Value>,
    canonical: Option<&c::ChatRequest>,
) -> Result<Started> {
    let dep = &cand.dep;
    if let Provider::OpenAi(p) = &dep.provider {
        // Same dialect: forward with only the model name and stream options rewritten.
        return match p.forward("chat/completions", obj, &dep.upstream_model).await? {
            Raw::Chunks(s) => Ok(Started::Raw(Raw::Chunks(first_item(s).await?))),
            full => Ok(Started::Raw(full)),
        };
    }
    let Some(req) = canonical else {
        return Err(Error::internal("no canonical request"));
    };
    // Boxed: the largest provider's call (2.5 KB) would otherwise size every chat request's state,
    // the same-dialect ones included, while they wait for their first chunk.
    let (output, warnings) = Box::pin(dep.provider.chat(req, &dep.upstream_model)).await?;
    let output = match output {
        ChatOutput::Stream(s) => ChatOutput::Stream(first_item(s).await?),
        full => full,
    };
    Ok(Started::Canonical(output, warnings))
}

/// The name an answer carries: the one the client asked for when that is what served it (an alias
/// stays an alias), else the model that served it (`auto`, a fallback list).
pub(crate) fn answer_model(requested: &str, served: &Served) -> String {
    let e = &served.candidate.entry;
    if e.public_name == requested || e.aliases.iter().any(|a| a == requested) {
        requested.to_string()
    } else {
        e.public_name.clone()
    }
}

async fn chat(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (mut obj, plan) =
        read_chat_request(app, who, headers, body, validate::chat_request, model_out).await?;
    let admission = admit(app, who, &plan, || Needs::of_chat(&obj)).await?;
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let fallback_id = format!("chatcmpl-{}", rid.0.trim_start_matches("req_"));
    // The canonical request, built before any same-dialect attempt rewrites the body.
    let canonical = if plan
        .candidates
        .iter()
        .any(|c| !matches!(c.dep.provider, Provider::OpenAi(_)))
    {
        let req: ChatCompletionRequest = wire::from_object(obj.clone())?;
        Some(req.to_canonical()?)
    } else {
        None
    };
    let (started, served) = walk!(app, &plan, headers, |cand| attempt_chat(
        cand,
        &mut obj,
        canonical.as_ref()
    ));
    let model = answer_model(model_out, &served);
    let mut settle = Settle::new(app, (rid, who, "chat_completions"), model_out, served, admission);

    let (output, warnings) = match started {
        Started::Raw(raw) => return relay_raw(raw, &model, fallback_id, include_usage, settle),
        Started::Canonical(o, w) => (o, w),
    };
    if stream {
        let events = match output {
            ChatOutput::Stream(s) => s,
            ChatOutput::Full(r) => {
                futures::stream::iter(c::response_to_events(&r).into_iter().map(Ok)).boxed()
            }
        };
        let headers = routing_headers(&settle, &warnings);
        let mut resp = sse_response(encode_events(
            events,
            model.clone(),
            fallback_id,
            include_usage,
            settle,
        ));
        headers.apply(&mut resp);
        return Ok(resp);
    }
    let mut response = match output {
        ChatOutput::Full(r) => r,
        ChatOutput::Stream(s) => collect(s).await.inspect_err(|e| settle.failed(e))?,
    };
    settle.token();
    if response.id.is_empty() {
        response.id = fallback_id;
    }
    if let Some(u) = response.usage {
        settle.usage(u);
    }
    response.model.clone_from(&model);
    let mut wire = ChatCompletion::from_canonical(&response);
    if !warnings.is_empty() {
        wire.extra.insert("warnings".into(), json!(warnings));
    }
    let mut resp = json_with_metadata(&wire, &settle);
    routing_headers(&settle, &warnings).apply(&mut resp);
    Ok(resp)
}

/// The routing headers of an answer, to apply to its response.
pub(crate) fn routing_headers(settle: &Settle, warnings: &[String]) -> RoutingHeaders {
    RoutingHeaders::of(settle.served(), warnings).with_rate(settle.admission())
}

pub(crate) fn openai_error_frame(e: &Error) -> Bytes {
    let body = error_body(Dialect::OpenAi, e);
    sse::data_frame(body.to_string().as_bytes())
}

fn chunk_frame(chunk: &impl serde::Serialize) -> Option<Bytes> {
    match serde_json::to_vec(chunk) {
        Ok(b) => Some(sse::data_frame(&b)),
        Err(e) => {
            tracing::error!("could not encode a chunk: {e}");
            None
        }
    }
}

/// Answers from the same-dialect fast path: the upstream's JSON with the public model name, one id
/// throughout, and the usage chunk shown only to clients that asked for it; the routing headers and
/// `routing_metadata` added.
pub(crate) fn relay_raw(
    raw: Raw,
    model: &str,
    fallback_id: String,
    include_usage: bool,
    mut settle: Settle,
) -> Result<Response> {
    let headers = routing_headers(&settle, &[]);
    let mut resp = match raw {
        Raw::Full(mut v) => {
            if !v.get("choices").is_some_and(Value::is_array) {
                let e = Error::bad_gateway(format!("upstream {} answered without choices", settle.provider));
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
            json_with_metadata(&v, &settle)
        }
        Raw::Json(answer) => {
            let body = match rewrite_answer(&answer, model, &fallback_id, &mut settle) {
                Ok(b) => b,
                Err(e) => {
                    settle.failed(&e);
                    return Err(e);
                }
            };
            json_bytes_with_metadata(body, &settle)
        }
        Raw::Chunks(chunks) => sse_response(relay_chunks(chunks, model, fallback_id, include_usage, settle)),
        // Only the Anthropic provider streams values, and it never answers here.
        Raw::Stream(_) => return Err(Error::internal("a stream of values on the OpenAI relay")),
    };
    headers.apply(&mut resp);
    Ok(resp)
}

/// The upstream's answer with the public model name and one id, as bytes: its other members are
/// copied as they came (no tree of values is built), and its usage is read for the settlement.
fn rewrite_answer(
    answer: &ParsedObject,
    model: &str,
    fallback_id: &str,
    settle: &mut Settle,
) -> Result<Vec<u8>> {
    let obj = answer.view();
    if !obj.is_array("choices") {
        return Err(Error::bad_gateway(format!(
            "upstream {} answered without choices",
            settle.provider
        )));
    }
    settle.token();
    if let Some(u) = obj.get("usage").and_then(UsageCounts::parse) {
        settle.usage(u);
    }
    let keep_id = obj.get_str("id").is_some_and(|id| !id.is_empty());
    let model_json = serde_json::to_vec(model).map_err(|e| Error::internal(e.to_string()))?;
    let id_json = serde_json::to_vec(fallback_id).map_err(|e| Error::internal(e.to_string()))?;
    let set: &[(&str, &[u8])] = if keep_id {
        &[("model", &model_json)]
    } else {
        &[("model", &model_json), ("id", &id_json)]
    };
    let mut out = Vec::with_capacity(answer.text().len() + model.len() + 512);
    // An upstream's own `routing_metadata` (another gateway's) would make a duplicate key.
    let in_body = settle.in_body;
    obj.write_with(&mut out, set, |k| k == "routing_metadata" && in_body);
    Ok(out)
}

/// The last chunk of a stream: no choices, the routing metadata (and nothing else new).
fn metadata_chunk(id: &Value, model: &Value, created: &Value, settle: &Settle) -> Option<Bytes> {
    if !settle.in_body {
        return None;
    }
    chunk_frame(&json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "routing_metadata": settle.metadata_value(),
    }))
}

fn usage_of(v: &Value) -> Option<c::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    <UsageCounts as serde::Deserialize>::deserialize(u)
        .ok()
        .map(|u| u.to_canonical())
}

/// A chunk's choice, as far as the relay reads it (text or not, finished or not); the rest is skipped
/// unread.
#[derive(serde::Deserialize)]
struct ChoiceView<'a> {
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    #[serde(borrow, default)]
    text: Option<&'a RawValue>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<&'a RawValue>,
}

/// A JSON string with at least one character.
fn non_empty_str(v: Option<&RawValue>) -> bool {
    v.is_some_and(|v| v.get().starts_with('"') && v.get().len() > 2)
}

struct Relay {
    inner: BoxStream<'static, Result<String>>,
    /// The public model name, as a JSON string.
    model: Vec<u8>,
    /// The stream's one id (the first chunk's, else ours), as a JSON string.
    id: Option<Vec<u8>>,
    /// The first chunk's `created`, as it came.
    created: Option<String>,
    pending: std::collections::VecDeque<Bytes>,
    /// The tail of the stream (chunks with a finish reason, the usage chunk), held until the next chunk
    /// or the end, so `routing_metadata` can ride on the last chunk. Content is never held. Kept as its
    /// frame without the closing blank line.
    held: Option<Vec<u8>>,
    fallback_id: String,
    include_usage: bool,
    settle: Settle,
    done: bool,
}

impl Relay {
    /// One upstream chunk, relayed as bytes: `id` and `model` rewritten, the usage read (and dropped when
    /// the client did not ask for it), every other member copied as it came.
    fn chunk(&mut self, data: &str) -> Result<()> {
        let obj = RawObject::parse_str(data).map_err(|_| {
            Error::bad_gateway(format!(
                "upstream {} sent an event that is not a JSON object",
                self.settle.provider
            ))
        })?;
        let fallback_id = &self.fallback_id;
        let id = self.id.get_or_insert_with(|| {
            let id = obj.get_str("id").filter(|id| !id.is_empty());
            serde_json::to_vec(id.as_deref().unwrap_or(fallback_id)).unwrap_or_default()
        });
        if self.created.is_none() {
            self.created = obj.get("created").map(str::to_owned);
        }
        if let Some(u) = obj.get("usage").and_then(UsageCounts::parse) {
            self.settle.usage(u);
        }
        let choices: Option<Vec<ChoiceView>> = obj.get("choices").and_then(|c| serde_json::from_str(c).ok());
        let choices = choices.as_deref();
        if choices.is_some_and(|cs| {
            cs.iter()
                .any(|c| non_empty_str(c.delta.as_ref().and_then(|d| d.content)) || non_empty_str(c.text))
        }) {
            self.settle.stream_token();
        }
        if !self.include_usage && choices.is_some_and(<[_]>::is_empty) {
            // The usage chunk the gateway asked for on the client's behalf: read, not shown.
            return Ok(());
        }
        let in_body = self.settle.in_body;
        let tail = in_body
            && choices.is_some_and(|cs| cs.is_empty() || cs.iter().all(|c| c.finish_reason.is_some()));
        let mut frame = Vec::with_capacity(data.len() + self.model.len() + 16);
        frame.extend_from_slice(b"data: ");
        let include_usage = self.include_usage;
        obj.write_with(&mut frame, &[("id", id), ("model", &self.model)], |k| {
            // Usage nobody asked to see; an upstream's own `routing_metadata` (another gateway's) would
            // make a duplicate key.
            (k == "usage" && !include_usage) || (k == "routing_metadata" && in_body)
        });
        if let Some(h) = self.held.take() {
            self.pending.push_back(end_frame(h));
        }
        if tail {
            self.held = Some(frame);
        } else {
            self.pending.push_back(end_frame(frame));
        }
        Ok(())
    }

    /// The end of the upstream's stream: the held tail with `routing_metadata`, or a chunk of its own.
    fn finish(&mut self) {
        match self.held.take() {
            Some(mut last) => {
                append_metadata(&mut last, &self.settle);
                self.pending.push_back(end_frame(last));
            }
            None if self.include_usage => {
                let id = self
                    .id
                    .as_deref()
                    .and_then(|id| serde_json::from_slice(id).ok())
                    .unwrap_or_else(|| Value::String(self.fallback_id.clone()));
                let model = serde_json::from_slice(&self.model).unwrap_or(Value::Null);
                let created = self
                    .created
                    .as_deref()
                    .and_then(|c| serde_json::from_str(c).ok())
                    .unwrap_or(json!(0));
                self.pending
                    .extend(metadata_chunk(&id, &model, &created, &self.settle));
            }
            None => {}
        }
        self.pending.push_back(Bytes::from_static(sse::DONE_FRAME));
    }
}

/// A `data: ...` frame begun in `frame`, ended and frozen without a copy.
fn end_frame(mut frame: Vec<u8>) -> Bytes {
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// Relays the same-dialect upstream's chunks (each event's JSON as the upstream sent it). Ends with
/// `[DONE]`, or with an error event if the upstream breaks off.
fn relay_chunks(
    chunks: BoxStream<'static, Result<String>>,
    model: &str,
    fallback_id: String,
    include_usage: bool,
    settle: Settle,
) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    let st = Relay {
        inner: chunks,
        model: serde_json::to_vec(model).unwrap_or_default(),
        id: None,
        created: None,
        pending: Default::default(),
        held: None,
        fallback_id,
        include_usage,
        settle,
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
            let failed = match st.inner.next().await {
                None => {
                    st.done = true;
                    st.finish();
                    continue;
                }
                Some(Err(e)) => e,
                Some(Ok(data)) => match st.chunk(&data) {
                    Ok(()) => continue,
                    Err(e) => e,
                },
            };
            st.done = true;
            st.settle.failed(&failed);
            if let Some(h) = st.held.take() {
                st.pending.push_back(end_frame(h));
            }
            st.pending.push_back(openai_error_frame(&failed));
        }
    })
}

struct Encode {
    inner: EventStream,
    encoder: ChunkEncoder,
    fallback_id: String,
    id: Option<String>,
    created: u64,
    settle: Settle,
    pending: std::collections::VecDeque<Bytes>,
    /// Tail chunks (finish, usage) held for `routing_metadata`, as in the fast path.
    held: Vec<ChatCompletionChunk>,
    include_usage: bool,
    done: bool,
}

/// The canonical path's stream: canonical events rendered as OpenAI chunks.
pub(crate) fn encode_events(
    events: EventStream,
    model: String,
    fallback_id: String,
    include_usage: bool,
    settle: Settle,
) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    let st = Encode {
        inner: events,
        encoder: ChunkEncoder::new(model, include_usage),
        fallback_id,
        id: None,
        created: 0,
        settle,
        pending: Default::default(),
        held: Vec::new(),
        include_usage,
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
            match st.inner.next().await {
                None => {
                    st.done = true;
                    let mut held = std::mem::take(&mut st.held);
                    if let Some(last) = held.last_mut() {
                        last.extra
                            .insert("routing_metadata".into(), st.settle.metadata_value());
                    } else if st.include_usage {
                        let id = Value::String(st.id.clone().unwrap_or_else(|| st.fallback_id.clone()));
                        let model = Value::String(st.encoder.model().to_string());
                        st.pending
                            .extend(metadata_chunk(&id, &model, &json!(st.created), &st.settle));
                    }
                    st.pending.extend(held.iter().filter_map(chunk_frame));
                    st.pending.push_back(Bytes::from_static(sse::DONE_FRAME));
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.settle.failed(&e);
                    let held = std::mem::take(&mut st.held);
                    st.pending.extend(held.iter().filter_map(chunk_frame));
                    st.pending.push_back(openai_error_frame(&e));
                }
                Some(Ok(mut ev)) => {
                    match &mut ev {
                        StreamEvent::Start { id, created, .. } => {
                            if id.is_empty() {
                                id.clone_from(&st.fallback_id);
                            }
                            st.id = Some(id.clone());
                            st.created = *created;
                        }
                        StreamEvent::Usage { usage } => st.settle.usage(*usage),
                        StreamEvent::TextDelta { .. } => st.settle.stream_token(),
                        _ => {}
                    }
                    let tail = matches!(ev, StreamEvent::Finish { .. } | StreamEvent::Usage { .. });
                    let mut chunks = Vec::new();
                    st.encoder.encode(&ev, &mut chunks);
                    if tail && st.settle.in_body {
                        st.held.extend(chunks);
                    } else {
                        if !chunks.is_empty() {
                            let held = std::mem::take(&mut st.held);
                            st.pending.extend(held.iter().filter_map(chunk_frame));
                        }
                        st.pending.extend(chunks.iter().filter_map(chunk_frame));
                    }
                }
            }
        }
    })
}

fn model_object(entry: &ModelEntry) -> Value {
    let mut m = json!({
        "id": entry.public_name,
        "object": "model",
        "created": entry.created,
        "owned_by": entry.deployments.first().map_or("switchyard", |d| d.provider.name()),
        "type": entry.kind.as_str(),
        "tiers": entry.tiers().iter().map(|t| t.as_str()).collect::<Vec<_>>(),
        "deployments": entry.deployments.len(),
    });
    if let Some(ctx) = entry.context_length {
        m["context_length"] = json!(ctx);
    }
    // The price of the first deployment that has one, USD per 1M tokens.
    if let Some(p) = entry.deployments.iter().find_map(|d| d.price) {
        m["pricing"] = json!({"input": p.input, "output": p.output, "cached_input": p.cached_input, "unit": "USD per 1M tokens"});
    }
    if !entry.aliases.is_empty() {
        m["aliases"] = json!(entry.aliases);
    }
    m
}

/// `auto`, listed when there is a model it can route to.
fn auto_object(app: &App) -> Option<Value> {
    let created = app.catalog.iter().map(|e| e.created).min()?;
    let mut tiers: Vec<_> = app
        .catalog
        .iter()
        .filter(|e| e.auto && e.kind == crate::config::ModelType::Chat)
        .flat_map(|e| e.tiers())
        .collect();
    if tiers.is_empty() {
        return None;
    }
    tiers.sort();
    tiers.dedup();
    let order: Vec<&str> = app
        .catalog
        .routing
        .tier_order
        .iter()
        .filter(|t| tiers.contains(t))
        .map(|t| t.as_str())
        .collect();
    Some(json!({
        "id": crate::router::AUTO_MODEL,
        "object": "model",
        "created": created,
        "owned_by": "switchyard",
        "type": "chat",
        "tiers": order,
        "description": "Routes to the first tier (in this order) with a deployment that can serve the request.",
    }))
}

/// Whether the caller is an Anthropic client (its SDKs always send `anthropic-version`): `GET /v1/models`
/// then answers in Anthropic's list format, so either SDK works against the bare base URL.
fn anthropic_client(headers: &HeaderMap) -> bool {
    headers.contains_key("anthropic-version")
}

pub async fn list_models(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if anthropic_client(&headers) {
        return super::anthropic::list_models(State(app), query).await;
    }
    let mut data: Vec<Value> = app.catalog.iter().map(|e| model_object(e)).collect();
    data.extend(auto_object(&app));
    json_body(&json!({"object": "list", "data": data}))
}

pub async fn get_model(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if anthropic_client(&headers) {
        return super::anthropic::get_model(State(app), Path(id)).await;
    }
    if id == crate::router::AUTO_MODEL
        && let Some(auto) = auto_object(&app)
    {
        return labelled(json_body(&auto), &id);
    }
    match app.catalog.resolve(&id) {
        Ok(entry) => labelled(json_body(&model_object(entry)), &id),
        Err(e) => error_response(Dialect::OpenAi, &e),
    }
}
