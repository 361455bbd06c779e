//! Black-box: the Anthropic surface of the real binary in front of an in-process `mock-upstream` —
//! every validation rule and error mapping in Anthropic's envelope, the provider's headers and base
//! URLs, the path aliases, count_tokens for each kind of upstream, the models list, warnings and
//! refusals, and stream faults that must end a stream with an `error` event, never a hang.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Gateway, KEY, send};
use mock_upstream::MockServer;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

fn config(upstream: &str) -> String {
    let mut c = format!(
        r#"[server]
address = "127.0.0.1:0"
max_body_bytes = 65536

[auth]
master_key = "{KEY}"

# The surface's own answers to each upstream failure; routing has its own suite (tests/routing.rs).
[routing]
max_attempts = 1
health_check_interval_ms = 0
[routing.breaker]
failures = 1000000
min_requests = 1000000

[providers.an]
kind = "anthropic"
base_url = "{upstream}"
api_key = "sk-upstream-anthropic"
anthropic_beta = ["beta-config"]

[providers.an_v1]
kind = "anthropic"
base_url = "{upstream}/v1/"
api_key = "sk-upstream-anthropic"
anthropic_version = "2024-01-01"

[providers.an_idle]
kind = "anthropic"
base_url = "{upstream}"
idle_timeout_ms = 300

[providers.oa]
kind = "openai"
base_url = "{upstream}/v1"
"#
    );
    let models: &[(&str, &str, &str)] = &[
        ("claude-mock", "an", "claude-mock"),
        ("claude-v1", "an_v1", "claude-mock"),
        ("claude-tools", "an", "claude-mock+tools=1"),
        ("claude-429", "an", "claude-mock+status=429+retry_after=7"),
        ("claude-529", "an", "claude-mock+status=529"),
        ("claude-500", "an", "claude-mock+status=500"),
        ("claude-400", "an", "claude-mock+status=400"),
        ("claude-403", "an", "claude-mock+status=403"),
        ("claude-error-after", "an", "claude-mock+error_after=2+tokens=10"),
        ("claude-drop", "an", "claude-mock+drop_after=2+tokens=10"),
        ("claude-garbage", "an", "claude-mock+garbage"),
        ("claude-truncate", "an", "claude-mock+truncate"),
        (
            "claude-hang-after",
            "an_idle",
            "claude-mock+hang_after=2+tokens=10",
        ),
        ("gpt-mock", "oa", "mock-ok"),
        ("gpt-429", "oa", "mock-ok+status=429+retry_after=3"),
        ("gpt-error-after", "oa", "mock-ok+error_after=2+tokens=10"),
    ];
    for (public, provider, upstream_model) in models {
        c.push_str(&format!(
            "\n[models.{public}]\nprovider = \"{provider}\"\nmodel = \"{upstream_model}\"\n"
        ));
    }
    c.push_str("\n[models.embedder]\nprovider = \"oa\"\nmodel = \"mock-embed\"\ntype = \"embedding\"\n");
    c
}

async fn start() -> (MockServer, Gateway) {
    let mock = MockServer::start().await.unwrap();
    let gw = Gateway::start(&config(&mock.base_url())).await;
    (mock, gw)
}

fn msg(model: &str, text: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": text}]})
}

/// POST with an `x-api-key` and `anthropic-version`, as the SDKs send it.
async fn post(gw: &Gateway, path: &str, body: &Value) -> (StatusCode, HeaderMap, Value) {
    send(
        gw.client
            .post(gw.url(path))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01")
            .json(body),
    )
    .await
}

/// A streamed call: status, headers and the events as `(name, data)`.
async fn post_stream(
    gw: &Gateway,
    path: &str,
    body: &Value,
) -> (StatusCode, HeaderMap, Vec<(String, Value)>) {
    let resp = gw
        .client
        .post(gw.url(path))
        .header("x-api-key", KEY)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
        .await
        .expect("the stream ended in time, not hung")
        .unwrap();
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(n) = line.strip_prefix("event: ") {
                name = n.to_string();
            } else if let Some(d) = line.strip_prefix("data: ") {
                data.push_str(d);
            }
        }
        events.push((name, serde_json::from_str(&data).unwrap_or(Value::String(data))));
    }
    (status, headers, events)
}

