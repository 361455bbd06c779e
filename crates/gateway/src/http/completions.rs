//! `/v1/completions` and `/v1/embeddings`: forwarded to OpenAI-compatible upstreams, served in-process
//! by local models.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use engine::EmbedInput;
use engine::llm::Prompt;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use http::HeaderMap;
use protocol::canonical::{self as c, StreamEvent};
use protocol::openai::completions::{self as wire_c, Inputs};
use protocol::sse;
use serde_json::{Map, Value, json};

use super::openai::{Settle, answer_model, openai_error_frame, relay_raw, routing_headers};
use super::response::{Dialect, sse_response};
use super::shared::{admit, answer, first_item, json_with_metadata, read_routed, walk};
use super::{App, RequestId};
use crate::auth::Principal;
use crate::config::ModelType;
use crate::error::{Error, Result};
use crate::providers::{LocalProvider, Provider, Raw};
use crate::router::plan::{self, Candidate, Needs};

pub async fn completions(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = complete(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

enum Started {
    Raw(Raw),
    Local(BoxStream<'static, Result<StreamEvent>>),
}

async fn attempt_completion(
    cand: &Candidate,
    obj: &mut Map<String, Value>,
    knobs: &Result<(c::ChatRequest, bool)>,
    prompts: &Inputs,
) -> Result<Started> {
    let dep = &cand.dep;
    match &dep.provider {
        Provider::OpenAi(p) => match p.forward("completions", obj, &dep.upstream_model).await? {
            Raw::Chunks(s) => Ok(Started::Raw(Raw::Chunks(first_item(s).await?))),
            full => Ok(Started::Raw(full)),
        },
        Provider::Local(p) => {
            let (req, echo) = knobs.clone()?;
            let events = local_completion_events(p, &req, echo, prompts.clone())?;
            Ok(Started::Local(first_item(events).await?))
        }
        Provider::Anthropic(_) => Err(Error::invalid_param(
            "model",
            format!(
                "The model `{}` is served by Anthropic, which has no legacy completions; use /v1/chat/completions or /v1/messages.",
                cand.entry.public_name
            ),
        )),
        Provider::Cli(_) | Provider::Gemini(_) | Provider::Bedrock(_) => Err(Error::invalid_param(
            "model",
            format!(
                "The model `{}` is served by {}, which has no legacy completions; use /v1/chat/completions or /v1/messages.",
                cand.entry.public_name,
                dep.provider.name()
            ),
        )),
    }
}

async fn complete(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (mut obj, route_req) = read_routed(app, who, headers, body, model_out).await?;
    let prompts = wire_c::completion_request(&obj)?;
    let plan = plan::build(
        &app.catalog,
        &route_req,
        || Needs::of_input(&obj, "prompt"),
        &[ModelType::Completion, ModelType::Chat],
    )?;
    let admission = admit(app, who, &plan, || Needs::of_input(&obj, "prompt")).await?;
    let include_usage = obj
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let stream = obj.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let fallback_id = format!("cmpl-{}", rid.0.trim_start_matches("req_"));
    let knobs = completion_knobs(&obj, model_out);
    let (started, served) = walk!(app, &plan, headers, |cand| attempt_completion(
        cand, &mut obj, &knobs, &prompts
    ));
    let model = answer_model(model_out, &served);
    let settle = Settle::new(app, (rid, who, "completions"), model_out, served, admission);
    match started {
        Started::Raw(raw) => relay_raw(raw, &model, fallback_id, include_usage, settle),
        Started::Local(events) => {
            let headers = routing_headers(&settle, &[]);
            let enc = CompletionEncoder::new(fallback_id, model, include_usage, settle);
            let mut resp = if stream {
                sse_response(enc.stream(events))
            } else {
                enc.collect(events).await?
            };
            headers.apply(&mut resp);
            Ok(resp)
        }
    }
}

fn f64_of(obj: &Map<String, Value>, k: &str) -> Option<f64> {
    obj.get(k).and_then(Value::as_f64)
}

/// The knobs of a completions body, as the canonical request the local provider takes.
fn completion_knobs(obj: &Map<String, Value>, model: &str) -> Result<(c::ChatRequest, bool)> {
    const KNOWN: &[&str] = &[
        "model",
        "prompt",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "n",
        "max_tokens",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "logit_bias",
        "seed",
        "user",
        "stream",
        "stream_options",
        "echo",
        "logprobs",
        "suffix",
        "best_of",
    ];
    if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Error::invalid_param(
            k.clone(),
            format!("Unsupported parameter for a local model: '{k}'."),
        ));
    }
    if obj
        .get("suffix")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
    {
        return Err(Error::invalid_param(
            "suffix",
            "Local models do not support 'suffix' (fill-in-the-middle).",
        ));
    }
    let n = obj.get("n").and_then(Value::as_u64).unwrap_or(1);
    if let Some(b) = obj.get("best_of").and_then(Value::as_u64)
        && b > 1
        && b != n
    {
        return Err(Error::invalid_param(
            "best_of",
            "Local models do not support 'best_of' other than 'n'.",
        ));
    }
    let stop = match obj.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_string).collect(),
        _ => Vec::new(),
    };
    let logprobs = obj.get("logprobs").and_then(Value::as_u64);
    let req = c::ChatRequest {
        model: model.to_string(),
        sampling: c::Sampling {
            temperature: f64_of(obj, "temperature"),
            top_p: f64_of(obj, "top_p"),
            top_k: obj
                .get("top_k")
                .and_then(Value::as_i64)
                .and_then(|k| u32::try_from(k).ok())
                .filter(|k| *k > 0),
            min_p: f64_of(obj, "min_p"),
            seed: obj.get("seed").and_then(Value::as_i64),
            presence_penalty: f64_of(obj, "presence_penalty"),
            frequency_penalty: f64_of(obj, "frequency_penalty"),
            repetition_penalty: f64_of(obj, "repetition_penalty"),
            logit_bias: obj.get("logit_bias").and_then(Value::as_object).cloned(),
        },
        // OpenAI's default for legacy completions.
        max_tokens: Some(
            obj.get("max_tokens")
                .and_then(Value::as_u64)
                .map_or(16, |m| m as u32),
        ),
        stop,
        n: Some(n as u32),
        logprobs: logprobs.map(|_| true),
        top_logprobs: logprobs.map(|k| k as u32),
        ..Default::default()
    };
    Ok((req, obj.get("echo").and_then(Value::as_bool).unwrap_or(false)))
}

