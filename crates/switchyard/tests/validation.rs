//! Black-box: request validation, body limits, auth and request ids, against the real binary.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, KEY, assert_envelope, chat_body, send, standard_config};
use serde_json::{Value, json};

/// One rule: the body is refused with 400, `invalid_request_error`, `param` naming the field, and never
/// reaches the upstream.
async fn assert_rejected(body: Value, param: &str) {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, headers, resp) = gw.chat(&body).await;
    assert_eq!(status, 400, "{body} -> {resp}");
    assert_envelope(&resp, "invalid_request_error", Some(param));
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 0);
}

fn with(field: &str, value: Value) -> Value {
    let mut b = chat_body("gpt-mock", "hi");
    b[field] = value;
    b
}

macro_rules! rejects {
    ($($name:ident: $body:expr => $param:expr;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                assert_rejected($body, $param).await;
            }
        )*
    };
}

rejects! {
    model_missing: json!({"messages": [{"role": "user", "content": "hi"}]}) => "model";
    messages_missing: json!({"model": "gpt-mock"}) => "messages";
    messages_empty: with("messages", json!([])) => "messages";
    messages_not_an_array: with("messages", json!("hi")) => "messages";
    message_not_an_object: with("messages", json!(["hi"])) => "messages[0]";
    message_role_missing: with("messages", json!([{"content": "hi"}])) => "messages[0].role";
    message_role_unknown: with("messages", json!([{"role": "robot", "content": "hi"}])) => "messages[0].role";
    message_content_not_string_or_parts: with("messages", json!([{"role": "user", "content": 42}])) => "messages[0].content";
    message_content_missing_for_user: with("messages", json!([{"role": "user"}])) => "messages[0].content";
    message_content_part_unknown_type: with(
        "messages",
        json!([{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "video", "video": {}}]}])
    ) => "messages[1].content[0].type";
    message_content_text_part_without_text: with("messages", json!([{"role": "user", "content": [{"type": "text"}]}])) => "messages[0].content[0].text";
    tool_message_without_tool_call_id: with("messages", json!([{"role": "tool", "content": "42"}])) => "messages[0].tool_call_id";
    temperature_above_two: with("temperature", json!(3)) => "temperature";
    temperature_below_zero: with("temperature", json!(-0.5)) => "temperature";
    temperature_not_a_number: with("temperature", json!("hot")) => "temperature";
    top_p_above_one: with("top_p", json!(1.5)) => "top_p";
    top_p_below_zero: with("top_p", json!(-0.1)) => "top_p";
    n_zero: with("n", json!(0)) => "n";
    n_not_an_integer: with("n", json!(1.5)) => "n";
    presence_penalty_above_two: with("presence_penalty", json!(2.5)) => "presence_penalty";
    presence_penalty_below_minus_two: with("presence_penalty", json!(-2.5)) => "presence_penalty";
    frequency_penalty_above_two: with("frequency_penalty", json!(3)) => "frequency_penalty";
    frequency_penalty_below_minus_two: with("frequency_penalty", json!(-3)) => "frequency_penalty";
    max_tokens_zero: with("max_tokens", json!(0)) => "max_tokens";
    max_completion_tokens_zero: with("max_completion_tokens", json!(0)) => "max_completion_tokens";
    stop_more_than_four: with("stop", json!(["a", "b", "c", "d", "e"])) => "stop";
    stop_non_string_item: with("stop", json!(["a", 1])) => "stop[1]";
    stop_not_string_or_array: with("stop", json!(7)) => "stop";
    tools_not_an_array: with("tools", json!({"type": "function"})) => "tools";
    tool_without_function: with("tools", json!([{"type": "function"}])) => "tools[0].function";
    tool_unknown_type: with("tools", json!([{"type": "browser"}])) => "tools[0].type";
    tool_bad_function_name: with("tools", json!([{"type": "function", "function": {"name": "has space"}}])) => "tools[0].function.name";
    tool_choice_unknown_string: with("tool_choice", json!("sometimes")) => "tool_choice";
    tool_choice_function_without_name: with("tool_choice", json!({"type": "function", "function": {}})) => "tool_choice.function.name";
    tool_choice_not_string_or_object: with("tool_choice", json!(3)) => "tool_choice";
    response_format_not_an_object: with("response_format", json!("json")) => "response_format";
    response_format_unknown_type: with("response_format", json!({"type": "xml"})) => "response_format.type";
    response_format_json_schema_missing: with("response_format", json!({"type": "json_schema"})) => "response_format.json_schema";
    stream_options_without_stream: with("stream_options", json!({"include_usage": true})) => "stream_options";
    stream_options_with_stream_false: {
        let mut b = with("stream_options", json!({"include_usage": true}));
        b["stream"] = json!(false);
        b
    } => "stream_options";
    stream_not_a_boolean: with("stream", json!("yes")) => "stream";
}

