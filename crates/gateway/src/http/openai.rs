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
use protocol::openai::chat::{ChatCompletion, ChatCompletionRequest, ChunkEncoder, WireUsage};
use protocol::openai::{self as wire, validate};
use protocol::sse;
use serde_json::{Value, json};

use super::response::{Dialect, error_body, error_response, json_body, sse_response};
pub(crate) use super::shared::{Settle, chat_deployment, collect, labelled, served_by};
use super::shared::{answer, read_chat_request};
use super::{App, RequestId};
use crate::error::{Error, Result};
use crate::providers::{ChatOutput, EventStream, Provider, Raw};
use crate::router::ModelEntry;

pub async fn chat_completions(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = chat(&app, &rid, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

async fn chat(
    app: &App,
    rid: &RequestId,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (obj, entry) = read_chat_request(app, headers, body, validate::chat_request, model_out).await?;
    let model = model_out.clone();
    let dep = chat_deployment(&entry)?;
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut settle = Settle::new(&model, dep);
    let fallback_id = format!("chatcmpl-{}", rid.0.trim_start_matches("req_"));

    if let Provider::OpenAi(p) = &dep.provider {
        // Same dialect: forward with only the model name and stream options rewritten.
        let raw = p.forward("chat/completions", obj, &dep.upstream_model).await?;
        let mut resp = relay_raw(raw, &model, fallback_id, include_usage, settle)?;
        served_by(&mut resp, dep, &[]);
        return Ok(resp);
    }

    let req: ChatCompletionRequest = wire::from_object(obj)?;
    let canonical = req.to_canonical()?;
    let (output, warnings) = dep.provider.chat(&canonical, &dep.upstream_model).await?;
    let mut resp = if stream {
        let events = match output {
            ChatOutput::Stream(s) => s,
            ChatOutput::Full(r) => {
                futures::stream::iter(c::response_to_events(&r).into_iter().map(Ok)).boxed()
            }
        };
        sse_response(encode_events(
            events,
            model.clone(),
            fallback_id,
            include_usage,
            settle,
        ))
    } else {
        let mut response = match output {
            ChatOutput::Full(r) => r,
            ChatOutput::Stream(s) => collect(s).await?,
        };
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
        json_body(&wire)
    };
    served_by(&mut resp, dep, &warnings);
    Ok(resp)
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
/// throughout, and the usage chunk shown only to clients that asked for it.
pub(crate) fn relay_raw(
    raw: Raw,
    model: &str,
    fallback_id: String,
    include_usage: bool,
    mut settle: Settle,
) -> Result<Response> {
    match raw {
        Raw::Full(mut v) => {
            if !v.get("choices").is_some_and(Value::is_array) {
                return Err(Error::bad_gateway(format!(
                    "upstream {} answered without choices",
                    settle.provider
                )));
            }
            v["model"] = Value::String(model.to_string());
            if v.get("id").and_then(Value::as_str).is_none_or(str::is_empty) {
                v["id"] = Value::String(fallback_id);
            }
            if let Some(u) = usage_of(&v) {
                settle.usage(u);
            }
            Ok(json_body(&v))
        }
        Raw::Stream(chunks) => Ok(sse_response(relay_chunks(
            chunks,
            model.to_string(),
            fallback_id,
            include_usage,
            settle,
        ))),
    }
}

fn usage_of(v: &Value) -> Option<c::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    serde_json::from_value::<WireUsage>(u.clone())
        .ok()
        .map(|u| u.to_canonical())
}

fn has_text(chunk: &Value) -> bool {
    chunk.get("choices").and_then(Value::as_array).is_some_and(|cs| {
        cs.iter().any(|c| {
            let t = c
                .get("delta")
                .and_then(|d| d.get("content"))
                .or_else(|| c.get("text"));
            t.and_then(Value::as_str).is_some_and(|t| !t.is_empty())
        })
    })
}

struct Relay {
    inner: BoxStream<'static, Result<Value>>,
    model: Value,
    id: Option<Value>,
    fallback_id: String,
    include_usage: bool,
    settle: Settle,
    done: bool,
}

/// Ends with `[DONE]`, or with an error event if the upstream breaks off.
fn relay_chunks(
    chunks: BoxStream<'static, Result<Value>>,
    model: String,
    fallback_id: String,
    include_usage: bool,
    settle: Settle,
) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
    let st = Relay {
        inner: chunks,
        model: Value::String(model),
        id: None,
        fallback_id,
        include_usage,
        settle,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            match st.inner.next().await {
                None => {
                    st.done = true;
                    return Some((Ok(Bytes::from_static(sse::DONE_FRAME)), st));
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Ok(openai_error_frame(&e)), st));
                }
                Some(Ok(mut chunk)) => {
                    let Some(obj) = chunk.as_object_mut() else {
                        continue;
                    };
                    let id = st.id.get_or_insert_with(|| match obj.get("id") {
                        Some(Value::String(s)) if !s.is_empty() => Value::String(s.clone()),
                        _ => Value::String(st.fallback_id.clone()),
                    });
                    obj.insert("id".into(), id.clone());
                    obj.insert("model".into(), st.model.clone());
                    if let Some(u) = usage_of(&chunk) {
                        st.settle.usage(u);
                    }
                    if has_text(&chunk) {
                        st.settle.token();
                    }
                    if !st.include_usage
                        && let Some(obj) = chunk.as_object_mut()
                    {
                        obj.remove("usage");
                        if obj
                            .get("choices")
                            .and_then(Value::as_array)
                            .is_some_and(Vec::is_empty)
                        {
                            continue;
                        }
                    }
                    if let Some(frame) = chunk_frame(&chunk) {
                        return Some((Ok(frame), st));
                    }
                }
            }
        }
    })
}

struct Encode {
    inner: EventStream,
    encoder: ChunkEncoder,
    fallback_id: String,
    settle: Settle,
    pending: std::collections::VecDeque<Bytes>,
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
        settle,
        pending: Default::default(),
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
                    st.pending.push_back(Bytes::from_static(sse::DONE_FRAME));
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.push_back(openai_error_frame(&e));
                }
                Some(Ok(mut ev)) => {
                    match &mut ev {
                        StreamEvent::Start { id, .. } if id.is_empty() => id.clone_from(&st.fallback_id),
                        StreamEvent::Usage { usage } => st.settle.usage(*usage),
                        StreamEvent::TextDelta { .. } => st.settle.token(),
                        _ => {}
                    }
                    let mut chunks = Vec::new();
                    st.encoder.encode(&ev, &mut chunks);
                    st.pending.extend(chunks.iter().filter_map(chunk_frame));
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
    });
    if let Some(ctx) = entry.context_length {
        m["context_length"] = json!(ctx);
    }
    m
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
    let data: Vec<Value> = app.catalog.iter().map(|e| model_object(e)).collect();
    json_body(&json!({"object": "list", "data": data}))
}

pub async fn get_model(State(app): State<Arc<App>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if anthropic_client(&headers) {
        return super::anthropic::get_model(State(app), Path(id)).await;
    }
    match app.catalog.resolve(&id) {
        Ok(entry) => labelled(json_body(&model_object(entry)), &id),
        Err(e) => error_response(Dialect::OpenAi, &e),
    }
}