/// The events of a completions request served by a local model: every prompt's `n` choices, merged.
fn local_completion_events(
    p: &LocalProvider,
    req: &c::ChatRequest,
    echo: bool,
    prompts: Inputs,
) -> Result<BoxStream<'static, Result<StreamEvent>>> {
    let n = req.n.unwrap_or(1);
    if req.max_tokens == Some(0) {
        return Err(Error::invalid_param(
            "max_tokens",
            "Local models need max_tokens of at least 1.",
        ));
    }
    let prompts: Vec<Prompt> = match prompts {
        Inputs::Texts(t) => t.into_iter().map(Prompt::Text).collect(),
        Inputs::Tokens(t) => t
            .into_iter()
            .map(|p| Prompt::Tokens(p.into_iter().map(|x| x as i32).collect()))
            .collect(),
    };
    let mut streams = Vec::with_capacity(prompts.len());
    for (i, prompt) in prompts.into_iter().enumerate() {
        let offset = i as u32 * n;
        let events = p.complete(prompt, echo, req)?;
        streams.push(events.map(move |ev| ev.map(|e| shift_choice(e, offset))).boxed());
    }
    Ok(futures::stream::select_all(streams).boxed())
}

fn shift_choice(ev: StreamEvent, offset: u32) -> StreamEvent {
    match ev {
        StreamEvent::TextDelta { choice, text } => StreamEvent::TextDelta {
            choice: choice + offset,
            text,
        },
        StreamEvent::Logprobs { choice, logprobs } => StreamEvent::Logprobs {
            choice: choice + offset,
            logprobs,
        },
        StreamEvent::Finish {
            choice,
            reason,
            stop_sequence,
        } => StreamEvent::Finish {
            choice: choice + offset,
            reason,
            stop_sequence,
        },
        other => other,
    }
}

/// Canonical events of one or more prompts → legacy `text_completion` objects.
struct CompletionEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    settle: Settle,
    usage: c::Usage,
    /// Logprobs waiting for the text they belong to, and each choice's text offset so far.
    logprobs: BTreeMap<u32, Value>,
    offsets: BTreeMap<u32, usize>,
}

impl CompletionEncoder {
    fn new(id: String, model: String, include_usage: bool, settle: Settle) -> CompletionEncoder {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        CompletionEncoder {
            id,
            model,
            created,
            include_usage,
            settle,
            usage: c::Usage::default(),
            logprobs: BTreeMap::new(),
            offsets: BTreeMap::new(),
        }
    }

    fn object(&self, choices: Vec<Value>) -> Value {
        json!({
            "id": self.id, "object": "text_completion", "created": self.created, "model": self.model,
            "choices": choices,
        })
    }

    fn usage_json(&self) -> Value {
        json!({
            "prompt_tokens": self.usage.input_tokens,
            "completion_tokens": self.usage.output_tokens,
            "total_tokens": self.usage.total(),
            "prompt_tokens_details": {"cached_tokens": self.usage.cache_read_tokens},
        })
    }