#[tokio::test]
async fn values_on_the_boundaries_are_accepted() {
    let (mock, gw) = Gateway::with_mock().await;
    let mut body = chat_body("gpt-mock", "edge");
    body["temperature"] = json!(2);
    body["top_p"] = json!(0);
    body["n"] = json!(1);
    body["presence_penalty"] = json!(-2);
    body["frequency_penalty"] = json!(2.0);
    body["max_tokens"] = json!(1);
    body["max_completion_tokens"] = json!(1);
    body["stop"] = json!(["a", "b", "c", "d"]);
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    body["tool_choice"] = json!({"type": "function", "function": {"name": "get_weather"}});
    body["response_format"] = json!({"type": "json_object"});
    body["messages"] = json!([
        {"role": "system", "content": "s"},
        {"role": "developer", "content": [{"type": "text", "text": "d"}]},
        {"role": "user", "content": [{"type": "text", "text": "u"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "function", "name": "f", "content": "x"},
        {"role": "user", "content": "edge"}
    ]);
    let (status, _, resp) = gw.chat(&body).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
    // stop as a single string, stream_options with stream
    let mut body = chat_body("gpt-mock", "edge");
    body["stop"] = json!("END");
    let (status, _, resp) = gw.chat(&body).await;
    assert_eq!(status, 200, "{resp}");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, headers, body) = send(
        gw.post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{\"model\": \"gpt-mock\", \"messages\": ["),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let err = assert_envelope(&body, "invalid_request_error", None);
    assert_eq!(err["code"], json!("invalid_json"));
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn non_object_json_is_400() {
    let (_mock, gw) = Gateway::with_mock().await;
    for text in ["[1, 2]", "\"hello\"", "42", "null"] {
        let (status, _, body) = send(
            gw.post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(text),
        )
        .await;
        assert_eq!(status, 400, "{text}: {body}");
        assert_envelope(&body, "invalid_request_error", None);
    }
}

#[tokio::test]
async fn empty_body_is_400() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = send(gw.post("/v1/chat/completions")).await;
    assert_eq!(status, 400, "{body}");
    assert_envelope(&body, "invalid_request_error", None);
}

/// Writes a raw HTTP/1.1 request (ignoring write errors: the server may answer before it read it all)
/// and reads the answer to the end: status and body.
async fn raw_http(addr: &str, request: &[u8]) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16384];
    loop {
        match tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer; got so far: {}", String::from_utf8_lossy(&out)),
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let (mock, gw) = Gateway::with_mock().await;
    let addr = gw.url.trim_start_matches("http://").to_string();
    // The standard config sets max_body_bytes = 65536. A declared length over it is refused at once.
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 70000\r\nconnection: close\r\n\r\n"
    );
    let (status, head, body) = raw_http(&addr, req.as_bytes()).await;
    assert_eq!(status, 413, "{body}");
    let err = assert_envelope(&body, "invalid_request_error", None);
    assert_eq!(err["code"], json!("request_too_large"));
    assert!(head.contains("x-request-id:"), "{head}");
    // Without a content-length (chunked), the limit holds too.
    let json_body = serde_json::to_vec(&chat_body("gpt-mock", &"x".repeat(70_000))).unwrap();
    let mut req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in json_body.chunks(8192) {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let (status, head, body) = raw_http(&addr, &req).await;
    assert_eq!(status, 413, "{body}");
    assert_envelope(&body, "invalid_request_error", None);
    assert!(head.contains("x-request-id:"), "{head}");
    // Just under the limit passes.
    let (status, _, body) = gw.chat(&chat_body("gpt-mock", &"y".repeat(60_000))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
}

#[tokio::test]
async fn unknown_model_is_404_model_not_found() {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, headers, body) = gw.chat(&chat_body("no-such-model", "hi")).await;
    assert_eq!(status, 404, "{body}");
    let err = assert_envelope(&body, "invalid_request_error", Some("model"));
    assert_eq!(err["code"], json!("model_not_found"));
    assert!(err["message"].as_str().unwrap().contains("no-such-model"));
    assert!(headers.contains_key("x-request-id"));
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn missing_key_is_401() {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, headers, body) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let err = assert_envelope(&body, "authentication_error", None);
    assert_eq!(err["code"], json!("missing_api_key"));
    assert!(headers.contains_key("x-request-id"));
    let (status, _, body) = send(gw.client.get(gw.url("/v1/models"))).await;
    assert_eq!(status, 401, "{body}");
    assert_envelope(&body, "authentication_error", None);
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn wrong_key_is_401() {
    let (mock, gw) = Gateway::with_mock().await;
    for req in [
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth("sk-wrong"),
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-api-key", "sk-wrong"),
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", KEY),
    ] {
        let (status, headers, body) = send(req.json(&chat_body("gpt-mock", "hi"))).await;
        assert_eq!(status, 401, "{body}");
        assert_envelope(&body, "authentication_error", None);
        assert!(headers.contains_key("x-request-id"));
    }
    assert_eq!(mock.state.total(), 0);
}

#[tokio::test]
async fn bearer_and_x_api_key_are_both_accepted() {
    let (mock, gw) = Gateway::with_mock().await;
    let body = chat_body("gpt-mock", "hi");
    let (status, _, resp) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("authorization", format!("Bearer {KEY}"))
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    let (status, _, resp) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .header("x-api-key", KEY)
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 2);
    // The gateway's own key never travels upstream: the provider's key does.
    for r in mock.state.requests() {
        assert_eq!(r.header("authorization"), Some("Bearer sk-upstream"));
        assert_eq!(r.header("x-api-key"), None);
    }
}

#[tokio::test]
async fn health_needs_no_auth() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, headers, body) = send(gw.client.get(gw.url("/health"))).await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn every_response_has_an_x_request_id() {
    let (_mock, gw) = Gateway::with_mock().await;
    let id_of = |h: &reqwest::header::HeaderMap| {
        h.get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_default()
    };
    let mut ids = Vec::new();
    // success
    let (status, h, _) = gw.chat(&chat_body("gpt-mock", "hi")).await;
    assert_eq!(status, 200);
    ids.push(id_of(&h));
    // validation error
    let (status, h, _) = gw.chat(&json!({"model": "gpt-mock"})).await;
    assert_eq!(status, 400);
    ids.push(id_of(&h));
    // auth error
    let (status, h, _) = send(gw.client.get(gw.url("/v1/models"))).await;
    assert_eq!(status, 401);
    ids.push(id_of(&h));
    // unknown route
    let (status, h, body) = send(gw.get("/v1/nothing/here")).await;
    assert_eq!(status, 404, "{body}");
    assert_envelope(&body, "invalid_request_error", None);
    ids.push(id_of(&h));
    // stream
    let mut b = chat_body("gpt-mock", "hi");
    b["stream"] = json!(true);
    let (status, h, frames) = gw.chat_stream(&b).await;
    assert_eq!(status, 200);
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    ids.push(id_of(&h));
    // upstream error
    let (status, h, _) = gw.chat(&chat_body("gpt-500", "hi")).await;
    assert_eq!(status, 502);
    ids.push(id_of(&h));
    for id in &ids {
        assert!(!id.is_empty(), "a response without x-request-id: {ids:?}");
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "request ids repeat: {ids:?}");
    // A caller's own id is echoed back.
    let (_, h, _) = send(
        gw.post("/v1/chat/completions")
            .header("x-request-id", "trace-abc-123")
            .json(&chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(id_of(&h), "trace-abc-123");
}

#[tokio::test]
async fn wrong_method_is_405_in_the_envelope() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, h, body) = send(gw.get("/v1/chat/completions")).await;
    assert_eq!(status, 405, "{body}");
    assert_envelope(&body, "invalid_request_error", None);
    assert!(h.contains_key("x-request-id"));
}