/// Asserts Anthropic's envelope: exactly `type: "error"` and `error: {type, message}`, this type, a
/// non-empty message. Returns the message.
fn assert_anthropic_error(body: &Value, ty: &str) -> String {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {body}"));
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.sort();
    assert_eq!(keys, ["error", "type"], "{body}");
    assert_eq!(body["type"], json!("error"), "{body}");
    let err = body["error"].as_object().unwrap();
    let mut keys: Vec<&String> = err.keys().collect();
    keys.sort();
    assert_eq!(keys, ["message", "type"], "{body}");
    assert_eq!(body["error"]["type"], json!(ty), "{body}");
    let m = body["error"]["message"].as_str().unwrap().to_string();
    assert!(!m.is_empty(), "{body}");
    m
}

// ------------------------------------------------------------------------------------- validation

#[tokio::test]
async fn every_validation_rule_answers_400_in_anthropic_envelope() {
    let (mock, gw) = start().await;
    let user = |content: Value| json!({"role": "user", "content": content});
    let base = msg("claude-mock", "hi");
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    let without = |k: &str| {
        let mut b = base.clone();
        b.as_object_mut().unwrap().remove(k);
        b
    };
    let tool = |name: &str| json!({"name": name, "input_schema": {"type": "object"}});
    let cc = json!({"type": "ephemeral"});
    let cases: Vec<(&str, Value, &str)> = vec![
        ("missing model", without("model"), "model: Field required"),
        (
            "missing max_tokens",
            without("max_tokens"),
            "max_tokens: Field required",
        ),
        (
            "missing messages",
            without("messages"),
            "messages: Field required",
        ),
        (
            "max_tokens not an integer",
            with("max_tokens", json!("10")),
            "max_tokens",
        ),
        ("negative max_tokens", with("max_tokens", json!(-1)), "max_tokens"),
        ("empty messages", with("messages", json!([])), "at least 1 item"),
        (
            "bad role",
            with("messages", json!([{"role": "tool", "content": "x"}])),
            "messages.0.role",
        ),
        (
            "missing content",
            with("messages", json!([{"role": "user"}])),
            "messages.0.content: Field required",
        ),
        (
            "empty content",
            with("messages", json!([user(json!(""))])),
            "non-empty content",
        ),
        (
            "empty block list",
            with("messages", json!([user(json!([]))])),
            "non-empty content",
        ),
        (
            "content neither string nor blocks",
            with("messages", json!([user(json!(5))])),
            "messages.0.content",
        ),
        (
            "block without type",
            with("messages", json!([user(json!([{"text": "x"}]))])),
            "type",
        ),
        (
            "empty text block",
            with("messages", json!([user(json!([{"type": "text", "text": ""}]))])),
            "messages.0.content.0",
        ),
        (
            "image without source",
            with("messages", json!([user(json!([{"type": "image"}]))])),
            "messages.0.content.0.source",
        ),
        (
            "tool_use in a user message",
            with(
                "messages",
                json!([user(
                    json!([{"type": "tool_use", "id": "t", "name": "f", "input": {}}])
                )]),
            ),
            "'tool_use' blocks are not allowed in 'user' messages",
        ),
        (
            "tool_result in an assistant message",
            with(
                "messages",
                json!([user(json!("q")), {"role": "assistant", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]),
            ),
            "'tool_result' blocks are not allowed in 'assistant' messages",
        ),
        (
            "tool_result without tool_use_id",
            with(
                "messages",
                json!([user(json!([{"type": "tool_result", "content": "x"}]))]),
            ),
            "tool_use_id",
        ),
        (
            "temperature above 1",
            with("temperature", json!(1.5)),
            "temperature",
        ),
        ("top_p below 0", with("top_p", json!(-0.1)), "top_p"),
        ("negative top_k", with("top_k", json!(-1)), "top_k"),
        (
            "whitespace stop sequence",
            with("stop_sequences", json!([" \n"])),
            "each stop sequence must contain non-whitespace",
        ),
        ("stream not a boolean", with("stream", json!("yes")), "stream"),
        ("system not text", with("system", json!(5)), "system"),
        (
            "bad tool name",
            with("tools", json!([tool("bad name!")])),
            "String should match pattern",
        ),
        (
            "duplicate tool names",
            with("tools", json!([tool("f"), tool("f")])),
            "Tool names must be unique",
        ),
        (
            "tool without input_schema",
            with("tools", json!([{"name": "f"}])),
            "tools.0.input_schema",
        ),
        (
            "unknown tool_choice",
            with("tool_choice", json!({"type": "sometimes"})),
            "tool_choice",
        ),
        (
            "tool_choice tool without name",
            with("tool_choice", json!({"type": "tool"})),
            "tool_choice",
        ),
        (
            "thinking budget below 1024",
            with("thinking", json!({"type": "enabled", "budget_tokens": 100})),
            "thinking",
        ),
        (
            "thinking budget not below max_tokens",
            with("thinking", json!({"type": "enabled", "budget_tokens": 2048})),
            "max_tokens",
        ),
        (
            "metadata.user_id not a string",
            with("metadata", json!({"user_id": 5})),
            "metadata.user_id",
        ),
        (
            "more than four cache_control breakpoints",
            with(
                "system",
                json!([
                    {"type": "text", "text": "a", "cache_control": cc},
                    {"type": "text", "text": "b", "cache_control": cc},
                    {"type": "text", "text": "c", "cache_control": cc},
                    {"type": "text", "text": "d", "cache_control": cc},
                    {"type": "text", "text": "e", "cache_control": cc}
                ]),
            ),
            "A maximum of 4 blocks with cache_control",
        ),
    ];
    for (what, body, needle) in &cases {
        for path in ["/v1/messages", "/anthropic/v1/messages"] {
            let (status, headers, resp) = post(&gw, path, body).await;
            assert_eq!(status, 400, "{what} ({path}): {resp}");
            let m = assert_anthropic_error(&resp, "invalid_request_error");
            assert!(m.contains(needle), "{what}: `{m}` lacks `{needle}`");
            assert!(headers.contains_key("request-id"), "{what}: no request-id");
        }
    }
    // Bodies that are not JSON objects.
    for raw in ["not json", "[1, 2]", ""] {
        let (status, _, resp) = send(
            gw.client
                .post(gw.url("/v1/messages"))
                .header("x-api-key", KEY)
                .header("content-type", "application/json")
                .body(raw),
        )
        .await;
        assert_eq!(status, 400, "{raw:?}: {resp}");
        assert_anthropic_error(&resp, "invalid_request_error");
    }
    // Alternation is not required (Anthropic merges same-role turns), nor is a final assistant's content.
    let ok = with(
        "messages",
        json!([user(json!("a")), user(json!("b")), {"role": "assistant", "content": ""}]),
    );
    let (status, _, resp) = post(&gw, "/v1/messages", &ok).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(
        mock.state.count("POST /v1/messages"),
        1,
        "only the valid request went upstream"
    );
}

#[tokio::test]
async fn count_tokens_validates_its_own_body() {
    let (mock, gw) = start().await;
    let cases = [
        (
            json!({"messages": [{"role": "user", "content": "x"}]}),
            "model: Field required",
        ),
        (json!({"model": "claude-mock"}), "messages: Field required"),
        (json!({"model": "claude-mock", "messages": []}), "at least 1 item"),
        (
            json!({"model": "claude-mock", "messages": [{"role": "robot", "content": "x"}]}),
            "messages.0.role",
        ),
    ];
    for (body, needle) in &cases {
        let (status, _, resp) = post(&gw, "/v1/messages/count_tokens", body).await;
        assert_eq!(status, 400, "{body}: {resp}");
        let m = assert_anthropic_error(&resp, "invalid_request_error");
        assert!(m.contains(needle), "`{m}` lacks `{needle}`");
    }
    // No max_tokens needed to count.
    let (status, _, resp) = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "claude-mock", "messages": [{"role": "user", "content": "one two three"}]}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(mock.state.count("POST /v1/messages/count_tokens"), 1);
}