    /// Applies one event; returns the choice object it produces, if any.
    fn apply(&mut self, ev: StreamEvent) -> Option<Value> {
        match ev {
            StreamEvent::TextDelta { choice, text } => {
                self.settle.stream_token();
                let lp = self.logprobs.remove(&choice).unwrap_or(Value::Null);
                Some(json!({"text": text, "index": choice, "logprobs": lp, "finish_reason": null}))
            }
            StreamEvent::Logprobs { choice, logprobs } => {
                let offset = self.offsets.entry(choice).or_insert(0);
                self.logprobs
                    .insert(choice, wire_c::legacy_logprobs(&logprobs, offset));
                None
            }
            StreamEvent::Finish { choice, reason, .. } => Some(json!({
                "text": "", "index": choice, "logprobs": null, "finish_reason": reason.as_openai(),
            })),
            StreamEvent::Usage { usage } => {
                self.usage.input_tokens += usage.input_tokens;
                self.usage.output_tokens += usage.output_tokens;
                self.usage.cache_read_tokens += usage.cache_read_tokens;
                self.settle.usage(self.usage);
                None
            }
            _ => None,
        }
    }

    fn stream(
        self,
        events: BoxStream<'static, Result<StreamEvent>>,
    ) -> impl Stream<Item = std::result::Result<Bytes, Infallible>> + Send + 'static {
        let st = (self, events, VecDeque::<Bytes>::new(), false);
        futures::stream::unfold(st, |(mut enc, mut events, mut pending, mut done)| async move {
            loop {
                if let Some(b) = pending.pop_front() {
                    return Some((Ok(b), (enc, events, pending, done)));
                }
                if done {
                    return None;
                }
                match events.next().await {
                    Some(Ok(ev)) => {
                        if let Some(choice) = enc.apply(ev) {
                            let obj = enc.object(vec![choice]);
                            pending.push_back(sse::data_frame(obj.to_string().as_bytes()));
                        }
                    }
                    Some(Err(e)) => {
                        done = true;
                        enc.settle.failed(&e);
                        pending.push_back(openai_error_frame(&e));
                    }
                    None => {
                        done = true;
                        if enc.include_usage || enc.settle.in_body {
                            let mut obj = enc.object(Vec::new());
                            if enc.include_usage {
                                obj["usage"] = enc.usage_json();
                            }
                            if enc.settle.in_body {
                                obj["routing_metadata"] = enc.settle.metadata_value();
                            }
                            pending.push_back(sse::data_frame(obj.to_string().as_bytes()));
                        }
                        pending.push_back(Bytes::from_static(sse::DONE_FRAME));
                    }
                }
            }
        })
    }

    async fn collect(mut self, mut events: BoxStream<'static, Result<StreamEvent>>) -> Result<Response> {
        let mut choices: BTreeMap<u32, (String, Option<&'static str>, Vec<Value>)> = BTreeMap::new();
        while let Some(ev) = events.next().await {
            let ev = ev.inspect_err(|e| self.settle.failed(e))?;
            let Some(choice) = self.apply(ev) else { continue };
            let index = choice["index"].as_u64().unwrap_or(0) as u32;
            let slot = choices
                .entry(index)
                .or_insert_with(|| (String::new(), None, Vec::new()));
            if let Some(t) = choice["text"].as_str() {
                slot.0.push_str(t);
            }
            if let Some(f) = choice["finish_reason"].as_str() {
                slot.1 = Some(if f == "length" { "length" } else { "stop" });
            }
            if !choice["logprobs"].is_null() {
                slot.2.push(choice["logprobs"].clone());
            }
        }
        let out: Vec<Value> = choices
            .into_iter()
            .map(|(index, (text, finish, lps))| {
                json!({"text": text, "index": index, "logprobs": merge_legacy(&lps), "finish_reason": finish.unwrap_or("stop")})
            })
            .collect();
        let mut obj = self.object(out);
        obj["usage"] = self.usage_json();
        Ok(json_with_metadata(&obj, &self.settle))
    }
}

