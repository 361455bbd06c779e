//! OpenAI-dialect handlers: chat completions, legacy completions, embeddings, models.

use axum::body::Bytes;
use axum::extract::OriginalUri;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::Engine as _;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::common::{
    Dialect, Frame, Plan, PlanInput, error_body, error_response, json_response, now_secs, pieces, prelude,
    split_n, sse_response, words,
};
use crate::opts::Opts;
use crate::state::MockState;

const GARBAGE: &str = "data: this is not json\n\n";

fn sse(v: &Value) -> String {
    format!("data: {v}\n\n")
}

fn stream_error_frame() -> String {
    sse(&error_body(Dialect::OpenAi, 500, "mock: injected stream error"))
}

/// Text of an OpenAI `content` (string or array of parts).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| match p {
                Value::String(s) => Some(s.as_str()),
                _ => p.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn include_usage(body: &Value) -> bool {
    body.pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn is_stream(body: &Value) -> bool {
    body.get("stream").and_then(Value::as_bool).unwrap_or(false)
}

fn usage_json(plan: &Plan) -> Value {
    json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": plan.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": plan.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

fn missing_model() -> Response {
    error_response(Dialect::OpenAi, 400, "you must provide a model parameter", None)
}

// ---------------------------------------------------------------- chat completions

pub async fn chat_completions(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/chat/completions", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::OpenAi, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = &ctx.body;
    let Some(model) = body.get("model").and_then(Value::as_str).map(String::from) else {
        return missing_model();
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return error_response(
            Dialect::OpenAi,
            400,
            "Missing required parameter: 'messages'.",
            None,
        );
    };
    let prompt_tokens = messages
        .iter()
        .map(|m| words(&content_text(m.get("content").unwrap_or(&Value::Null))))
        .sum();
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)))
        .unwrap_or_default();
    let tool_names = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    t.pointer("/function/name")
                        .or_else(|| t.get("name"))
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    let plan = Plan::build(
        &st,
        PlanInput {
            opts: &ctx.opts,
            body,
            last_user_text,
            prompt_tokens,
            tool_names,
            supports_tools: true,
        },
    );
    let id = format!("chatcmpl-mock{}", plan.seq);
    let created = now_secs();
    if is_stream(body) {
        let frames = chat_stream_frames(&plan, &ctx.opts, &id, created, &model, include_usage(body));
        sse_response(
            &st,
            Dialect::OpenAi,
            &ctx.opts,
            plan.seq,
            frames,
            stream_error_frame(),
            GARBAGE,
        )
    } else {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(plan.text));
        if let Some(r) = &plan.reasoning {
            message.insert("reasoning_content".into(), json!(r));
        }
        if !plan.tools.is_empty() {
            let calls: Vec<Value> = plan
                .tools
                .iter()
                .enumerate()
                .map(|(k, t)| {
                    json!({"id": tool_id(plan.seq, k), "type": "function",
                           "function": {"name": t.name, "arguments": t.arguments}})
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        message.insert("refusal".into(), Value::Null);
        message.insert("annotations".into(), json!([]));
        let resp = json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": message,
                "logprobs": null,
                "finish_reason": plan.finish.openai(),
            }],
            "usage": usage_json(&plan),
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        });
        json_response(
            &st,
            Dialect::OpenAi,
            &ctx.opts,
            plan.seq,
            resp.to_string().into_bytes(),
        )
    }
}

fn tool_id(seq: u64, k: usize) -> String {
    format!("call_mock{seq}_{k}")
}

fn chat_stream_frames(
    plan: &Plan,
    opts: &Opts,
    id: &str,
    created: u64,
    model: &str,
    with_usage: bool,
) -> Vec<Frame> {
    let chunk = |delta: Value, finish: Option<&str>| -> String {
        let mut v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        if with_usage && let Some(obj) = v.as_object_mut() {
            obj.insert("usage".into(), Value::Null);
        }
        sse(&v)
    };
    let mut frames = Vec::new();
    let first_content = if plan.text.is_some() || plan.reasoning.is_some() {
        json!("")
    } else {
        Value::Null
    };
    frames.push(Frame::meta(chunk(
        json!({"role": "assistant", "content": first_content, "refusal": null}),
        None,
    )));
    if let Some(r) = &plan.reasoning {
        for p in pieces(r) {
            frames.push(Frame::content(chunk(json!({"reasoning_content": p}), None)));
        }
    }
    if let Some(t) = &plan.text {
        for p in pieces(t) {
            frames.push(Frame::content(chunk(json!({"content": p}), None)));
        }
    }
    let per_call: Vec<Vec<String>> = plan
        .tools
        .iter()
        .enumerate()
        .map(|(k, t)| {
            let mut seq = vec![chunk(
                json!({"tool_calls": [{"index": k, "id": tool_id(plan.seq, k), "type": "function",
                                       "function": {"name": t.name, "arguments": ""}}]}),
                None,
            )];
            for piece in split_n(&t.arguments, 4) {
                seq.push(chunk(
                    json!({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}),
                    None,
                ));
            }
            seq
        })
        .collect();
    if opts.flag("interleave") {
        let longest = per_call.iter().map(Vec::len).max().unwrap_or(0);
        for i in 0..longest {
            for call in &per_call {
                if let Some(c) = call.get(i) {
                    frames.push(Frame::content(c.clone()));
                }
            }
        }
    } else {
        frames.extend(per_call.into_iter().flatten().map(Frame::content));
    }
    frames.push(Frame::meta(chunk(json!({}), Some(plan.finish.openai()))));
    if with_usage {
        let v = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
            "choices": [],
            "usage": usage_json(plan),
        });
        frames.push(Frame::meta(sse(&v)));
    }
    frames.push(Frame::meta("data: [DONE]\n\n".to_string()));
    frames
}