#[tokio::test]
async fn oversized_bodies_are_request_too_large() {
    let (_mock, gw) = start().await;
    let big = "x ".repeat(40_000);
    let (status, _, resp) = post(&gw, "/v1/messages", &msg("claude-mock", &big)).await;
    assert_eq!(status, 413, "{resp}");
    assert_anthropic_error(&resp, "request_too_large");
}

#[tokio::test]
async fn wrong_method_and_unknown_paths_answer_in_anthropic_envelope() {
    let (_mock, gw) = start().await;
    let (status, _, resp) = send(gw.get("/v1/messages")).await;
    assert_eq!(status, 405, "{resp}");
    assert_anthropic_error(&resp, "invalid_request_error");
    let (status, _, resp) = send(gw.get("/anthropic/v1/nothing")).await;
    assert_eq!(status, 404, "{resp}");
    assert_anthropic_error(&resp, "not_found_error");
}

// ------------------------------------------------------------------------------------- auth, models

#[tokio::test]
async fn keys_by_x_api_key_or_bearer_and_401_otherwise() {
    let (_mock, gw) = start().await;
    let body = msg("claude-mock", "hi");
    for path in [
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/anthropic/v1/models",
    ] {
        let req = if path.ends_with("models") {
            gw.client.get(gw.url(path))
        } else {
            gw.client.post(gw.url(path)).json(&body)
        };
        let (status, _, resp) = send(req).await;
        assert_eq!(status, 401, "{path}: {resp}");
        assert_anthropic_error(&resp, "authentication_error");
    }
    let (status, _, resp) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", "sk-wrong")
            .json(&body),
    )
    .await;
    assert_eq!(status, 401, "{resp}");
    assert_anthropic_error(&resp, "authentication_error");
    let (status, _, resp) = send(gw.post("/v1/messages").json(&body)).await;
    assert_eq!(status, 200, "Bearer works too: {resp}");
    let (status, _, resp) = post(&gw, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn unknown_and_non_chat_models() {
    let (mock, gw) = start().await;
    let (status, _, resp) = post(&gw, "/v1/messages", &msg("claude-nope", "hi")).await;
    assert_eq!(status, 404, "{resp}");
    let m = assert_anthropic_error(&resp, "not_found_error");
    assert!(m.contains("claude-nope"), "{m}");
    let (status, _, resp) = post(&gw, "/v1/messages/count_tokens", &msg("claude-nope", "hi")).await;
    assert_eq!(status, 404, "{resp}");
    assert_anthropic_error(&resp, "not_found_error");
    let (status, _, resp) = post(&gw, "/v1/messages", &msg("embedder", "hi")).await;
    assert_eq!(status, 400, "{resp}");
    assert_anthropic_error(&resp, "invalid_request_error");
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn models_list_in_anthropic_format_with_paging() {
    let (_mock, gw) = start().await;
    let (status, h, all) = send(gw.get("/anthropic/v1/models").header("x-api-key", KEY)).await;
    assert_eq!(status, 200, "{all}");
    assert!(h.contains_key("request-id"));
    let data = all["data"].as_array().unwrap();
    let ids: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 16, "chat models only: {ids:?}");
    assert!(!ids.contains(&"embedder"));
    assert_eq!(all["has_more"], json!(false));
    assert_eq!(all["first_id"], json!(ids[0]));
    assert_eq!(all["last_id"], json!(ids[ids.len() - 1]));
    let m = &data[0];
    assert_eq!(m["type"], json!("model"));
    assert_eq!(m["display_name"], m["id"]);
    let created = m["created_at"].as_str().unwrap();
    assert!(
        created.len() == 20 && created.ends_with('Z') && created.as_bytes()[10] == b'T',
        "{created}"
    );

    let (_, _, page) = send(gw.get("/anthropic/v1/models?limit=2")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert_eq!(page["has_more"], json!(true));
    assert_eq!(page["last_id"], json!(ids[1]));
    let (_, _, next) = send(gw.get(&format!("/anthropic/v1/models?limit=2&after_id={}", ids[1]))).await;
    assert_eq!(next["first_id"], json!(ids[2]));
    let (_, _, prev) = send(gw.get(&format!("/anthropic/v1/models?limit=2&before_id={}", ids[2]))).await;
    assert_eq!(prev["first_id"], json!(ids[0]));
    assert_eq!(prev["has_more"], json!(false));
    let (status, _, resp) = send(gw.get("/anthropic/v1/models?limit=0")).await;
    assert_eq!(status, 400, "{resp}");
    assert_anthropic_error(&resp, "invalid_request_error");

    let (status, _, one) = send(gw.get("/anthropic/v1/models/claude-mock")).await;
    assert_eq!(status, 200);
    assert_eq!(&one, data.iter().find(|m| m["id"] == "claude-mock").unwrap());
    let (status, _, resp) = send(gw.get("/anthropic/v1/models/claude-nope")).await;
    assert_eq!(status, 404);
    assert_anthropic_error(&resp, "not_found_error");
    // The alias `/api/anthropic/v1/models` and the SDK at the bare base URL (`/v1/models` with
    // `anthropic-version`) get the same list; OpenAI clients keep theirs.
    let (_, _, alias) = send(gw.get("/api/anthropic/v1/models?limit=1000")).await;
    assert_eq!(alias["data"], all["data"]);
    let (_, _, sdk) = send(gw.get("/v1/models").header("anthropic-version", "2023-06-01")).await;
    assert_eq!(sdk["data"], all["data"]);
    let (_, _, openai) = send(gw.get("/v1/models")).await;
    assert_eq!(openai["object"], json!("list"));
}

// ------------------------------------------------------------------------ the Anthropic provider

#[tokio::test]
async fn the_provider_sends_its_own_key_version_and_merged_betas() {
    let (mock, gw) = start().await;
    let (status, _, resp) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .header("anthropic-beta", "beta-client,beta-config")
            .header("anthropic-beta", "beta-second")
            .json(&msg("claude-mock", "hello")),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (status, _, resp) = post(&gw, "/v1/messages", &msg("claude-v1", "hello")).await;
    assert_eq!(status, 200, "{resp}");
    let reqs = mock.state.requests_for("POST /v1/messages");
    assert_eq!(reqs.len(), 2);
    let r = &reqs[0];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(
        r.header("x-api-key"),
        Some("sk-upstream-anthropic"),
        "its own key, never the caller's"
    );
    assert_eq!(r.header("authorization"), None);
    assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        r.header("anthropic-beta"),
        Some("beta-config,beta-client,beta-second")
    );
    // A base URL that already ends in /v1 is not doubled; the configured version wins.
    let r = &reqs[1];
    assert_eq!(r.path, "/v1/messages");
    assert_eq!(r.header("anthropic-version"), Some("2024-01-01"));
    assert_eq!(r.header("anthropic-beta"), None);
}

#[tokio::test]
async fn fast_path_forwards_the_body_unchanged_but_for_the_model() {
    let (mock, gw) = start().await;
    let body = json!({
        "model": "claude-tools",
        "max_tokens": 300,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}},
                {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
            ]}
        ],
        "tools": [
            {"name": "f", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "service_tier": "auto",
        "container": "c1",
        "x_vendor": {"nested": [1, {"deep": true}]},
        "top_k": 5
    });
    let (status, h, resp) = post(&gw, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(h.get("x-switchyard-warnings"), None);
    assert_eq!(resp["model"], json!("claude-tools"));
    assert!(resp["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(resp["stop_reason"], json!("tool_use"));
    let up = &mock.state.requests_for("POST /v1/messages")[0].body;
    let mut want = body.clone();
    want["model"] = json!("claude-mock+tools=1");
    assert_eq!(up, &want);
}

#[tokio::test]
async fn paths_and_aliases_reach_the_surface_with_request_ids() {
    let (_mock, gw) = start().await;
    for path in [
        "/v1/messages",
        "/anthropic/v1/messages",
        "/api/anthropic/v1/messages",
        "/api/anthropic/messages",
        "/api/anthropic/v1/v1/messages",
        "/v1/v1/messages",
        "/messages",
    ] {
        let (status, h, resp) = post(&gw, path, &msg("claude-mock", "hi")).await;
        assert_eq!(status, 200, "{path}: {resp}");
        assert_eq!(resp["content"][0]["text"], json!("echo: hi"), "{path}");
        assert_eq!(h.get("request-id"), h.get("x-request-id"), "{path}");
        assert!(h.get("request-id").is_some());
    }
    let (status, _, resp) = post(
        &gw,
        "/api/anthropic/v1/messages/count_tokens",
        &json!({"model": "claude-mock", "messages": [{"role": "user", "content": "a b"}]}),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    // A caller's own request id is kept.
    let resp = gw
        .client
        .post(gw.url("/v1/messages"))
        .header("x-api-key", KEY)
        .header("x-request-id", "trace-123")
        .json(&msg("claude-mock", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["request-id"], "trace-123");
}

// ------------------------------------------------------------------------------ count_tokens

#[tokio::test]
async fn count_tokens_per_kind_of_upstream() {
    let (mock, gw) = start().await;
    let body = json!({
        "model": "claude-mock",
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "one two three four"}]
    });
    let (status, h, resp) = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 200, "{resp}");
    // The mock counts words: 2 + 4.
    assert_eq!(resp, json!({"input_tokens": 6}));
    assert_eq!(h["x-switchyard-token-count"], "exact");
    let up = &mock.state.requests_for("POST /v1/messages/count_tokens")[0];
    assert_eq!(up.body["model"], json!("claude-mock"));
    assert_eq!(up.header("x-api-key"), Some("sk-upstream-anthropic"));

    // OpenAI-compatible upstreams have no counting endpoint: an o200k_base estimate, said so.
    let mut body = body.clone();
    body["model"] = json!("gpt-mock");
    let (status, h, resp) = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(h["x-switchyard-token-count"], "estimate");
    // system: 3 framing + "system" (1) + "Be brief." (3); user: 3 + "user" (1) + 4 words (4); reply 3.
    assert_eq!(resp, json!({"input_tokens": 18}));
    assert_eq!(
        mock.state.count("POST /v1/chat/completions"),
        0,
        "nothing sent to count"
    );

    // Upstream errors keep their mapping on count_tokens too.
    body["model"] = json!("claude-429");
    let (status, h, resp) = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(status, 429, "{resp}");
    assert_eq!(h["retry-after"], "7");
    assert_anthropic_error(&resp, "rate_limit_error");
}

// ------------------------------------------------------------------------------ upstream errors

#[tokio::test]
async fn upstream_errors_map_to_anthropic_types_and_statuses() {
    let (_mock, gw) = start().await;
    let cases: &[(&str, u16, &str)] = &[
        ("claude-429", 429, "rate_limit_error"),
        ("claude-529", 529, "overloaded_error"),
        ("claude-500", 502, "api_error"),
        ("claude-400", 400, "invalid_request_error"),
        ("claude-403", 403, "permission_error"),
        ("gpt-429", 429, "rate_limit_error"),
        ("claude-garbage", 502, "api_error"),
        ("claude-truncate", 502, "api_error"),
    ];
    for (model, want_status, want_type) in cases {
        for stream in [false, true] {
            let mut body = msg(model, "hi");
            if stream {
                body["stream"] = json!(true);
            }
            let (status, h, resp) = post(&gw, "/v1/messages", &body).await;
            if stream && (model.ends_with("garbage") || model.ends_with("truncate")) {
                // These fail mid-stream, checked below.
                continue;
            }
            assert_eq!(status, *want_status, "{model} stream={stream}: {resp}");
            let m = assert_anthropic_error(&resp, want_type);
            if model.starts_with("claude-4") || model.starts_with("claude-5") {
                assert!(
                    m.contains("mock: injected error status"),
                    "the upstream's message is kept: {m}"
                );
            }
            // The first 429 is the upstream's own; it bans the deployment until its Retry-After, so the
            // second is the gateway answering for it with the time left.
            let retry = |h: &HeaderMap| h["retry-after"].to_str().unwrap().parse::<u64>().unwrap();
            match (*model, stream) {
                ("claude-429", false) => assert_eq!(retry(&h), 7),
                ("claude-429", true) => assert!((1..=7).contains(&retry(&h))),
                ("gpt-429", false) => assert_eq!(retry(&h), 3),
                ("gpt-429", true) => assert!((1..=3).contains(&retry(&h))),
                _ => assert!(h.get("retry-after").is_none()),
            }
        }
    }
    // An OpenAI client sees the same upstream failures in its own envelope; overloaded is 503 there.
    let (status, _, resp) = gw
        .chat(&json!({"model": "claude-529", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 503, "{resp}");
    assert!(resp["error"]["message"].is_string());
    // The 429 banned its deployment until its Retry-After: the gateway answers for the upstream, in
    // the caller's dialect, with the time left.
    let (status, h, resp) = gw
        .chat(&json!({"model": "claude-429", "messages": [{"role": "user", "content": "x"}]}))
        .await;
    assert_eq!(status, 429, "{resp}");
    let left: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=7).contains(&left), "{left}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("mock: injected error status")
    );
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn mid_stream_failures_end_the_stream_with_an_error_event() {
    let (_mock, gw) = start().await;
    // (model, error type of the final event)
    let cases = [
        ("claude-error-after", "overloaded_error"),
        ("claude-drop", "api_error"),
        ("claude-garbage", "api_error"),
        ("claude-hang-after", "timeout_error"),
        ("gpt-error-after", "api_error"),
    ];
    for (model, ty) in cases {
        let mut body = msg(model, "hi");
        body["stream"] = json!(true);
        let started = std::time::Instant::now();
        let (status, _, events) = post_stream(&gw, "/v1/messages", &body).await;
        assert_eq!(status, 200, "{model}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{model} took {:?}",
            started.elapsed()
        );
        let n = names(&events);
        assert_eq!(n.last(), Some(&"error"), "{model}: {n:?}");
        assert!(!n.contains(&"message_stop"), "{model}: {n:?}");
        assert_eq!(n.iter().filter(|x| **x == "error").count(), 1, "{model}: {n:?}");
        let (_, data) = events.last().unwrap();
        assert_anthropic_error(data, ty);
    }
    // An OpenAI client reading an Anthropic upstream gets OpenAI's error frame and no [DONE].
    let resp = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "claude-error-after", "stream": true, "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(5), resp.text())
        .await
        .unwrap()
        .unwrap();
    let frames = common::sse_data(&text);
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_eq!(last["error"]["type"], json!("server_error"), "{last}");
    assert!(
        last["error"]["message"].as_str().unwrap().contains("Overloaded"),
        "{last}"
    );
    assert!(!frames.iter().any(|f| f == "[DONE]"));
}

#[tokio::test]
async fn fast_path_streams_are_relayed_event_for_event() {
    let (_mock, gw) = start().await;
    let mut body = msg("claude-tools", "hi");
    body["stream"] = json!(true);
    let (status, h, events) = post_stream(&gw, "/v1/messages", &body).await;
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "text/event-stream; charset=utf-8");
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert_eq!(
        start["model"],
        json!("claude-tools"),
        "the public name, not the upstream's"
    );
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock"));
    for (name, data) in &events {
        assert_eq!(data["type"], json!(name));
    }
}

// ------------------------------------------------------------------------- warnings and refusals

#[tokio::test]
async fn what_another_dialect_cannot_carry_is_listed_as_warnings() {
    let (mock, gw) = start().await;
    let body = json!({
        "model": "gpt-mock",
        "max_tokens": 50,
        "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": "hi"}],
        "container": "c1",
        "top_k": 3
    });
    let (status, h, resp) = post(&gw, "/v1/messages", &body).await;
    assert_eq!(status, 200, "{resp}");
    let header = h["x-switchyard-warnings"].to_str().unwrap().to_string();
    let listed: Vec<&str> = resp["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(listed.join("; "), header);
    assert!(listed.iter().any(|w| w.contains("'container'")), "{listed:?}");
    assert!(listed.iter().any(|w| w.contains("cache_control")), "{listed:?}");
    // What OpenAI-compatible upstreams do take, goes: top_k, the system text.
    let up = &mock.state.requests_for("POST /v1/chat/completions")[0].body;
    assert_eq!(up["top_k"], json!(3));
    assert_eq!(up["messages"][0], json!({"role": "system", "content": "sys"}));
    assert!(up.get("container").is_none());
    // A stream says the same in its header.
    let mut body = body.clone();
    body["stream"] = json!(true);
    let (status, h, events) = post_stream(&gw, "/v1/messages", &body).await;
    assert_eq!(status, 200);
    assert_eq!(h["x-switchyard-warnings"].to_str().unwrap(), header);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
}

