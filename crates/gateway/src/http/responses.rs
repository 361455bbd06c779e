//! The Responses API: `POST /v1/responses` (JSON or SSE), stored responses (`GET` / `DELETE
//! /v1/responses/{id}`, `GET /v1/responses/{id}/input_items`), `previous_response_id`, and
//! `POST /v1/responses/input_tokens`. Every provider serves it through the canonical model.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use protocol::canonical::{self as c, FinishReason, StreamEvent};
use protocol::openai::responses::{self as wire, ResponsesRequest};
use serde_json::{Value, json};

use super::openai::routing_headers;
use super::response::{Dialect, json_body, sse_response};
use super::shared::RoutingHeaders;
use super::shared::{Settle, admit, answer, collect, first_item, json_with_metadata, read_routed, walk};
use super::{App, RequestId};
use crate::auth::Principal;
use crate::config::ModelType;
use crate::error::{Error, ErrorKind, Result};
use crate::providers::openai::NativeAnswer;
use crate::providers::{ChatOutput, EventStream, Provider};
use crate::router::plan::{self, Candidate, Needs};
use crate::router::strategy::Estimate;
use crate::store::{Store, now_secs};
use crate::stored::{self, StoredResponse};

fn owner(who: &Principal) -> String {
    match who {
        Principal::Key(k) => k.id.clone(),
        Principal::Master => "master".into(),
        Principal::Anonymous => "anonymous".into(),
    }
}

fn store(app: &App) -> Result<&Store> {
    app.usage
        .as_ref()
        .map(|u| u.store())
        .ok_or_else(|| Error::new(ErrorKind::Unavailable, "The response store is not open."))
}

