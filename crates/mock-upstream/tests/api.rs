//! End-to-end tests over a real socket, with a tiny raw HTTP/1.1 client so faults
//! (cut chunked bodies, truncation) are observable exactly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use mock_upstream::{MockServer, MockState};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Body framing completed (terminal chunk / full content-length).
    complete: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }
}

fn decode_chunked(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size_str = std::str::from_utf8(&raw[..pos]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[pos + 2..];
        if size == 0 {
            return (out, raw.starts_with(b"\r\n"));
        }
        if raw.len() < size + 2 {
            out.extend_from_slice(&raw[..raw.len().min(size)]);
            return (out, false);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

async fn request(mock: &MockServer, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Resp {
    let mut s = TcpStream::connect(mock.addr).await.unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\n",
        mock.addr
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!(
            "content-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("no header end");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let rest = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    let (body, complete) = if chunked {
        decode_chunked(rest)
    } else if let Some((_, cl)) = headers.iter().find(|(k, _)| k == "content-length") {
        let cl: usize = cl.parse().unwrap();
        (rest.to_vec(), rest.len() == cl)
    } else {
        (rest.to_vec(), true)
    };
    Resp {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        complete,
    }
}

async fn post(mock: &MockServer, path: &str, body: &Value) -> Resp {
    request(mock, "POST", path, &[], &body.to_string()).await
}

fn chat(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": text}
    ]})
}

/// OpenAI SSE: every event is exactly `data: ...\n\n`; returns the payloads.
fn openai_events(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("\n\n"),
        "body must end with a blank line: {body:?}"
    );
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|ev| {
            assert!(!ev.contains('\n'), "one line per event: {ev:?}");
            ev.strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad line {ev:?}"))
                .to_string()
        })
        .collect()
}

/// Anthropic SSE: `event: T\ndata: {...}\n\n`; returns (event, data).
fn anthropic_events(body: &str) -> Vec<(String, Value)> {
    body.trim_end_matches("\n\n")
        .split("\n\n")
        .map(|ev| {
            let (e, d) = ev.split_once('\n').unwrap();
            let e = e.strip_prefix("event: ").unwrap().to_string();
            let d: Value = serde_json::from_str(d.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(d["type"], e.as_str(), "event name matches data.type");
            (e, d)
        })
        .collect()
}

#[tokio::test]
async fn chat_json() {
    let mock = MockServer::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat("mock-ok+cache=2", "hello  big world", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-mock"));
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "mock-ok+cache=2");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], "echo: hello  big world");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(v["usage"]["prompt_tokens"], 5);
    assert_eq!(v["usage"]["completion_tokens"], 4);
    assert_eq!(v["usage"]["total_tokens"], 9);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 2);

    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat("m+tokens=3+finish=length+thinking", "x", false),
    )
    .await;
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], "w1 w2 w3");
    assert_eq!(
        v["choices"][0]["message"]["reasoning_content"],
        mock_upstream::REASONING_TEXT
    );
    assert_eq!(v["choices"][0]["finish_reason"], "length");

    // Without the /v1 prefix, options by header, tools non-stream.
    let r = request(
        &mock,
        "POST",
        "/chat/completions",
        &[("x-mock-tools", "2"), ("x-mock-notext", "1")],
        &json!({"model": "gpt", "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "function", "function": {"name": "a"}},
                          {"type": "function", "function": {"name": "b"}}]})
        .to_string(),
    )
    .await;
    let v = r.json();
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["content"], Value::Null);
    assert_eq!(msg["tool_calls"][1]["function"]["name"], "b");
    let args: Value =
        serde_json::from_str(msg["tool_calls"][1]["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "Paris", "unit": "celsius", "i": 1}));
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 3);
}

