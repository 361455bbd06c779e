//! AWS Bedrock Runtime handlers: Converse (JSON) and ConverseStream (binary
//! `application/vnd.amazon.eventstream`), with optional SigV4 verification.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::Response;
use base64::Engine as _;
use serde_json::{Value, json};

use crate::common::{
    Ctx, Dialect, Frame, Plan, PlanInput, StreamFaultFrames, error_response, json_response, pieces,
    prelude_checked, split_n, stream_response, words,
};
use crate::sigv4::{SigError, SignedRequest, verify};
use crate::state::MockState;

/// The SigV4 service name Bedrock Runtime is signed for.
pub const SIGNING_SERVICE: &str = "bedrock";

const CORAL_SERVICE_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.coral.service/";
const SIGNATURE_MISMATCH: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
const THROTTLED: &str = "Too many requests, please wait before trying again.";
/// Random-looking padding AWS adds to stream events (`"p"`), which clients must ignore.
const PADDING: &str = "abcdefghijklmnopqrstuvwxyzABCDEF";

// ---------------------------------------------------------------- event stream encoding

/// One `application/vnd.amazon.eventstream` message with string headers (value type 7):
/// total length, headers length, prelude CRC32, headers, payload, message CRC32 (all big-endian).
pub fn event_stream_message(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
    let mut hs = Vec::new();
    for (name, value) in headers {
        hs.push(name.len() as u8);
        hs.extend_from_slice(name.as_bytes());
        hs.push(7);
        hs.extend_from_slice(&(value.len() as u16).to_be_bytes());
        hs.extend_from_slice(value.as_bytes());
    }
    let total = 12 + hs.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(hs.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&hs);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

fn event(event_type: &str, payload: &Value) -> Vec<u8> {
    event_stream_message(
        &[
            (":event-type", event_type),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.to_string().as_bytes(),
    )
}

fn exception(exception_type: &str, message: &str) -> Vec<u8> {
    event_stream_message(
        &[
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        json!({"message": message}).to_string().as_bytes(),
    )
}

// ---------------------------------------------------------------- errors and auth

fn aws_error(status: u16, error_type: &str, namespace: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = Response::new(axum::body::Body::from(json!({"message": message}).to_string()));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Ok(v) = HeaderValue::from_str(&format!("{error_type}:{namespace}")) {
        h.insert("x-amzn-errortype", v);
    }
    resp
}

fn invalid(message: &str) -> Response {
    error_response(Dialect::Bedrock, 400, message, None)
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ").map(str::trim)
}

/// With AWS credentials configured: a valid SigV4 signature (service `bedrock`), or a Bedrock API
/// key (`Authorization: Bearer <require_key>`).
fn check_auth(st: &MockState, headers: &HeaderMap, uri: &Uri, body: &[u8]) -> Option<Response> {
    let (akid, secret) = st.aws_credentials()?;
    if let (Some(key), Some(got)) = (st.require_key(), bearer(headers))
        && key == got
    {
        return None;
    }
    let req = SignedRequest {
        method: "POST",
        path: uri.path(),
        query: uri.query(),
        headers,
        authority: uri.authority().map(|a| a.as_str()),
        body,
    };
    let sig_error = |msg: &str| aws_error(403, "InvalidSignatureException", CORAL_SERVICE_NAMESPACE, msg);
    match verify(&req, SIGNING_SERVICE, &akid, &secret) {
        Ok(_) => None,
        Err(SigError::UnknownAccessKey) => Some(aws_error(
            403,
            "UnrecognizedClientException",
            CORAL_SERVICE_NAMESPACE,
            "The security token included in the request is invalid.",
        )),
        Err(SigError::Mismatch { canonical_request }) => {
            tracing::debug!(%canonical_request, "mock-upstream: SigV4 mismatch");
            let mut resp = sig_error(SIGNATURE_MISMATCH);
            // Debugging aid: the canonical request the mock signed, newlines as `\n`.
            if let Ok(v) = HeaderValue::from_str(&canonical_request.replace('\n', "\\n")) {
                resp.headers_mut().insert("x-mock-canonical-request", v);
            }
            Some(resp)
        }
        Err(SigError::Malformed(msg) | SigError::Scope(msg)) => Some(sig_error(&msg)),
    }
}

// ---------------------------------------------------------------- request reading

/// Text of a content block for prompts / echoes: `text`, and a `toolResult`'s text / json.
fn block_text(b: &Value) -> Option<String> {
    if let Some(t) = b.get("text").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    let tr = b.get("toolResult")?;
    let inner = tr
        .get("content")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| {
                    c.get("text")
                        .and_then(Value::as_str)
                        .map(String::from)
                        .or_else(|| c.get("json").map(Value::to_string))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(inner)
}

fn content_text(msg: &Value) -> String {
    msg.get("content")
        .and_then(Value::as_array)
        .map(|bs| bs.iter().filter_map(block_text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Bedrock's Converse validation of `messages`; the error is a ValidationException message.
fn validate(body: &Value) -> Result<&Vec<Value>, String> {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return Err("1 validation error detected: Value null at 'messages' failed to satisfy constraint: Member must not be null".to_string());
    };
    let has_tool_config = body
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .is_some_and(|t| !t.is_empty());
    let mut prev: Option<&str> = None;
    for (i, m) in messages.iter().enumerate() {
        let role = m.get("role").and_then(Value::as_str).unwrap_or("");
        if !matches!(role, "user" | "assistant") {
            return Err(format!(
                "1 validation error detected: Value '{role}' at 'messages.{}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]",
                i + 1
            ));
        }
        if i == 0 && role != "user" {
            return Err("A conversation must start with a user message. Try again with a conversation that starts with a user message.".to_string());
        }
        if prev == Some(role) {
            return Err("A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.".to_string());
        }
        prev = Some(role);
        let blocks = match m.get("content").and_then(Value::as_array) {
            Some(b) if !b.is_empty() => b,
            _ => {
                return Err(format!(
                    "The content field in the Message object at messages.{i} is empty. Add a ContentBlock object to the content field and try again."
                ));
            }
        };
        for (j, b) in blocks.iter().enumerate() {
            if (b.get("toolUse").is_some() || b.get("toolResult").is_some()) && !has_tool_config {
                return Err(
                    "The toolConfig field must be defined when using toolUse and toolResult content blocks."
                        .to_string(),
                );
            }
            if let Some(img) = b.get("image") {
                let format = img.get("format").and_then(Value::as_str).unwrap_or("");
                if !matches!(format, "png" | "jpeg" | "gif" | "webp") {
                    return Err(format!(
                        "1 validation error detected: Value '{format}' at 'messages.{}.member.content.{}.member.image.format' failed to satisfy constraint: Member must satisfy enum value set: [gif, jpeg, png, webp]",
                        i + 1,
                        j + 1
                    ));
                }
                let ok = img
                    .pointer("/source/bytes")
                    .and_then(Value::as_str)
                    .is_some_and(|b| base64::engine::general_purpose::STANDARD.decode(b).is_ok());
                if !ok {
                    return Err(format!(
                        "messages.{i}.content.{j}.image.source.bytes: expected base64-encoded image bytes"
                    ));
                }
            }
        }
    }
    Ok(messages)
}

fn tool_id(seq: u64, k: usize) -> String {
    format!("tooluse_mock{seq}_{k}")
}

fn signature(seq: u64) -> String {
    format!("EqMockBedrockSignature{seq}AAAA")
}

fn usage(plan: &Plan) -> Value {
    let input = plan.prompt_tokens.saturating_sub(plan.cached_tokens);
    let mut u = json!({
        "inputTokens": input,
        "outputTokens": plan.completion_tokens,
        "totalTokens": input + plan.completion_tokens + plan.cached_tokens,
    });
    if plan.cached_tokens > 0
        && let Some(o) = u.as_object_mut()
    {
        o.insert("cacheReadInputTokens".into(), json!(plan.cached_tokens));
        o.insert("cacheWriteInputTokens".into(), json!(0));
    }
    u
}

fn latency_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .max(1)
}

// ---------------------------------------------------------------- handlers

/// `POST /model/{modelId}/converse`.
pub async fn converse(
    State(st): State<MockState>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /model/converse", &uri.to_string(), &headers, &raw);
    handle(st, model_id, headers, uri, raw, false).await
}

/// `POST /model/{modelId}/converse-stream`.
pub async fn converse_stream(
    State(st): State<MockState>,
    Path(model_id): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /model/converse-stream", &uri.to_string(), &headers, &raw);
    handle(st, model_id, headers, uri, raw, true).await
}

async fn handle(
    st: MockState,
    model_id: String,
    headers: HeaderMap,
    uri: Uri,
    raw: Bytes,
    stream: bool,
) -> Response {
    let started = Instant::now();
    if let Some(r) = check_auth(&st, &headers, &uri, &raw) {
        return r;
    }
    let ctx = match prelude_checked(&st, Dialect::Bedrock, &headers, Some(&raw), Some(&model_id)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let messages = match validate(&ctx.body) {
        Ok(m) => m,
        Err(msg) => return invalid(&msg),
    };
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(content_text)
        .unwrap_or_default();
    let system = ctx
        .body
        .get("system")
        .and_then(Value::as_array)
        .map(|bs| {
            bs.iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .map(words)
                .sum::<u64>()
        })
        .unwrap_or(0);
    let prompt_tokens = system + messages.iter().map(|m| words(&content_text(m))).sum::<u64>();
    let tool_names = ctx
        .body
        .pointer("/toolConfig/tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| {
                    t.pointer("/toolSpec/name")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    let mut plan = Plan::build(
        &st,
        PlanInput {
            opts: &ctx.opts,
            body: &ctx.body,
            last_user_text,
            prompt_tokens,
            tool_names,
            supports_tools: true,
        },
    );
    plan.cap_output(
        ctx.body
            .pointer("/inferenceConfig/maxTokens")
            .and_then(Value::as_u64),
    );
    if stream {
        stream_answer(&st, &ctx, &plan, started)
    } else {
        let mut content = Vec::new();
        if let Some(r) = &plan.reasoning {
            content.push(
                json!({"reasoningContent": {"reasoningText": {"text": r, "signature": signature(plan.seq)}}}),
            );
        }
        if let Some(t) = &plan.text {
            content.push(json!({"text": t}));
        }
        for (k, t) in plan.tools.iter().enumerate() {
            content.push(
                json!({"toolUse": {"toolUseId": tool_id(plan.seq, k), "name": t.name, "input": t.input}}),
            );
        }
        let resp = json!({
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": plan.finish.bedrock(),
            "usage": usage(&plan),
            "metrics": {"latencyMs": latency_ms(started)},
        });
        json_response(
            &st,
            Dialect::Bedrock,
            &ctx.opts,
            plan.seq,
            resp.to_string().into_bytes(),
        )
    }
}

fn stream_answer(st: &MockState, ctx: &Ctx, plan: &Plan, started: Instant) -> Response {
    let meta = |b: Vec<u8>| Frame {
        bytes: Bytes::from(b),
        content: false,
    };
    let content = |b: Vec<u8>| Frame {
        bytes: Bytes::from(b),
        content: true,
    };
    let delta = |index: usize, d: Value| {
        content(event(
            "contentBlockDelta",
            &json!({"contentBlockIndex": index, "delta": d, "p": PADDING}),
        ))
    };
    let stop = |index: usize| meta(event("contentBlockStop", &json!({"contentBlockIndex": index})));
    let mut frames = vec![meta(event("messageStart", &json!({"role": "assistant"})))];
    let mut index = 0usize;
    if let Some(r) = &plan.reasoning {
        for p in pieces(r) {
            frames.push(delta(index, json!({"reasoningContent": {"text": p}})));
        }
        frames.push(delta(
            index,
            json!({"reasoningContent": {"signature": signature(plan.seq)}}),
        ));
        frames.push(stop(index));
        index += 1;
    }
    if let Some(t) = &plan.text {
        for p in pieces(t) {
            frames.push(delta(index, json!({"text": p})));
        }
        frames.push(stop(index));
        index += 1;
    }
    for (k, t) in plan.tools.iter().enumerate() {
        frames.push(meta(event(
            "contentBlockStart",
            &json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": tool_id(plan.seq, k), "name": t.name}}, "p": PADDING}),
        )));
        for p in split_n(&t.arguments, 4) {
            frames.push(delta(index, json!({"toolUse": {"input": p}})));
        }
        frames.push(stop(index));
        index += 1;
    }
    frames.push(meta(event(
        "messageStop",
        &json!({"stopReason": plan.finish.bedrock(), "p": PADDING}),
    )));
    frames.push(meta(event(
        "metadata",
        &json!({"usage": usage(plan), "metrics": {"latencyMs": latency_ms(started)}, "p": PADDING}),
    )));
    // `badcrc`: the first content event (else the first event) gets a wrong message CRC;
    // `badcrc=prelude`: a wrong prelude CRC instead.
    if let Some(mode) = ctx.opts.get("badcrc").filter(|_| ctx.opts.flag("badcrc")) {
        let at = frames.iter().position(|f| f.content).unwrap_or(0);
        if let Some(f) = frames.get_mut(at) {
            let mut b = f.bytes.to_vec();
            let pos = if mode == "prelude" {
                11
            } else {
                b.len().saturating_sub(1)
            };
            if let Some(x) = b.get_mut(pos) {
                *x ^= 0xff;
            }
            f.bytes = Bytes::from(b);
        }
    }
    let exception_type = ctx.opts.get("exception").unwrap_or("throttlingException");
    let exception_msg = match exception_type {
        "throttlingException" => THROTTLED,
        "modelStreamErrorException" => "The model encountered an error while streaming the response.",
        "serviceUnavailableException" => "The service is temporarily unavailable.",
        "internalServerException" => "The server encountered an internal error.",
        "validationException" => "The request was invalid.",
        _ => "mock: injected stream exception",
    };
    let faults = StreamFaultFrames {
        error: Bytes::from(exception(exception_type, exception_msg)),
        garbage: Bytes::from(event_stream_message(
            &[
                (":event-type", "contentBlockDelta"),
                (":content-type", "application/json"),
                (":message-type", "event"),
            ],
            b"this is not json",
        )),
    };
    stream_response(
        st,
        Dialect::Bedrock,
        &ctx.opts,
        plan.seq,
        frames,
        faults,
        "application/vnd.amazon.eventstream",
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn event_stream_layout() {
        let m = event_stream_message(&[(":event-type", "x")], b"{}");
        let total = u32::from_be_bytes(m[0..4].try_into().unwrap()) as usize;
        let hlen = u32::from_be_bytes(m[4..8].try_into().unwrap()) as usize;
        assert_eq!(total, m.len());
        assert_eq!(hlen, 1 + 11 + 1 + 2 + 1);
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().unwrap()),
            crc32fast::hash(&m[..8])
        );
        assert_eq!(&m[12 + hlen..total - 4], b"{}");
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().unwrap()),
            crc32fast::hash(&m[..total - 4])
        );
    }
}