/// What a conversation needs of a deployment.
fn needs(req: &ResponsesRequest, items: &[Value]) -> Needs {
    let images = items.iter().any(|i| {
        i["content"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| p["type"] == "input_image"))
    });
    let prompt = plan::estimate_tokens(&Value::Array(items.to_vec()))
        + req
            .instructions
            .as_ref()
            .map_or(0, |i| plan::estimate_tokens(&json!(i)))
        + plan::estimate_tokens(&Value::Array(req.tools.clone()));
    Needs {
        tools: !req.tools.is_empty() && req.tool_choice.as_ref().and_then(Value::as_str) != Some("none"),
        images,
        json_schema: req.text_format.as_ref().is_some_and(|f| f["type"] != "text"),
        estimate: Estimate {
            prompt_tokens: prompt,
            output_tokens: u64::from(req.max_output_tokens.unwrap_or(256)),
        },
    }
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = create_inner(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

async fn attempt(cand: &Candidate, req: &c::ChatRequest) -> Result<(ChatOutput, Vec<String>)> {
    let dep = &cand.dep;
    // Boxed, as in the chat handler: the largest provider's call would size every request's state.
    let (out, warnings) = Box::pin(dep.provider.chat(req, &dep.upstream_model)).await?;
    let out = match out {
        ChatOutput::Stream(s) => ChatOutput::Stream(first_item(s).await?),
        full => full,
    };
    Ok((out, warnings))
}

/// Responses made on one WebSocket connection, by id: their whole conversation, so that
/// `previous_response_id` works within the connection even with `store: false`.
pub(crate) type Local = Arc<parking_lot::Mutex<HashMap<String, Vec<Value>>>>;

/// What a create request turned into: a whole answer, or its stream of events.
enum Begun {
    Json(Response),
    Events(Box<RoutingHeaders>, BoxStream<'static, Value>),
}

async fn create_inner(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (obj, route) = read_routed(app, who, headers, body, model_out).await?;
    match begin(app, rid, who, headers, obj, route, model_out, None).await? {
        Begun::Json(r) => Ok(r),
        Begun::Events(h, events) => {
            let mut resp = sse_response(events.map(|v| Ok::<_, Infallible>(sse_frame(&v))));
            h.apply(&mut resp);
            Ok(resp)
        }
    }
}

/// One event as a server-sent event: `event: <type>` and its JSON.
fn sse_frame(v: &Value) -> Bytes {
    let mut frame = Vec::with_capacity(128);
    frame.extend_from_slice(b"event: ");
    frame.extend_from_slice(v["type"].as_str().unwrap_or("message").as_bytes());
    frame.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut frame, v).is_err() {
        return Bytes::new();
    }
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// The conversation a request continues: from this connection's responses, else the store.
async fn context_of(app: &App, who: &Principal, prev: &str, local: Option<&Local>) -> Result<Vec<Value>> {
    if let Some(items) = local.and_then(|l| l.lock().get(prev).cloned()) {
        return Ok(items);
    }
    stored::get(store(app)?, &owner(who), prev)
        .await
        .map(|p| p.context)
        .map_err(|mut e| {
            if e.kind == ErrorKind::NotFound {
                e.message = format!("Previous response with id '{prev}' not found.");
                e.param = Some("previous_response_id".into());
                e.code = Some("previous_response_not_found".into());
            }
            e
        })
}

#[allow(clippy::too_many_arguments)]
async fn begin(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    obj: serde_json::Map<String, Value>,
    route: plan::RouteRequest,
    model_out: &str,
    local: Option<&Local>,
) -> Result<Begun> {
    let mut req = wire::parse_request(&obj)?;
    if local.is_some() {
        // Over a WebSocket every answer streams.
        req.stream = true;
    }
    // A model whose every deployment takes the Responses API natively gets the request as it is. The
    // probe lives in this block only: a local alive past the awaits below sits in the future's state.
    let smallest_context = {
        let probe = plan::build(
            &app.catalog,
            &route,
            || needs(&req, &req.input_items),
            &[ModelType::Chat],
        )?;
        if !probe.candidates.is_empty()
            && probe
                .candidates
                .iter()
                .all(|c| matches!(&c.dep.provider, Provider::OpenAi(p) if p.native_responses))
        {
            // Boxed: its state would otherwise sit inline in every request's future, the
            // translated path's included: 7,504 -> 4,800 bytes (the size test in http/mod.rs).
            return Box::pin(native(app, rid, who, headers, obj, req, probe, model_out)).await;
        }
        context_limit(&probe)
    };
    wire::check_translatable(&req)?;
    let owner = owner(who);
    let mut items = Vec::new();
    if let Some(prev) = &req.previous_response_id {
        items = context_of(app, who, prev, local).await?;
    }
    items.extend(req.input_items.iter().cloned());
    if req.truncation.as_deref() == Some("auto") {
        truncate(&mut items, &req, smallest_context);
    }
    let canonical = wire::to_canonical(&req, &items)?;
    let plan = plan::build(&app.catalog, &route, || needs(&req, &items), &[ModelType::Chat])?;
    let admission = admit(app, who, &plan, || needs(&req, &items)).await?;
    let ((output, _warnings), served) = walk!(app, &plan, headers, |cand| attempt(cand, &canonical));
    let model = super::openai::answer_model(model_out, &served);
    let mut settle = Settle::new(app, (rid, who, "responses"), model_out, served, admission);
    let id = wire::response_id();
    let created_at = now_secs();
    let save = if req.store {
        Some((store(app)?.clone(), owner))
    } else {
        None
    };
    if req.stream {
        let events = match output {
            ChatOutput::Stream(s) => s,
            ChatOutput::Full(r) => {
                futures::stream::iter(c::response_to_events(&r).into_iter().map(Ok)).boxed()
            }
        };
        let headers = routing_headers(&settle, &[]);
        let events = encode(
            events,
            id,
            created_at,
            model,
            req,
            items,
            settle,
            save,
            local.cloned(),
        );
        return Ok(Begun::Events(Box::new(headers), events.boxed()));
    }
    let response = match output {
        ChatOutput::Full(r) => r,
        ChatOutput::Stream(s) => collect(s).await.inspect_err(|e| settle.failed(e))?,
    };
    settle.token();
    if let Some(u) = response.usage {
        settle.usage(u);
    }
    let finish = response.choices.first().and_then(|ch| ch.finish_reason);
    let out_items = wire::output_items(&response);
    let object = wire::response_object(
        &id,
        created_at,
        wire::status_of(finish),
        &model,
        &req,
        &out_items,
        response.usage.as_ref(),
        finish,
        None,
    );
    if let Some((store, owner)) = save {
        let mut context = items;
        context.extend(out_items.iter().cloned());
        stored::put(
            &store,
            &owner,
            &StoredResponse {
                id: id.clone(),
                response: object.clone(),
                input_items: req.input_items.clone(),
                context,
            },
            created_at as i64,
        )
        .await?;
    }
    let mut resp = json_with_metadata(&object, &settle);
    routing_headers(&settle, &[]).apply(&mut resp);
    Ok(Begun::Json(resp))
}

/// `truncation: "auto"`: the oldest items go until the conversation fits the smallest context among
/// the model's deployments (with room for the output). Whole turns go: the conversation always
/// starts at a message, so a tool call never loses its output or the other way round.
fn truncate(items: &mut Vec<Value>, req: &ResponsesRequest, context_limit: Option<u32>) {
    let Some(ctx) = context_limit else {
        return;
    };
    let budget = u64::from(ctx).saturating_sub(u64::from(req.max_output_tokens.unwrap_or(256)));
    while items.len() > 1 && needs(req, items).estimate.prompt_tokens > budget {
        items.remove(0);
        while items.len() > 1 && items[0]["type"] != "message" {
            items.remove(0);
        }
    }
}

/// The smallest context among a plan's deployments, where any says.
fn context_limit(plan: &plan::Plan) -> Option<u32> {
    plan.candidates
        .iter()
        .filter_map(|c| c.dep.context_length.or(c.entry.context_length))
        .min()
}

/// What a native answer reports of its usage.
fn native_usage(v: &Value) -> Option<c::Usage> {
    let u = v.get("usage").filter(|u| u.is_object())?;
    let n = |k: &str| u.get(k).and_then(Value::as_u64).unwrap_or(0);
    Some(c::Usage {
        input_tokens: n("input_tokens"),
        output_tokens: n("output_tokens"),
        cache_read_tokens: u["input_tokens_details"]["cached_tokens"].as_u64().unwrap_or(0),
        reasoning_tokens: u["output_tokens_details"]["reasoning_tokens"]
            .as_u64()
            .unwrap_or(0),
        ..c::Usage::default()
    })
}

/// The native path: the body goes to the upstream's `/responses` as it is, and its answer (JSON, or
/// each event) comes back with the public model name. The upstream keeps the conversation state.
#[allow(clippy::too_many_arguments)]
async fn native(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    mut obj: serde_json::Map<String, Value>,
    req: ResponsesRequest,
    plan: plan::Plan,
    model_out: &str,
) -> Result<Begun> {
    if req.stream {
        obj.insert("stream".into(), json!(true));
    }
    let admission = admit(app, who, &plan, || needs(&req, &req.input_items)).await?;
    let (answer, served) = walk!(app, &plan, headers, |cand| async {
        let Provider::OpenAi(p) = &cand.dep.provider else {
            return Err(Error::internal("not a native Responses upstream"));
        };
        match p.forward_responses(&obj, &cand.dep.upstream_model).await? {
            NativeAnswer::Stream(s) => Ok(NativeAnswer::Stream(first_item(s).await?)),
            full => Ok(full),
        }
    });
    let model = super::openai::answer_model(model_out, &served);
    let mut settle = Settle::new(app, (rid, who, "responses"), model_out, served, admission);
    match answer {
        NativeAnswer::Full(mut v) => {
            settle.token();
            if let Some(u) = native_usage(&v) {
                settle.usage(u);
            }
            v["model"] = json!(model);
            let mut resp = json_with_metadata(&v, &settle);
            routing_headers(&settle, &[]).apply(&mut resp);
            Ok(Begun::Json(resp))
        }
        NativeAnswer::Stream(events) => {
            let headers = routing_headers(&settle, &[]);
            let events = events
                .scan(settle, move |settle, ev| {
                    let out = match ev {
                        Ok(ev) => match serde_json::from_str::<Value>(ev.data.trim()) {
                            Ok(mut v) => {
                                if v["type"] == "response.output_text.delta" {
                                    settle.stream_token();
                                }
                                if let Some(r) = v.get_mut("response").filter(|r| r.is_object()) {
                                    if let Some(u) = native_usage(r) {
                                        settle.usage(u);
                                    }
                                    r["model"] = json!(model);
                                }
                                Some(v)
                            }
                            Err(_) => None,
                        },
                        Err(e) => {
                            settle.failed(&e);
                            Some(error_frame(&e))
                        }
                    };
                    std::future::ready(Some(out))
                })
                .filter_map(std::future::ready)
                .boxed();
            Ok(Begun::Events(Box::new(headers), events))
        }
    }
}

/// An open output item of a stream.
struct Open {
    index: usize,
    id: String,
    text: String,
}

struct Call {
    index: usize,
    id: String,
    call_id: String,
    name: String,
    args: String,
}

/// The stream of Responses events for a canonical event stream.
struct Enc {
    inner: EventStream,
    settle: Settle,
    seq: u64,
    id: String,
    created_at: u64,
    model: String,
    req: ResponsesRequest,
    items: Vec<Value>,
    save: Option<(Store, String)>,
    local: Option<Local>,
    added: usize,
    output: Vec<Option<Value>>,
    msg: Option<Open>,
    reasoning: Option<Open>,
    calls: HashMap<u32, Call>,
    finish: Option<FinishReason>,
    usage: Option<c::Usage>,
    pending: VecDeque<Value>,
    started: bool,
    done: bool,
}

#[allow(clippy::too_many_arguments)]
fn encode(
    events: EventStream,
    id: String,
    created_at: u64,
    model: String,
    req: ResponsesRequest,
    items: Vec<Value>,
    settle: Settle,
    save: Option<(Store, String)>,
    local: Option<Local>,
) -> impl Stream<Item = Value> + Send + 'static {
    let st = Enc {
        inner: events,
        settle,
        seq: 0,
        id,
        created_at,
        model,
        req,
        items,
        save,
        local,
        added: 0,
        output: Vec::new(),
        msg: None,
        reasoning: None,
        calls: HashMap::new(),
        finish: None,
        usage: None,
        pending: VecDeque::new(),
        started: false,
        done: false,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(f) = st.pending.pop_front() {
                return Some((f, st));
            }
            if st.done {
                return None;
            }
            if !st.started {
                st.started = true;
                let r = st.object("in_progress", &[], None);
                st.emit("response.created", json!({"response": r}));
                st.emit("response.in_progress", json!({"response": r}));
                continue;
            }
            match st.inner.next().await {
                Some(Ok(ev)) => st.event(ev),
                Some(Err(e)) => {
                    st.done = true;
                    st.settle.failed(&e);
                    st.close_all();
                    st.emit(
                        "error",
                        json!({"code": e.code.clone().unwrap_or_else(|| "server_error".into()), "message": e.message, "param": e.param}),
                    );
                    let output = st.finished_output();
                    let err = json!({"code": "server_error", "message": e.message});
                    let r = st.object("failed", &output, Some(err));
                    st.emit("response.failed", json!({"response": r}));
                }
                None => {
                    st.done = true;
                    st.close_all();
                    let output = st.finished_output();
                    let status = wire::status_of(st.finish);
                    let r = st.object(status, &output, None);
                    let mut context = std::mem::take(&mut st.items);
                    context.extend(output.iter().cloned());
                    if let Some(l) = &st.local {
                        l.lock().insert(st.id.clone(), context.clone());
                    }
                    if let Some((store, owner)) = st.save.take() {
                        let rec = StoredResponse {
                            id: st.id.clone(),
                            response: r.clone(),
                            input_items: st.req.input_items.clone(),
                            context,
                        };
                        let put = stored::put(&store, &owner, &rec, st.created_at as i64);
                        match tokio::time::timeout(std::time::Duration::from_secs(3), put).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::warn!("could not store response {}: {e}", st.id),
                            Err(_) => tracing::warn!("could not store response {}: timeout", st.id),
                        }
                    }
                    let ty = if status == "incomplete" {
                        "response.incomplete"
                    } else {
                        "response.completed"
                    };
                    st.emit(ty, json!({"response": r}));
                }
            }
        }
    })
}