#[tokio::test]
async fn open_server_on_loopback_needs_no_key() {
    let mock = mock_upstream::MockServer::start().await.unwrap();
    let config = standard_config(&mock.base_url()).replace(&format!("master_key = \"{KEY}\""), "");
    let gw = Gateway::start(&config).await;
    let (status, _, body) = send(
        gw.client
            .post(gw.url("/v1/chat/completions"))
            .json(&chat_body("gpt-mock", "hi")),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn odd_inputs_never_produce_a_server_error() {
    let (_mock, gw) = Gateway::with_mock().await;
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let raw: Vec<Vec<u8>> = vec![
        b"\xff\xfe{not utf-8}".to_vec(),
        deep.into_bytes(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "n": 1e400}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 18446744073709551616}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "temperature": null, "stop": null}"#.to_vec(),
        br#"{"model": 5, "messages": [{"role": "user", "content": "hi"}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": []}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "assistant"}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi", "name": 5}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"abc": 1}}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "logit_bias": {"5": 1000}}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": 5}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": "yes"}}"#.to_vec(),
        br#"{"model": "gpt-mock+status=500", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec(),
        br#"{"model": "", "messages": [{"role": "user", "content": "hi"}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "\u0000\ud83d\ude00"}]}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "model": "gpt-tools"}"#.to_vec(),
        br#"{"model": "gpt-mock", "messages": [{"role": "user", "content": "hi"}], "tools": [], "tool_choice": "none"}"#.to_vec(),
    ];
    for body in raw {
        let (status, headers, resp) = send(
            gw.post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(body.clone()),
        )
        .await;
        let shown = String::from_utf8_lossy(&body[..body.len().min(160)]).into_owned();
        assert!(status.as_u16() < 500, "{shown} -> {status} {resp}");
        assert!(headers.contains_key("x-request-id"));
        if status.is_client_error() {
            assert_envelope(
                &resp,
                resp["error"]["type"].as_str().unwrap_or("?"),
                resp["error"]["param"].as_str(),
            );
        }
    }
}