#[tokio::test]
async fn sse_framing_and_usage_chunk() {
    let mock = MockServer::start().await.unwrap();
    let r = post(&mock, "/v1/chat/completions", &chat("m", "one two three", true)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    assert!(r.complete);
    let evs = openai_events(&r.body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = evs[..evs.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let (id, created) = (chunks[0]["id"].clone(), chunks[0]["created"].clone());
    let mut text = String::new();
    for c in &chunks {
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["id"], id);
        assert_eq!(c["created"], created);
        assert!(c.get("usage").is_none(), "no usage key without include_usage");
        if let Some(t) = c["choices"][0]["delta"]["content"].as_str() {
            text.push_str(t);
        }
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(text, "echo: one two three");
    assert_eq!(chunks.len(), 1 + 4 + 1); // role + 4 words + finish
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");

    let mut body = chat("m+tokens=4", "x", true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&mock, "/v1/chat/completions", &body).await;
    let evs = openai_events(&r.body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let last: Value = serde_json::from_str(&evs[evs.len() - 2]).unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"], 4);
    assert_eq!(last["usage"]["prompt_tokens"], 3);
    let first: Value = serde_json::from_str(&evs[0]).unwrap();
    assert_eq!(first["usage"], Value::Null);

    // Legacy completions stream.
    let r = post(
        &mock,
        "/v1/completions",
        &json!({"model": "m+tokens=2", "prompt": "p", "stream": true}),
    )
    .await;
    let evs = openai_events(&r.body);
    assert_eq!(evs.last().unwrap(), "[DONE]");
    let texts: String = evs[..evs.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["choices"][0]["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(texts, "w1 w2");
}

#[tokio::test]
async fn tool_stream_pieces_reassemble() {
    let mock = MockServer::start().await.unwrap();
    for model in ["m+tools=3", "m+tools=3+interleave"] {
        let mut body = chat(model, "weather?", true);
        body["tools"] = json!([{"type": "function", "function": {"name": "lookup"}}]);
        let r = post(&mock, "/v1/chat/completions", &body).await;
        let evs = openai_events(&r.body);
        let mut args = vec![String::new(); 3];
        let mut pieces = [0; 3];
        let mut order = Vec::new();
        let mut finish = None;
        for e in &evs[..evs.len() - 1] {
            let c: Value = serde_json::from_str(e).unwrap();
            if let Some(f) = c["choices"][0]["finish_reason"].as_str() {
                finish = Some(f.to_string());
            }
            let Some(calls) = c["choices"][0]["delta"]["tool_calls"].as_array() else {
                continue;
            };
            for call in calls {
                let k = call["index"].as_u64().unwrap() as usize;
                order.push(k);
                if let Some(id) = call.get("id") {
                    assert!(id.as_str().unwrap().starts_with("call_"));
                    assert_eq!(call["type"], "function");
                    assert_eq!(call["function"]["name"], "lookup");
                    assert_eq!(call["function"]["arguments"], "");
                    assert!(args[k].is_empty(), "header comes first");
                } else {
                    pieces[k] += 1;
                }
                args[k].push_str(call["function"]["arguments"].as_str().unwrap());
            }
        }
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        for (k, a) in args.iter().enumerate() {
            let v: Value = serde_json::from_str(a).unwrap();
            assert_eq!(v, json!({"city": "Paris", "unit": "celsius", "i": k}));
            assert!(pieces[k] >= 3);
        }
        let interleaved = order.windows(2).filter(|w| w[0] != w[1]).count() > 2;
        assert_eq!(interleaved, model.contains("interleave"), "{model}: {order:?}");
    }
}

#[tokio::test]
async fn anthropic_stream_event_order() {
    let mock = MockServer::start().await.unwrap();
    let body = json!({"model": "claude+thinking+tools=1+cache=1", "max_tokens": 100, "stream": true,
        "system": "sys prompt",
        "tools": [{"name": "get_time", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "what time"}]}]});
    let r = post(&mock, "/v1/messages", &body).await;
    assert_eq!(r.status, 200);
    let evs = anthropic_events(&r.body);
    let names: Vec<&str> = evs.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(names[..3], ["message_start", "content_block_start", "ping"]);
    assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
    let start = &evs[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_mock"));
    assert_eq!(start["model"], "claude+thinking+tools=1+cache=1");
    assert_eq!(start["usage"]["input_tokens"], 3); // 4 words - 1 cached
    assert_eq!(start["usage"]["cache_read_input_tokens"], 1);
    assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);

    // Blocks: thinking(0), text(1), tool_use(2); deltas only between start/stop of their index.
    let mut open: Option<u64> = None;
    let mut kinds = Vec::new();
    let (mut thinking, mut sig, mut text, mut json_in) =
        (String::new(), String::new(), String::new(), String::new());
    for (e, d) in &evs {
        match e.as_str() {
            "content_block_start" => {
                assert!(open.is_none());
                open = Some(d["index"].as_u64().unwrap());
                assert_eq!(d["index"], kinds.len());
                kinds.push(d["content_block"]["type"].as_str().unwrap().to_string());
                if kinds.last().unwrap() == "tool_use" {
                    assert!(d["content_block"]["id"].as_str().unwrap().starts_with("toolu_"));
                    assert_eq!(d["content_block"]["name"], "get_time");
                    assert_eq!(d["content_block"]["input"], json!({}));
                }
            }
            "content_block_delta" => {
                assert_eq!(Some(d["index"].as_u64().unwrap()), open);
                let delta = &d["delta"];
                match delta["type"].as_str().unwrap() {
                    "thinking_delta" => thinking.push_str(delta["thinking"].as_str().unwrap()),
                    "signature_delta" => sig.push_str(delta["signature"].as_str().unwrap()),
                    "text_delta" => text.push_str(delta["text"].as_str().unwrap()),
                    "input_json_delta" => json_in.push_str(delta["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                assert_eq!(Some(d["index"].as_u64().unwrap()), open);
                open = None;
            }
            "message_delta" => {
                assert_eq!(d["delta"]["stop_reason"], "tool_use");
                assert_eq!(
                    d["usage"]["output_tokens"],
                    mock_upstream::words(mock_upstream::REASONING_TEXT) + 3 + 1
                );
            }
            _ => {}
        }
    }
    assert_eq!(kinds, ["thinking", "text", "tool_use"]);
    assert_eq!(thinking, mock_upstream::REASONING_TEXT);
    assert!(!sig.is_empty());
    assert_eq!(text, "Let me check.");
    assert_eq!(
        serde_json::from_str::<Value>(&json_in).unwrap(),
        json!({"city": "Paris", "unit": "celsius", "i": 0})
    );

    // Non-stream with redacted thinking and plain echo.
    let body = json!({"model": "claude+thinking+redacted", "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi there"}]});
    let v = post(&mock, "/v1/messages", &body).await.json();
    assert_eq!(v["type"], "message");
    let types: Vec<&str> = v["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["thinking", "redacted_thinking", "text"]);
    assert_eq!(v["content"][2]["text"], "echo: hi there");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["usage"]["input_tokens"], 2);

    // max_tokens is required, as upstream.
    let r = post(&mock, "/v1/messages", &json!({"model": "c", "messages": []})).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");

    let v = post(
        &mock,
        "/v1/messages/count_tokens",
        &json!({"model": "c", "system": "a b",
        "messages": [{"role": "user", "content": "c d e"}]}),
    )
    .await
    .json();
    assert_eq!(v, json!({"input_tokens": 5}));
}

#[tokio::test]
async fn status_and_retry_after() {
    let mock = MockServer::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat("m+status=429+retry_after=7", "x", true),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let v = r.json();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"].is_string());
    assert!(v["error"].get("param").is_some());

    let r = request(
        &mock,
        "POST",
        "/v1/messages",
        &[("x-mock-status", "529")],
        r#"{"model":"c"}"#,
    )
    .await;
    assert_eq!(r.status, 529);
    assert_eq!(r.header("retry-after"), None);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");

    let r = post(&mock, "/v1/chat/completions", &chat("m+status=500", "x", false)).await;
    assert_eq!(r.json()["error"]["type"], "server_error");

    // Malformed JSON → 400 in each dialect.
    let r = request(&mock, "POST", "/v1/chat/completions", &[], "{nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["type"], "invalid_request_error");
    let r = request(&mock, "POST", "/v1/messages", &[], "{nope").await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["type"], "error");
}

#[tokio::test]
async fn drop_after_cuts_the_stream() {
    let mock = MockServer::start().await.unwrap();
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat("m+drop_after=2", "a b c d e", true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(!r.complete, "chunked body must be cut");
    assert!(!r.body.contains("[DONE]"));
    let evs = openai_events(&r.body);
    assert_eq!(evs.len(), 3, "role chunk + 2 content chunks: {evs:?}");

    let body = json!({"model": "c+drop_after=1", "max_tokens": 5, "stream": true,
        "messages": [{"role": "user", "content": "a b c"}]});
    let r = post(&mock, "/v1/messages", &body).await;
    assert!(!r.complete);
    assert!(!r.body.contains("message_stop"));
    let deltas = anthropic_events(&r.body)
        .iter()
        .filter(|(e, _)| e == "content_block_delta")
        .count();
    assert_eq!(deltas, 1);

    // Non-stream: body cut mid-way.
    let r = post(&mock, "/v1/chat/completions", &chat("m+drop_after=0", "a", false)).await;
    assert!(!r.complete);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());

    // hang_after: N chunks then stall; the client gives up.
    let body = chat("m+hang_after=1", "a b", true);
    let fut = post(&mock, "/v1/chat/completions", &body);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fut)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn garbage_truncate_hang_and_delays() {
    let mock = MockServer::start().await.unwrap();
    let r = post(&mock, "/v1/chat/completions", &chat("m+garbage", "a", false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.body, "<html>upstream exploded</html>");

    let r = post(&mock, "/v1/chat/completions", &chat("m+garbage", "a b", true)).await;
    assert!(r.body.contains("\n\ndata: this is not json\n\n"));
    assert!(r.body.ends_with("data: [DONE]\n\n"));

    let r = post(&mock, "/v1/chat/completions", &chat("m+truncate", "a b", false)).await;
    assert_eq!(r.status, 200);
    assert!(r.complete && r.header("content-length").is_none());
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    assert!(r.body.starts_with("{\"id\":\"chatcmpl-mock"));

    let r = post(&mock, "/v1/chat/completions", &chat("m+echo_request", "a", false)).await;
    let echoed: Value =
        serde_json::from_str(r.json()["choices"][0]["message"]["content"].as_str().unwrap()).unwrap();
    assert_eq!(echoed, chat("m+echo_request", "a", false));

    let t0 = std::time::Instant::now();
    let r = post(
        &mock,
        "/v1/chat/completions",
        &chat("m+ttfb=100+delay=20+tokens=5", "a", true),
    )
    .await;
    assert!(r.complete);
    assert!(
        t0.elapsed() >= Duration::from_millis(100 + 20 * 5),
        "{:?}",
        t0.elapsed()
    );

    let body = chat("m+hang", "a", false);
    let fut = post(&mock, "/v1/chat/completions", &body);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), fut)
            .await
            .is_err()
    );

    // Shutting down releases hanging requests.
    let addr = mock.addr;
    let waiter = tokio::spawn(async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let body = chat("m+hang", "a", false).to_string();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v).await;
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    mock.shutdown().await;
    tokio::time::timeout(Duration::from_secs(3), waiter)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn counts_recording_stats_and_reset() {
    let mock = MockServer::start().await.unwrap();
    assert!(mock.base_url().starts_with("http://127.0.0.1:"));
    request(
        &mock,
        "POST",
        "/v1/chat/completions",
        &[("X-Custom-Thing", "Yes")],
        &chat("m", "hi", false).to_string(),
    )
    .await;
    request(&mock, "POST", "/messages", &[], "not json").await;
    request(&mock, "GET", "/v1/models", &[], "").await;
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 1);
    assert_eq!(mock.state.count("POST /v1/messages"), 1);
    assert_eq!(mock.state.count("GET /v1/models"), 1);
    let reqs = mock.state.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].route, "POST /v1/chat/completions");
    assert_eq!(reqs[0].header("x-custom-thing"), Some("Yes"));
    assert!(reqs[0].headers.contains_key("x-custom-thing"));
    assert_eq!(reqs[0].body["messages"][1]["content"], "hi");
    assert_eq!(reqs[1].body, json!("not json"));
    assert_eq!(reqs[1].path, "/messages");

    let stats = request(&mock, "GET", "/_mock/stats", &[], "").await.json();
    assert_eq!(stats["counts"]["POST /v1/chat/completions"], 1);
    assert_eq!(stats["requests"].as_array().unwrap().len(), 3);
    assert_eq!(
        mock.state.count("GET /_mock/stats"),
        0,
        "control routes are not recorded"
    );

    let r = request(&mock, "POST", "/_mock/reset", &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(mock.state.count("POST /v1/chat/completions"), 0);
    assert!(mock.state.requests().is_empty());

    let models = request(&mock, "GET", "/v1/models", &[], "").await.json();
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][0]["object"], "model");
    let one = request(&mock, "GET", "/v1/models/gpt-x", &[], "").await.json();
    assert_eq!(one["id"], "gpt-x");
    assert_eq!(mock.state.count("GET /v1/models/{id}"), 1);
}