impl Enc {
    fn emit(&mut self, ty: &str, mut data: Value) {
        data["type"] = json!(ty);
        data["sequence_number"] = json!(self.seq);
        self.seq += 1;
        self.pending.push_back(data);
    }

    fn object(&self, status: &str, output: &[Value], error: Option<Value>) -> Value {
        let usage = if status == "in_progress" {
            None
        } else {
            self.usage.as_ref()
        };
        wire::response_object(
            &self.id,
            self.created_at,
            status,
            &self.model,
            &self.req,
            output,
            usage,
            self.finish,
            error,
        )
    }

    fn finished_output(&self) -> Vec<Value> {
        self.output.iter().flatten().cloned().collect()
    }

    fn slot(&mut self) -> usize {
        let i = self.added;
        self.added += 1;
        self.output.push(None);
        i
    }

    fn event(&mut self, ev: StreamEvent) {
        match ev {
            StreamEvent::TextDelta { choice: 0, text } => {
                self.settle.stream_token();
                self.close_reasoning();
                if self.msg.is_none() {
                    let index = self.slot();
                    let id = format!("msg_{:032x}", rand::random::<u128>());
                    let mut item = wire::message_item(&id, "", "in_progress");
                    item["content"] = json!([]);
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": index, "item": item}),
                    );
                    self.emit(
                        "response.content_part.added",
                        json!({"item_id": id, "output_index": index, "content_index": 0,
                            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
                    );
                    self.msg = Some(Open {
                        index,
                        id,
                        text: String::new(),
                    });
                }
                if let Some(m) = &mut self.msg {
                    m.text.push_str(&text);
                    let (id, index) = (m.id.clone(), m.index);
                    self.emit(
                        "response.output_text.delta",
                        json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
                    );
                }
            }
            StreamEvent::ReasoningDelta { choice: 0, text } => {
                if self.reasoning.is_none() {
                    let index = self.slot();
                    let id = format!("rs_{:032x}", rand::random::<u128>());
                    self.emit(
                        "response.output_item.added",
                        json!({"output_index": index, "item": {"type": "reasoning", "id": id, "summary": []}}),
                    );
                    self.emit(
                        "response.reasoning_summary_part.added",
                        json!({"item_id": id, "output_index": index, "summary_index": 0,
                            "part": {"type": "summary_text", "text": ""}}),
                    );
                    self.reasoning = Some(Open {
                        index,
                        id,
                        text: String::new(),
                    });
                }
                if let Some(r) = &mut self.reasoning {
                    r.text.push_str(&text);
                    let (id, index) = (r.id.clone(), r.index);
                    self.emit(
                        "response.reasoning_summary_text.delta",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
                    );
                }
            }
            StreamEvent::ToolCallStart {
                choice: 0,
                index: call,
                id: call_id,
                name,
            } => {
                self.close_reasoning();
                self.close_message();
                let index = self.slot();
                let id = format!("fc_{:032x}", rand::random::<u128>());
                self.emit(
                    "response.output_item.added",
                    json!({"output_index": index, "item": {"type": "function_call", "id": id,
                        "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"}}),
                );
                self.calls.insert(
                    call,
                    Call {
                        index,
                        id,
                        call_id,
                        name,
                        args: String::new(),
                    },
                );
            }
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: call,
                arguments,
            } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.args.push_str(&arguments);
                    let (id, index) = (c.id.clone(), c.index);
                    self.emit(
                        "response.function_call_arguments.delta",
                        json!({"item_id": id, "output_index": index, "delta": arguments}),
                    );
                }
            }
            StreamEvent::Finish {
                choice: 0, reason, ..
            } => {
                self.finish = Some(reason);
                self.close_all();
            }
            StreamEvent::Usage { usage } => {
                self.settle.usage(usage);
                self.usage = Some(usage);
            }
            _ => {}
        }
    }

    fn close_message(&mut self) {
        let Some(m) = self.msg.take() else { return };
        let part = json!({"type": "output_text", "text": m.text, "annotations": [], "logprobs": []});
        self.emit(
            "response.output_text.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "text": m.text, "logprobs": []}),
        );
        self.emit(
            "response.content_part.done",
            json!({"item_id": m.id, "output_index": m.index, "content_index": 0, "part": part}),
        );
        let item = wire::message_item(&m.id, &m.text, "completed");
        self.emit(
            "response.output_item.done",
            json!({"output_index": m.index, "item": item}),
        );
        self.output[m.index] = Some(item);
    }

    fn close_reasoning(&mut self) {
        let Some(r) = self.reasoning.take() else { return };
        self.emit(
            "response.reasoning_summary_text.done",
            json!({"item_id": r.id, "output_index": r.index, "summary_index": 0, "text": r.text}),
        );
        self.emit(
            "response.reasoning_summary_part.done",
            json!({"item_id": r.id, "output_index": r.index, "summary_index": 0,
                "part": {"type": "summary_text", "text": r.text}}),
        );
        let item =
            json!({"type": "reasoning", "id": r.id, "summary": [{"type": "summary_text", "text": r.text}]});
        self.emit(
            "response.output_item.done",
            json!({"output_index": r.index, "item": item}),
        );
        self.output[r.index] = Some(item);
    }

    fn close_all(&mut self) {
        self.close_reasoning();
        self.close_message();
        let mut calls: Vec<Call> = self.calls.drain().map(|(_, c)| c).collect();
        calls.sort_by_key(|c| c.index);
        for c in calls {
            self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": c.id, "output_index": c.index, "arguments": c.args}),
            );
            let item = json!({"type": "function_call", "id": c.id, "call_id": c.call_id, "name": c.name,
                "arguments": c.args, "status": "completed"});
            self.emit(
                "response.output_item.done",
                json!({"output_index": c.index, "item": item}),
            );
            self.output[c.index] = Some(item);
        }
    }
}

