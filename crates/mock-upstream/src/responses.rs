//! A native Responses API upstream (`POST /v1/responses`): a `response` object, or its SSE events
//! with sequence numbers, answering "echo: <last user text>". Its answers say
//! `metadata.served_by = "mock-native-responses"`, so a test can tell a relayed answer from a
//! translated one.

use axum::body::Bytes;
use axum::extract::{OriginalUri, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::{Dialect, Frame, error_response, prelude, sse_response, words};
use crate::state::MockState;

fn last_user_text(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .rev()
            .find(|i| i["role"] == "user")
            .map(|i| match &i["content"] {
                Value::String(s) => s.clone(),
                Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                _ => String::new(),
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

pub async fn create(
    State(st): State<MockState>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    st.record("POST /v1/responses", &uri.to_string(), &headers, &raw);
    let ctx = match prelude(&st, Dialect::OpenAi, &headers, Some(&raw)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let body = &ctx.body;
    let Some(model) = body["model"].as_str().map(String::from) else {
        return error_response(Dialect::OpenAi, 400, "Missing required parameter: 'model'.", None);
    };
    let text = format!("echo: {}", last_user_text(&body["input"]));
    let seq = st.next_seq();
    let id = format!("resp_mock{seq}");
    let msg_id = format!("msg_mock{seq}");
    let input_tokens = words(&body["input"].to_string()).max(1);
    let output_tokens = words(&text);
    let usage = json!({"input_tokens": input_tokens, "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens});
    let item = json!({"type": "message", "id": msg_id, "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let object = |status: &str, output: Value, usage: Value| {
        json!({"id": id, "object": "response", "created_at": 1_700_000_000u64 + seq, "status": status,
            "model": model, "output": output, "usage": usage, "error": null, "incomplete_details": null,
            "previous_response_id": body["previous_response_id"],
            "metadata": {"served_by": "mock-native-responses"}})
    };
    if body["stream"].as_bool() != Some(true) {
        return axum::Json(object("completed", json!([item]), usage)).into_response();
    }
    let mut n = 0u64;
    let mut frames = Vec::new();
    let mut push = |ty: &str, mut data: Value, content: bool| {
        data["type"] = json!(ty);
        data["sequence_number"] = json!(n);
        n += 1;
        let s = format!("event: {ty}\ndata: {data}\n\n");
        frames.push(Frame {
            bytes: Bytes::from(s),
            content,
        });
    };
    push(
        "response.created",
        json!({"response": object("in_progress", json!([]), Value::Null)}),
        false,
    );
    let mut open = item.clone();
    open["status"] = json!("in_progress");
    open["content"] = json!([]);
    push(
        "response.output_item.added",
        json!({"output_index": 0, "item": open}),
        false,
    );
    push(
        "response.content_part.added",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        false,
    );
    let pieces: Vec<&str> = text.split_inclusive(' ').collect();
    for p in &pieces {
        push(
            "response.output_text.delta",
            json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "delta": p}),
            true,
        );
    }
    push(
        "response.output_text.done",
        json!({"item_id": msg_id, "output_index": 0, "content_index": 0, "text": text}),
        false,
    );
    push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item}),
        false,
    );
    push(
        "response.completed",
        json!({"response": object("completed", json!([item]), usage)}),
        false,
    );
    sse_response(
        &st,
        Dialect::OpenAi,
        &ctx.opts,
        seq,
        frames,
        "event: error\ndata: {\"type\":\"error\",\"message\":\"mock failure\"}\n\n".to_string(),
        "event: ???\ndata: {not json\n\n",
    )
}