#[tokio::test]
async fn require_key() {
    let mock = MockServer::start_with_state(MockState::with_require_key("sekret"))
        .await
        .unwrap();
    let body = chat("m", "x", false).to_string();
    let r = request(&mock, "POST", "/v1/chat/completions", &[], &body).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = request(
        &mock,
        "POST",
        "/v1/chat/completions",
        &[("authorization", "Bearer sekret")],
        &body,
    )
    .await;
    assert_eq!(r.status, 200);
    let ab =
        json!({"model": "c", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}).to_string();
    let r = request(&mock, "POST", "/v1/messages", &[("x-api-key", "wrong")], &ab).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["type"], "authentication_error");
    let r = request(&mock, "POST", "/v1/messages", &[("x-api-key", "sekret")], &ab).await;
    assert_eq!(r.status, 200);
    let r = request(
        &mock,
        "POST",
        "/v1/messages",
        &[("authorization", "Bearer sekret")],
        &ab,
    )
    .await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn embeddings_float_and_base64() {
    use base64::Engine as _;
    let mock = MockServer::start().await.unwrap();
    let v = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "e", "input": ["a b", "c"]}),
    )
    .await
    .json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][1]["index"], 1);
    assert_eq!(v["usage"]["prompt_tokens"], 3);
    let floats: Vec<f32> = v["data"][0]["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(floats.len(), 8);
    assert_eq!(floats, mock_upstream::embedding_for_text("a b", 8));

    let v = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "e", "input": "a b", "dimensions": 16,
        "encoding_format": "base64"}),
    )
    .await
    .json();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"][0]["embedding"].as_str().unwrap())
        .unwrap();
    let decoded: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(decoded, mock_upstream::embedding_for_text("a b", 16));

    let v = post(
        &mock,
        "/v1/embeddings",
        &json!({"model": "e", "input": [[1, 2, 3], [4]]}),
    )
    .await
    .json();
    assert_eq!(v["usage"]["prompt_tokens"], 4);
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
}