pub async fn retrieve(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    answer(
        Dialect::OpenAi,
        "",
        async {
            Ok(json_body(
                &stored::get(store(&app)?, &owner(&who), &id).await?.response,
            ))
        }
        .await,
    )
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    answer(
        Dialect::OpenAi,
        "",
        async {
            stored::delete(store(&app)?, &owner(&who), &id).await?;
            Ok(json_body(
                &json!({"id": id, "object": "response", "deleted": true}),
            ))
        }
        .await,
    )
}

pub async fn input_items(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    answer(
        Dialect::OpenAi,
        "",
        async {
            let r = stored::get(store(&app)?, &owner(&who), &id).await?;
            // Newest first, as the API lists them by default.
            let data: Vec<Value> = r.input_items.into_iter().rev().collect();
            Ok(json_body(&json!({
                "object": "list",
                "data": data,
                "first_id": data.first().and_then(|i| i.get("id")).cloned(),
                "last_id": data.last().and_then(|i| i.get("id")).cloned(),
                "has_more": false,
            })))
        }
        .await,
    )
}

/// `POST /v1/responses/input_tokens`: the request's input, counted (an estimate for remote models).
pub async fn input_tokens(
    State(app): State<Arc<App>>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = async {
        let (obj, _) = read_routed(&app, &who, &headers, body, &mut model).await?;
        let req = wire::parse_request(&obj)?;
        let mut items = Vec::new();
        if let Some(prev) = &req.previous_response_id {
            items = stored::get(store(&app)?, &owner(&who), prev).await?.context;
        }
        items.extend(req.input_items.iter().cloned());
        let n = needs(&req, &items).estimate.prompt_tokens;
        Ok(json_body(
            &json!({"object": "response.input_tokens", "input_tokens": n}),
        ))
    }
    .await;
    answer(Dialect::OpenAi, &model, result)
}