#[tokio::test]
async fn openai_fields_anthropic_cannot_honour_are_refused() {
    let (mock, gw) = start().await;
    let base = json!({"model": "claude-mock", "messages": [{"role": "user", "content": "x"}]});
    let cases = [
        ("n", json!(2), "n"),
        ("logprobs", json!(true), "logprobs"),
        ("logit_bias", json!({"50256": -100}), "logit_bias"),
        ("web_search_options", json!({}), "web_search_options"),
    ];
    for (k, v, param) in cases {
        let mut b = base.clone();
        b[k] = v;
        let (status, _, resp) = gw.chat(&b).await;
        assert_eq!(status, 400, "{k}: {resp}");
        assert_eq!(resp["error"]["type"], json!("invalid_request_error"), "{resp}");
        assert_eq!(resp["error"]["param"], json!(param), "{resp}");
    }
    assert_eq!(
        mock.state.count("POST /v1/messages"),
        0,
        "nothing refused went upstream"
    );
    // Warned, not refused: seed.
    let mut b = base.clone();
    b["seed"] = json!(7);
    let (status, h, resp) = gw.chat(&b).await;
    assert_eq!(status, 200, "{resp}");
    assert!(h["x-switchyard-warnings"].to_str().unwrap().contains("seed"));
    assert!(
        resp["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("seed"))
    );
}