// ---------------------------------------------------------------- legacy completions

pub async fn completions(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/completions", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::OpenAi, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = &ctx.body;
    let Some(model) = body.get("model").and_then(Value::as_str).map(String::from) else {
        return missing_model();
    };
    let (last_text, prompt_tokens) = match body.get("prompt") {
        Some(Value::String(s)) => (s.clone(), words(s)),
        Some(Value::Array(items)) => {
            let mut last = String::new();
            let mut n = 0;
            for it in items {
                match it {
                    Value::String(s) => {
                        n += words(s);
                        last = s.clone();
                    }
                    Value::Number(_) => n += 1,
                    Value::Array(toks) => n += toks.len() as u64,
                    _ => {}
                }
            }
            (last, n)
        }
        _ => {
            return error_response(
                Dialect::OpenAi,
                400,
                "Missing required parameter: 'prompt'.",
                None,
            );
        }
    };
    let plan = Plan::build(
        &st,
        PlanInput {
            opts: &ctx.opts,
            body,
            last_user_text: last_text,
            prompt_tokens,
            tool_names: vec![],
            supports_tools: false,
        },
    );
    let id = format!("cmpl-mock{}", plan.seq);
    let created = now_secs();
    let usage = json!({
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    });
    let text = plan.text.clone().unwrap_or_default();
    if is_stream(body) {
        let with_usage = include_usage(body);
        let chunk = |text: &str, finish: Option<&str>| -> String {
            let mut v = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_mock",
                "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": finish}],
            });
            if with_usage && let Some(obj) = v.as_object_mut() {
                obj.insert("usage".into(), Value::Null);
            }
            sse(&v)
        };
        let mut frames: Vec<Frame> = pieces(&text)
            .iter()
            .map(|p| Frame::content(chunk(p, None)))
            .collect();
        frames.push(Frame::meta(chunk("", Some(plan.finish.openai()))));
        if with_usage {
            let v = json!({
                "id": id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": "fp_mock", "choices": [], "usage": usage,
            });
            frames.push(Frame::meta(sse(&v)));
        }
        frames.push(Frame::meta("data: [DONE]\n\n".to_string()));
        sse_response(
            &st,
            Dialect::OpenAi,
            &ctx.opts,
            plan.seq,
            frames,
            stream_error_frame(),
            GARBAGE,
        )
    } else {
        let resp = json!({
            "id": id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": plan.finish.openai()}],
            "usage": usage,
        });
        json_response(
            &st,
            Dialect::OpenAi,
            &ctx.opts,
            plan.seq,
            resp.to_string().into_bytes(),
        )
    }
}

// ---------------------------------------------------------------- embeddings

enum EmbInput {
    Text(String),
    Tokens(Vec<i64>),
}

fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Deterministic unit-length vector for an input.
pub fn embed_vector(seed: u64, dims: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dims)
        .map(|d| {
            let r = splitmix(seed ^ splitmix(d as u64));
            (r >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt();
    raw.iter()
        .map(|x| if norm > 0.0 { (x / norm) as f32 } else { 0.0 })
        .collect()
}

/// The vector the mock returns for a text input (handy for assertions in tests).
pub fn embedding_for_text(text: &str, dims: usize) -> Vec<f32> {
    embed_vector(fnv1a(text.bytes()), dims)
}

/// The vector the mock returns for a token-array input.
pub fn embedding_for_tokens(tokens: &[i64], dims: usize) -> Vec<f32> {
    embed_vector(fnv1a(tokens.iter().flat_map(|t| t.to_le_bytes())), dims)
}

#[derive(Serialize)]
#[serde(untagged)]
enum EmbValue {
    Float(Vec<f32>),
    Base64(String),
}

#[derive(Serialize)]
struct EmbItem {
    object: &'static str,
    index: usize,
    embedding: EmbValue,
}

#[derive(Serialize)]
struct EmbUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct EmbResponse {
    object: &'static str,
    data: Vec<EmbItem>,
    model: String,
    usage: EmbUsage,
}

fn parse_emb_input(v: Option<&Value>) -> Option<Vec<EmbInput>> {
    let tokens = |a: &Vec<Value>| -> Option<Vec<i64>> { a.iter().map(Value::as_i64).collect() };
    match v? {
        Value::String(s) => Some(vec![EmbInput::Text(s.clone())]),
        Value::Array(items) if items.is_empty() => None,
        Value::Array(items) if items.iter().all(Value::is_number) => {
            Some(vec![EmbInput::Tokens(tokens(items)?)])
        }
        Value::Array(items) => items
            .iter()
            .map(|it| match it {
                Value::String(s) => Some(EmbInput::Text(s.clone())),
                Value::Array(a) => tokens(a).map(EmbInput::Tokens),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

pub async fn embeddings(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/embeddings", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::OpenAi, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = &ctx.body;
    let Some(model) = body.get("model").and_then(Value::as_str).map(String::from) else {
        return missing_model();
    };
    let Some(inputs) = parse_emb_input(body.get("input")) else {
        return error_response(
            Dialect::OpenAi,
            400,
            "'input' must be a non-empty string, array of strings, array of tokens, or array of token arrays.",
            None,
        );
    };
    let dims = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .unwrap_or(8)
        .clamp(1, 65536) as usize;
    let b64 = match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            let msg =
                format!("Invalid value for 'encoding_format': '{other}'. Expected 'float' or 'base64'.");
            return error_response(Dialect::OpenAi, 400, &msg, None);
        }
    };
    let mut prompt_tokens = 0;
    let data = inputs
        .iter()
        .enumerate()
        .map(|(index, inp)| {
            let vec = match inp {
                EmbInput::Text(s) => {
                    prompt_tokens += words(s);
                    embedding_for_text(s, dims)
                }
                EmbInput::Tokens(t) => {
                    prompt_tokens += t.len() as u64;
                    embedding_for_tokens(t, dims)
                }
            };
            let embedding = if b64 {
                let bytes: Vec<u8> = vec.iter().flat_map(|f| f.to_le_bytes()).collect();
                EmbValue::Base64(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                EmbValue::Float(vec)
            };
            EmbItem {
                object: "embedding",
                index,
                embedding,
            }
        })
        .collect();
    let resp = EmbResponse {
        object: "list",
        data,
        model,
        usage: EmbUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    let bytes = serde_json::to_vec(&resp).unwrap_or_default();
    json_response(&st, Dialect::OpenAi, &ctx.opts, 0, bytes)
}

// ---------------------------------------------------------------- models

/// Model ids listed by `GET /v1/models`.
pub const MODELS: &[&str] = &[
    "mock-ok",
    "gpt-4o",
    "gpt-4o-mini",
    "text-embedding-3-small",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
];

fn dialect_of(headers: &HeaderMap) -> Dialect {
    if headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    }
}

fn model_obj(dialect: Dialect, id: &str) -> Value {
    match dialect {
        Dialect::OpenAi | Dialect::Gemini | Dialect::Bedrock => {
            json!({"id": id, "object": "model", "created": 1_700_000_000, "owned_by": "mock-upstream"})
        }
        Dialect::Anthropic => {
            json!({"type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z"})
        }
    }
}

/// `GET /v1/models` — OpenAI list format, or Anthropic's when an `anthropic-version` header is sent.
pub async fn list_models(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    st.record("GET /v1/models", &uri.to_string(), &headers, &[]);
    let dialect = dialect_of(&headers);
    let ctx = match prelude(&st, dialect, &headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let data: Vec<Value> = MODELS.iter().map(|m| model_obj(dialect, m)).collect();
    let resp = match dialect {
        Dialect::OpenAi | Dialect::Gemini | Dialect::Bedrock => json!({"object": "list", "data": data}),
        Dialect::Anthropic => json!({
            "data": data, "has_more": false,
            "first_id": MODELS.first(), "last_id": MODELS.last(),
        }),
    };
    json_response(&st, dialect, &ctx.opts, 0, resp.to_string().into_bytes())
}

/// `GET /v1/models/{id}` — any id "exists".
pub async fn get_model(
    State(st): State<MockState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
) -> Response {
    st.record("GET /v1/models/{id}", &uri.to_string(), &headers, &[]);
    let dialect = dialect_of(&headers);
    let ctx = match prelude(&st, dialect, &headers, None).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let resp = model_obj(dialect, &id);
    json_response(&st, dialect, &ctx.opts, 0, resp.to_string().into_bytes())
}