/// Joins legacy logprobs objects of consecutive deltas into one.
fn merge_legacy(parts: &[Value]) -> Value {
    if parts.is_empty() {
        return Value::Null;
    }
    let mut out = json!({"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []});
    for p in parts {
        for k in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            if let (Some(src), Some(dst)) = (p[k].as_array(), out[k].as_array_mut()) {
                dst.extend(src.iter().cloned());
            }
        }
    }
    out
}

pub async fn embeddings(
    State(app): State<Arc<App>>,
    Extension(rid): Extension<RequestId>,
    Extension(who): Extension<Principal>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let mut model = String::new();
    let result = embed(&app, &rid, &who, &headers, body, &mut model).await;
    answer(Dialect::OpenAi, &model, result)
}

enum Embedded {
    Upstream(Value),
    Local(Vec<Vec<f32>>, u64),
}

async fn attempt_embedding(
    cand: &Candidate,
    obj: &mut Map<String, Value>,
    req: &wire_c::EmbeddingsRequest,
) -> Result<Embedded> {
    let dep = &cand.dep;
    match &dep.provider {
        Provider::OpenAi(p) => {
            let raw = p
                .forward("embeddings", obj, &dep.upstream_model)
                .await?
                .parsed(dep.provider.name())?;
            let crate::providers::Raw::Full(v) = raw else {
                return Err(Error::bad_gateway("the upstream streamed an embeddings answer"));
            };
            if !v.get("data").is_some_and(Value::is_array) {
                return Err(Error::bad_gateway(format!(
                    "upstream {} answered without data",
                    dep.provider.name()
                )));
            }
            Ok(Embedded::Upstream(v))
        }
        Provider::Gemini(p) => {
            let Inputs::Texts(texts) = &req.input else {
                return Err(Error::invalid_param(
                    "input",
                    "Gemini embeds text; send strings, not token arrays.",
                ));
            };
            let vectors = p.embed(texts, &dep.upstream_model, req.dimensions).await?;
            // Gemini reports no token count for embeddings: the gateway's estimate stands in.
            let tokens = texts
                .iter()
                .map(|t| plan::estimate_tokens(&Value::String(t.clone())))
                .sum();
            Ok(Embedded::Local(vectors, tokens))
        }
        Provider::Anthropic(_) | Provider::Cli(_) | Provider::Bedrock(_) => Err(Error::invalid_param(
            "model",
            format!(
                "The model `{}` is served by {}, which has no embeddings.",
                cand.entry.public_name,
                dep.provider.name()
            ),
        )),
        Provider::Local(p) => {
            let inputs: Vec<EmbedInput> = match req.input.clone() {
                Inputs::Texts(t) => t.into_iter().map(EmbedInput::Text).collect(),
                Inputs::Tokens(t) => t.into_iter().map(EmbedInput::Tokens).collect(),
            };
            if let Some(d) = req.dimensions
                && Some(d as usize) != p.embedding_dimensions()
            {
                return Err(Error::invalid_param(
                    "dimensions",
                    format!(
                        "The model `{}` produces {}-dimensional embeddings and cannot shorten them; leave out 'dimensions'.",
                        cand.entry.public_name,
                        p.embedding_dimensions().unwrap_or(0)
                    ),
                ));
            }
            let (vectors, tokens) = p.embed(inputs).await?;
            Ok(Embedded::Local(vectors, tokens))
        }
    }
}

async fn embed(
    app: &App,
    rid: &RequestId,
    who: &Principal,
    headers: &HeaderMap,
    body: Body,
    model_out: &mut String,
) -> Result<Response> {
    let (mut obj, route_req) = read_routed(app, who, headers, body, model_out).await?;
    let req = wire_c::embeddings_request(&obj)?;
    let plan = plan::build(
        &app.catalog,
        &route_req,
        || Needs::of_input(&obj, "input"),
        &[ModelType::Embedding],
    )?;
    let admission = admit(app, who, &plan, || Needs::of_input(&obj, "input")).await?;
    let (out, served) = walk!(app, &plan, headers, |cand| attempt_embedding(
        cand, &mut obj, &req
    ));
    let model = answer_model(model_out, &served);
    let mut settle = Settle::new(app, (rid, who, "embeddings"), model_out, served, admission);
    settle.token();
    let headers = routing_headers(&settle, &[]);
    let body = match out {
        Embedded::Upstream(mut v) => {
            v["model"] = Value::String(model);
            if let Some(t) = v
                .get("usage")
                .and_then(|u| u.get("prompt_tokens"))
                .and_then(Value::as_u64)
            {
                settle.usage(c::Usage {
                    input_tokens: t,
                    ..Default::default()
                });
            }
            v
        }
        Embedded::Local(vectors, tokens) => {
            settle.usage(c::Usage {
                input_tokens: tokens,
                ..Default::default()
            });
            let data: Vec<Value> = vectors
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"object": "embedding", "index": i, "embedding": wire_c::embedding_value(v, req.base64)}))
                .collect();
            json!({
                "object": "list",
                "data": data,
                "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            })
        }
    };
    let mut resp = json_with_metadata(&body, &settle);
    headers.apply(&mut resp);
    Ok(resp)
}
