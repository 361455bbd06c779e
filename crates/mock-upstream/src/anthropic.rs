//! Anthropic Messages API handlers.

use axum::body::Bytes;
use axum::extract::OriginalUri;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Value, json};

use crate::common::{
    Dialect, Frame, Plan, PlanInput, error_body, error_response, json_response, pieces, prelude, split_n,
    sse_response, words,
};
use crate::state::MockState;

const GARBAGE: &str = "event: content_block_delta\ndata: this is not json\n\n";
const REDACTED_DATA: &str = "EmwKAhgBEgxtb2NrLXJlZGFjdGVkGgxtb2NrLXJlZGFjdGVk";

fn ev(ty: &str, v: &Value) -> String {
    format!("event: {ty}\ndata: {v}\n\n")
}

fn signature(seq: u64) -> String {
    format!("EqMockSignature{seq}AAAA")
}

/// Text of an Anthropic `content` (string or blocks; includes `tool_result` contents).
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b.get("text").and_then(Value::as_str).map(String::from),
                Some("tool_result") => b.get("content").map(content_text),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

fn prompt_tokens(body: &Value) -> u64 {
    let system = body.get("system").map_or(0, |s| words(&content_text(s)));
    let msgs: u64 = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| words(&content_text(m.get("content").unwrap_or(&Value::Null))))
                .sum()
        })
        .unwrap_or(0);
    system + msgs
}

fn invalid(msg: &str) -> Response {
    error_response(Dialect::Anthropic, 400, msg, None)
}

pub async fn messages(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/messages", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::Anthropic, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = &ctx.body;
    let Some(model) = body.get("model").and_then(Value::as_str).map(String::from) else {
        return invalid("model: Field required");
    };
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return invalid("messages: Field required");
    };
    if !body.get("max_tokens").is_some_and(Value::is_u64) {
        return invalid("max_tokens: Field required");
    }
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
                .filter_map(|t| t.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let plan = Plan::build(
        &st,
        PlanInput {
            opts: &ctx.opts,
            body,
            last_user_text,
            prompt_tokens: prompt_tokens(body),
            tool_names,
            supports_tools: true,
        },
    );
    let id = format!("msg_mock{}", plan.seq);
    let input_tokens = plan.prompt_tokens.saturating_sub(plan.cached_tokens);
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if stream {
        let frames = stream_frames(&plan, &id, &model, input_tokens);
        let err = ev("error", &error_body(Dialect::Anthropic, 529, "Overloaded"));
        sse_response(&st, Dialect::Anthropic, &ctx.opts, plan.seq, frames, err, GARBAGE)
    } else {
        let mut content = Vec::new();
        if let Some(r) = &plan.reasoning {
            content.push(json!({"type": "thinking", "thinking": r, "signature": signature(plan.seq)}));
            if plan.redacted {
                content.push(json!({"type": "redacted_thinking", "data": REDACTED_DATA}));
            }
        }
        if let Some(t) = &plan.text {
            content.push(json!({"type": "text", "text": t}));
        }
        for (k, t) in plan.tools.iter().enumerate() {
            content.push(
                json!({"type": "tool_use", "id": tool_id(plan.seq, k), "name": t.name, "input": t.input}),
            );
        }
        let resp = json!({
            "id": id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": plan.finish.anthropic(),
            "stop_sequence": null,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": plan.cached_tokens,
                "output_tokens": plan.completion_tokens,
            },
        });
        json_response(
            &st,
            Dialect::Anthropic,
            &ctx.opts,
            plan.seq,
            resp.to_string().into_bytes(),
        )
    }
}

fn tool_id(seq: u64, k: usize) -> String {
    format!("toolu_mock{seq}_{k}")
}

fn stream_frames(plan: &Plan, id: &str, model: &str, input_tokens: u64) -> Vec<Frame> {
    let mut frames = vec![Frame::meta(ev(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null,
            "usage": {
                "input_tokens": input_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": plan.cached_tokens,
                "output_tokens": 1,
            },
        }}),
    ))];
    let mut index = 0usize;
    let mut pinged = false;
    let mut start = |frames: &mut Vec<Frame>, index: usize, block: Value| {
        frames.push(Frame::meta(ev(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        )));
        if !pinged {
            frames.push(Frame::meta(ev("ping", &json!({"type": "ping"}))));
            pinged = true;
        }
    };
    let delta = |index: usize, d: Value| {
        Frame::content(ev(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": index, "delta": d}),
        ))
    };
    let stop = |index: usize| {
        Frame::meta(ev(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": index}),
        ))
    };
    if let Some(r) = &plan.reasoning {
        start(
            &mut frames,
            index,
            json!({"type": "thinking", "thinking": "", "signature": ""}),
        );
        for p in pieces(r) {
            frames.push(delta(index, json!({"type": "thinking_delta", "thinking": p})));
        }
        frames.push(delta(
            index,
            json!({"type": "signature_delta", "signature": signature(plan.seq)}),
        ));
        frames.push(stop(index));
        index += 1;
        if plan.redacted {
            start(
                &mut frames,
                index,
                json!({"type": "redacted_thinking", "data": REDACTED_DATA}),
            );
            frames.push(stop(index));
            index += 1;
        }
    }
    if let Some(t) = &plan.text {
        start(&mut frames, index, json!({"type": "text", "text": ""}));
        for p in pieces(t) {
            frames.push(delta(index, json!({"type": "text_delta", "text": p})));
        }
        frames.push(stop(index));
        index += 1;
    }
    for (k, t) in plan.tools.iter().enumerate() {
        start(
            &mut frames,
            index,
            json!({"type": "tool_use", "id": tool_id(plan.seq, k), "name": t.name, "input": {}}),
        );
        for p in split_n(&t.arguments, 4) {
            frames.push(delta(
                index,
                json!({"type": "input_json_delta", "partial_json": p}),
            ));
        }
        frames.push(stop(index));
        index += 1;
    }
    if !pinged {
        frames.push(Frame::meta(ev("ping", &json!({"type": "ping"}))));
    }
    frames.push(Frame::meta(ev(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": plan.finish.anthropic(), "stop_sequence": null},
                "usage": {"output_tokens": plan.completion_tokens}}),
    )));
    frames.push(Frame::meta(ev("message_stop", &json!({"type": "message_stop"}))));
    frames
}

pub async fn count_tokens(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/messages/count_tokens", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::Anthropic, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !ctx.body.get("messages").is_some_and(Value::is_array) {
        return invalid("messages: Field required");
    }
    let resp = json!({"input_tokens": prompt_tokens(&ctx.body)});
    json_response(
        &st,
        Dialect::Anthropic,
        &ctx.opts,
        0,
        resp.to_string().into_bytes(),
    )
}