/// `GET /v1/responses` with `Upgrade: websocket`: the Responses WebSocket. The client sends
/// `{"type": "response.create", ...}` frames (the fields of `POST /v1/responses`); every event of the
/// answer comes back as one JSON text frame. Turns run one after another on a connection, and
/// `previous_response_id` reaches the responses made on it even with `store: false`. A bad frame gets
/// an `error` frame and the connection stays open.
pub async fn websocket(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    ws: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => ws.on_upgrade(move |socket| serve_ws(app, rid, who, headers, socket)),
        Err(_) => super::response::error_response(
            Dialect::OpenAi,
            &Error::invalid(
                "GET /v1/responses is the Responses WebSocket: connect with `Upgrade: websocket` (POST /v1/responses creates a response over HTTP).",
            ),
        ),
    }
}

fn error_frame(e: &Error) -> Value {
    json!({
        "type": "error",
        "sequence_number": 0,
        "code": e.code,
        "message": e.message,
        "param": e.param,
        "status": e.status().as_u16(),
        "error": {"type": e.openai_type(), "code": e.code, "message": e.message, "param": e.param},
    })
}

async fn serve_ws(app: Arc<App>, rid: RequestId, who: Principal, headers: HeaderMap, mut socket: WebSocket) {
    let local: Local = Arc::default();
    while let Some(msg) = socket.recv().await {
        let text = match msg {
            Ok(Message::Text(t)) => t.to_string(),
            Ok(Message::Binary(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let frames = turn(&app, &rid, &who, &headers, &text, &local).await;
        let mut events = match frames {
            Ok(events) => events,
            Err(e) => {
                if send(&mut socket, &error_frame(&e)).await.is_err() {
                    return;
                }
                continue;
            }
        };
        while let Some(ev) = events.next().await {
            if send(&mut socket, &ev).await.is_err() {
                return;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, v: &Value) -> std::result::Result<(), axum::Error> {
    socket.send(Message::Text(v.to_string().into())).await
}

/// One `response.create` frame: the events of its answer (each with the frame's `stream_id`).
async fn turn(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    text: &str,
    local: &Local,
) -> Result<BoxStream<'static, Value>> {
    let mut obj = protocol::openai::parse_object(text.as_bytes())?;
    match obj.get("type").and_then(Value::as_str) {
        Some("response.create") => {}
        Some(other) => {
            return Err(Error::invalid_param(
                "type",
                format!("Unsupported client event type '{other}'; send 'response.create'."),
            )
            .with_code("unknown_event_type"));
        }
        None => {
            return Err(Error::invalid_param(
                "type",
                "Each frame needs a 'type' ('response.create').",
            ));
        }
    }
    obj.remove("type");
    obj.remove("stream");
    let stream_id = obj.remove("stream_id");
    if obj.remove("background").and_then(|b| b.as_bool()) == Some(true) {
        return Err(Error::invalid_param(
            "background",
            "background is not supported over the WebSocket.",
        ));
    }
    let route = plan::RouteRequest::take(&mut obj)?;
    super::shared::check_scope(who, &route)?;
    let model = route.models.first().map(|(m, _)| m.clone()).unwrap_or_default();
    match begin(app, rid, who, headers, obj, route, &model, Some(local)).await? {
        Begun::Events(_, events) => Ok(match stream_id {
            Some(sid) => events
                .map(move |mut ev| {
                    ev["stream_id"] = sid.clone();
                    ev
                })
                .boxed(),
            None => events,
        }),
        Begun::Json(_) => Err(Error::internal("a WebSocket turn did not stream")),
    }
}

const COMPACT_PROMPT: &str = "You compact conversations. Summarise the conversation you are given so that the summary can replace it as the context of the next turns: keep every fact, name, number, decision, open question and tool result that may matter later, and the user's goals and preferences. Write plain prose, no preamble.";

/// `POST /v1/responses/compact`: the conversation (`input`, after `previous_response_id`) summarised
/// by the requested model into one compaction item, which a later request sends back in place of the
/// history. The answer lists the user's messages, then that item.
pub async fn compact(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = compact_inner(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

async fn compact_inner(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (mut obj, route) = read_routed(app, who, headers, body, model_out).await?;
    // Hints that change nothing here.
    for k in [
        "prompt_cache_options",
        "prompt_cache_retention",
        "image",
        "service_tier",
        "prompt_cache_key",
    ] {
        obj.remove(k);
    }
    let req = wire::parse_request(&obj)?;
    wire::check_translatable(&req)?;
    let mut items = Vec::new();
    if let Some(prev) = &req.previous_response_id {
        items = context_of(app, who, prev, None).await?;
    }
    items.extend(req.input_items.iter().cloned());
    let conversation = wire::to_canonical(&req, &items)?;
    let summarise = c::ChatRequest {
        model: req.model.clone(),
        messages: vec![
            c::Message::new(c::Role::System, vec![c::Part::text(COMPACT_PROMPT)]),
            c::Message::new(
                c::Role::User,
                vec![c::Part::text(wire::transcript(&conversation))],
            ),
        ],
        max_tokens: req.max_output_tokens,
        ..c::ChatRequest::default()
    };
    let plan = plan::build(&app.catalog, &route, || needs(&req, &items), &[ModelType::Chat])?;
    let admission = admit(app, who, &plan, || needs(&req, &items)).await?;
    let ((output, _), served) = walk!(app, &plan, headers, |cand| attempt(cand, &summarise));
    let mut settle = Settle::new(app, (rid, who, "responses"), model_out, served, admission);
    let response = match output {
        ChatOutput::Full(r) => r,
        ChatOutput::Stream(s) => collect(s).await.inspect_err(|e| settle.failed(e))?,
    };
    settle.token();
    if let Some(u) = response.usage {
        settle.usage(u);
    }
    let summary: String = response
        .choices
        .first()
        .map(|ch| {
            ch.content
                .iter()
                .filter_map(|p| match p {
                    c::Part::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if summary.trim().is_empty() {
        return Err(Error::bad_gateway("the model returned an empty summary"));
    }
    let mut out: Vec<Value> = items
        .into_iter()
        .filter(|i| i["type"] == "message" && i["role"] == "user")
        .collect();
    out.push(json!({
        "type": "compaction",
        "id": format!("cmp_{:032x}", rand::random::<u128>()),
        "encrypted_content": wire::encode_compaction(summary.trim()),
        "created_by": "switchyard",
    }));
    let body = json!({
        "id": wire::response_id(),
        "object": "response.compaction",
        "created_at": now_secs(),
        "output": out,
        "usage": wire::usage_value(response.usage.as_ref()),
    });
    let mut resp = json_with_metadata(&body, &settle);
    routing_headers(&settle, &[]).apply(&mut resp);
    Ok(resp)
}
