//! Black-box: what travels upstream, what comes back, streams, upstream failure modes, cancellation and
//! concurrency — the real binary in front of an in-process `mock-upstream`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Gateway, assert_envelope, chat_body, joined_content, sse_data, standard_config};
use futures::StreamExt;
use mock_upstream::MockServer;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const CHAT: &str = "POST /v1/chat/completions";

fn streaming(model: &str, text: &str) -> Value {
    let mut b = chat_body(model, text);
    b["stream"] = json!(true);
    b
}

fn parse(frames: &[String]) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f.as_str() != "[DONE]")
        .map(|f| serde_json::from_str(f).unwrap_or_else(|e| panic!("frame {f} is not JSON: {e}")))
        .collect()
}

fn upstream_body(mock: &MockServer) -> Value {
    let reqs = mock.state.requests_for(CHAT);
    assert_eq!(reqs.len(), 1, "expected one upstream call");
    reqs[0].body.clone()
}

// ------------------------------------------------------------------ what goes upstream

#[tokio::test]
async fn unknown_fields_pass_upstream_unchanged_and_the_model_is_rewritten() {
    let (mock, gw) = Gateway::with_mock().await;
    let mut body = chat_body("gpt-mock", "hello there");
    body["top_k"] = json!(40);
    body["x_vendor_flag"] = json!({"nested": [1, 2, {"deep": "yes"}], "f": 1.5});
    body["metadata"] = json!({"trace": "abc"});
    body["temperature"] = json!(0.7);
    body["messages"][0]["x_part_extra"] = json!("kept");
    let (status, _, resp) = gw.chat(&body).await;
    assert_eq!(status, 200, "{resp}");
    let up = upstream_body(&mock);
    assert_eq!(
        up["model"],
        json!("mock-ok"),
        "model rewritten to the upstream name"
    );
    for k in ["top_k", "x_vendor_flag", "metadata", "temperature", "messages"] {
        assert_eq!(up[k], body[k], "`{k}` changed on its way upstream");
    }
    let up_obj = up.as_object().unwrap();
    let mut expected: Vec<&String> = body.as_object().unwrap().keys().collect();
    let mut got: Vec<&String> = up_obj.keys().collect();
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "the upstream got other fields than the client sent"
    );
}

#[tokio::test]
async fn include_usage_is_forced_upstream_and_hidden_from_clients_that_did_not_ask() {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, _, frames) = gw.chat_stream(&streaming("gpt-mock", "no usage please")).await;
    assert_eq!(status, 200);
    let up = upstream_body(&mock);
    assert_eq!(up["stream_options"]["include_usage"], json!(true), "{up}");
    assert_eq!(up["stream"], json!(true));
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    for chunk in parse(&frames) {
        assert!(
            chunk.get("usage").is_none_or(Value::is_null),
            "a usage chunk reached a client that did not ask: {chunk}"
        );
        assert!(
            !chunk["choices"].as_array().unwrap().is_empty(),
            "an empty-choices chunk reached a client that did not ask for usage: {chunk}"
        );
    }
    assert_eq!(joined_content(&frames), "echo: no usage please");
}

#[tokio::test]
async fn the_usage_chunk_is_shown_when_the_client_asks() {
    let (mock, gw) = Gateway::with_mock().await;
    let mut body = streaming("gpt-mock", "count my tokens");
    body["stream_options"] = json!({"include_usage": true});
    let (status, _, frames) = gw.chat_stream(&body).await;
    assert_eq!(status, 200);
    assert_eq!(
        upstream_body(&mock)["stream_options"]["include_usage"],
        json!(true)
    );
    let chunks = parse(&frames);
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]), "{last}");
    assert_eq!(last["usage"]["prompt_tokens"], json!(3), "{last}");
    assert_eq!(last["usage"]["completion_tokens"], json!(4), "{last}");
    assert_eq!(last["usage"]["total_tokens"], json!(7), "{last}");
    assert_eq!(
        chunks.iter().filter(|c| c["usage"].is_object()).count(),
        1,
        "exactly one usage chunk"
    );
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn non_streaming_requests_carry_no_stream_options_upstream() {
    let (mock, gw) = Gateway::with_mock().await;
    let (status, _, _) = gw.chat(&chat_body("gpt-mock", "plain")).await;
    assert_eq!(status, 200);
    let up = upstream_body(&mock);
    assert!(up.get("stream_options").is_none(), "{up}");
}

// ------------------------------------------------------------------ what comes back

#[tokio::test]
async fn a_response_carries_the_public_model_name_id_and_usage() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, headers, resp) = gw.chat(&chat_body("gpt-mock", "who am I")).await;
    assert_eq!(status, 200, "{resp}");
    assert_eq!(resp["model"], json!("gpt-mock"), "{resp}");
    assert_eq!(resp["object"], json!("chat.completion"));
    assert!(resp["id"].as_str().is_some_and(|s| !s.is_empty()), "{resp}");
    assert_eq!(resp["choices"][0]["message"]["content"], json!("echo: who am I"));
    assert_eq!(resp["choices"][0]["message"]["role"], json!("assistant"));
    assert_eq!(resp["choices"][0]["finish_reason"], json!("stop"));
    assert_eq!(resp["usage"]["prompt_tokens"], json!(3));
    assert_eq!(resp["usage"]["completion_tokens"], json!(4));
    assert_eq!(resp["usage"]["total_tokens"], json!(7));
    assert!(
        headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(headers.get("x-switchyard-provider").unwrap(), "mock");
}

#[tokio::test]
async fn a_stream_has_one_id_the_public_model_and_ends_with_done() {
    let (_mock, gw) = Gateway::with_mock().await;
    let mut body = streaming("gpt-mock", "one two three four");
    body["stream_options"] = json!({"include_usage": true});
    let (status, headers, frames) = gw.chat_stream(&body).await;
    assert_eq!(status, 200);
    assert!(
        headers
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(frames.iter().filter(|f| f.as_str() == "[DONE]").count(), 1);
    let chunks = parse(&frames);
    assert!(chunks.len() >= 6, "{frames:?}");
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    for c in &chunks {
        assert_eq!(c["id"], json!(id), "every chunk has the same id: {c}");
        assert_eq!(c["model"], json!("gpt-mock"), "{c}");
        assert_eq!(c["object"], json!("chat.completion.chunk"), "{c}");
    }
    assert_eq!(joined_content(&frames), "echo: one two three four");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/finish_reason"))
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("stop")]);
}

#[tokio::test]
async fn tool_calls_come_back_in_both_modes() {
    let (_mock, gw) = Gateway::with_mock().await;
    let mut body = chat_body("gpt-tools", "weather in Paris?");
    body["tools"] =
        json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    let (status, _, resp) = gw.chat(&body).await;
    assert_eq!(status, 200, "{resp}");
    let call = &resp["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], json!("get_weather"), "{resp}");
    assert_eq!(resp["choices"][0]["finish_reason"], json!("tool_calls"));
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args["city"], json!("Paris"));

    body["stream"] = json!(true);
    let (status, _, frames) = gw.chat_stream(&body).await;
    assert_eq!(status, 200);
    let mut name = String::new();
    let mut arguments = String::new();
    for c in parse(&frames) {
        if let Some(tc) = c.pointer("/choices/0/delta/tool_calls/0") {
            if let Some(n) = tc.pointer("/function/name").and_then(Value::as_str) {
                name.push_str(n);
            }
            if let Some(a) = tc.pointer("/function/arguments").and_then(Value::as_str) {
                arguments.push_str(a);
            }
        }
    }
    assert_eq!(name, "get_weather");
    assert_eq!(
        serde_json::from_str::<Value>(&arguments).unwrap()["city"],
        json!("Paris")
    );
}

// ------------------------------------------------------------------ upstream failure modes

#[tokio::test]
async fn upstream_429_keeps_status_message_and_retry_after() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, headers, body) = gw.chat(&chat_body("gpt-429", "hi")).await;
    assert_eq!(status, 429, "{body}");
    let err = assert_envelope(&body, "rate_limit_error", None);
    assert_eq!(err["message"], json!("mock: injected error status 429"));
    assert_eq!(err["code"], json!("rate_limit_exceeded"));
    assert_eq!(headers.get("retry-after").unwrap(), "7");
    assert!(headers.contains_key("x-request-id"));
}

#[tokio::test]
async fn upstream_429_on_a_stream_is_an_http_error_not_an_event() {
    let (_mock, gw) = Gateway::with_mock().await;
    let resp = gw
        .post("/v1/chat/completions")
        .json(&streaming("gpt-429", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers().get("retry-after").unwrap(), "7");
    let body: Value = resp.json().await.unwrap();
    assert_envelope(&body, "rate_limit_error", None);
}

#[tokio::test]
async fn upstream_400_keeps_status_and_message() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = gw.chat(&chat_body("gpt-400", "hi")).await;
    assert_eq!(status, 400, "{body}");
    let err = assert_envelope(&body, "invalid_request_error", None);
    assert_eq!(err["message"], json!("mock: injected error status 400"));
}

#[tokio::test]
async fn upstream_500_becomes_502() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = gw.chat(&chat_body("gpt-500", "hi")).await;
    assert_eq!(status, 502, "{body}");
    let err = assert_envelope(&body, "server_error", None);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("injected error status 500"),
        "{body}"
    );
}

#[tokio::test]
async fn upstream_non_json_body_becomes_502() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = gw.chat(&chat_body("gpt-garbage", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_envelope(&body, "server_error", None);
}

#[tokio::test]
async fn upstream_truncated_json_becomes_502() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = gw.chat(&chat_body("gpt-truncate", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_envelope(&body, "server_error", None);
}

#[tokio::test]
async fn upstream_that_hangs_past_timeout_ms_becomes_504() {
    let (_mock, gw) = Gateway::with_mock().await;
    let start = Instant::now();
    let (status, _, body) = gw.chat(&chat_body("gpt-hang", "hi")).await;
    assert_eq!(status, 504, "{body}");
    assert_envelope(&body, "server_error", None);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    // The same for a stream whose headers never come.
    let (status, _, body) =
        common::send(gw.post("/v1/chat/completions").json(&streaming("gpt-hang", "hi"))).await;
    assert_eq!(status, 504, "{body}");
    assert_envelope(&body, "server_error", None);
}

#[tokio::test]
async fn connection_refused_becomes_502() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, body) = gw.chat(&chat_body("gpt-refused", "hi")).await;
    assert_eq!(status, 502, "{body}");
    assert_envelope(&body, "server_error", None);
    let (status, _, body) = common::send(
        gw.post("/v1/chat/completions")
            .json(&streaming("gpt-refused", "hi")),
    )
    .await;
    assert_eq!(status, 502, "{body}");
}

/// A stream broken upstream: 200, some content, then an OpenAI error event, and the body ends.
async fn assert_stream_ends_with_error_event(model: &str) {
    let (_mock, gw) = Gateway::with_mock().await;
    let start = Instant::now();
    let (status, _, frames) = gw.chat_stream(&streaming(model, "hi")).await;
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert_eq!(status, 200);
    let last = frames.last().expect("some frames");
    let err: Value = serde_json::from_str(last).unwrap_or_else(|_| panic!("last frame {last}"));
    assert_envelope(&err, "server_error", None);
    assert!(
        !frames.iter().any(|f| f == "[DONE]"),
        "a broken stream must not look complete: {frames:?}"
    );
    assert!(
        joined_content(&frames).starts_with("w1 w2"),
        "content before the break is relayed: {frames:?}"
    );
}

#[tokio::test]
async fn idle_gap_longer_than_idle_timeout_mid_stream_ends_with_error_event() {
    assert_stream_ends_with_error_event("gpt-hang-after").await;
}

#[tokio::test]
async fn dropped_connection_mid_stream_ends_with_error_event() {
    assert_stream_ends_with_error_event("gpt-drop").await;
}

#[tokio::test]
async fn upstream_error_event_mid_stream_ends_with_error_event() {
    assert_stream_ends_with_error_event("gpt-error-after").await;
}

#[tokio::test]
async fn non_json_event_mid_stream_ends_with_error_event() {
    let (_mock, gw) = Gateway::with_mock().await;
    let (status, _, frames) = gw.chat_stream(&streaming("gpt-garbage", "hi")).await;
    assert_eq!(status, 200);
    let last: Value = serde_json::from_str(frames.last().unwrap()).unwrap();
    assert_envelope(&last, "server_error", None);
}

// ------------------------------------------------------------------ cancellation

/// A TCP tap between the gateway and the mock: counts connections the gateway closed and bytes the
/// mock sent.
struct Tap {
    addr: SocketAddr,
    closed_by_gateway: Arc<AtomicU64>,
    bytes_from_upstream: Arc<AtomicU64>,
}

async fn tap(upstream: SocketAddr) -> Tap {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let closed = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let (c, b) = (closed.clone(), bytes.clone());
    tokio::spawn(async move {
        while let Ok((down, _)) = listener.accept().await {
            let up = TcpStream::connect(upstream).await.unwrap();
            let (mut dr, mut dw) = down.into_split();
            let (mut ur, mut uw) = up.into_split();
            let c = c.clone();
            let b = b.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                loop {
                    match dr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if uw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                c.fetch_add(1, Ordering::SeqCst);
                let _ = uw.shutdown().await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                loop {
                    match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            b.fetch_add(n as u64, Ordering::SeqCst);
                            if dw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Tap {
        addr,
        closed_by_gateway: closed,
        bytes_from_upstream: bytes,
    }
}

/// A gateway whose model `gpt-tapped` (upstream model `upstream_model`) reaches the mock through a
/// [`tap`].
async fn tapped_gateway(upstream_model: &str) -> (MockServer, Tap, Gateway) {
    let mock = MockServer::start().await.unwrap();
    let tap = tap(mock.addr).await;
    let config = format!(
        "{}\n[providers.tapped]\nkind = \"openai\"\nbase_url = \"http://{}/v1\"\n\n[models.gpt-tapped]\nprovider = \"tapped\"\nmodel = \"{upstream_model}\"\n",
        standard_config(&mock.base_url()),
        tap.addr
    );
    let gw = Gateway::start(&config).await;
    (mock, tap, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_mid_stream_cancels_the_upstream_request() {
    let (mock, tap, gw) = tapped_gateway("mock-ok+delay=200+tokens=50").await;
    let resp = gw
        .post("/v1/chat/completions")
        .json(&streaming("gpt-tapped", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Read until two content chunks arrived, then hang up.
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while joined_content(&sse_data(&text)).split_whitespace().count() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.next())
            .await
            .expect("chunks arrive")
            .expect("the stream goes on")
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert_eq!(tap.closed_by_gateway.load(Ordering::SeqCst), 0);
    drop(body);
    let dropped_at = Instant::now();
    // The whole stream would take 50 × 200 ms = 10 s; the gateway must hang up on the upstream within
    // a couple of chunk intervals.
    while tap.closed_by_gateway.load(Ordering::SeqCst) == 0 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(3),
            "the gateway kept the upstream request open after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = tap.bytes_from_upstream.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        tap.bytes_from_upstream.load(Ordering::SeqCst),
        seen,
        "the upstream kept streaming after the cancel"
    );
    assert_eq!(mock.state.count(CHAT), 1);
    // And the gateway counts nothing in flight any more.
    let metrics = gw.metrics().await;
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("switchyard_requests_in_flight{") && l.contains("chat/completions"))
    {
        assert!(line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_before_the_answer_cancels_the_upstream_request() {
    // A whole (non-streamed) answer that the upstream takes 5 s to give: the client leaves after
    // 300 ms, and the gateway must hang up on the upstream then, not when the answer comes.
    let (_mock, tap, gw) = tapped_gateway("mock-ok+ttfb=5000").await;
    // An issued key, whose id the abandoned request's usage row must carry.
    let (_, _, key) = common::send(gw.post("/admin/keys").json(&json!({"name": "leaver"}))).await;
    let (key_id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let request = gw
        .client
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(secret)
        .json(&serde_json::json!({"model": "gpt-tapped", "messages": [{"role": "user", "content": "hi"}]}))
        .send();
    assert!(
        tokio::time::timeout(Duration::from_millis(300), request)
            .await
            .is_err(),
        "the answer came before the upstream's delay"
    );
    // The request future is dropped: reqwest closes the connection.
    let dropped_at = Instant::now();
    while tap.closed_by_gateway.load(Ordering::SeqCst) == 0 {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(2),
            "the gateway kept the upstream request open after the client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // And the gateway soon counts nothing in flight.
    let in_flight = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| l.starts_with("switchyard_requests_in_flight{") && l.contains("chat/completions"))
            .any(|l| !l.ends_with(" 0"))
    };
    while in_flight(&gw.metrics().await) {
        assert!(
            dropped_at.elapsed() < Duration::from_secs(3),
            "the request still counted in flight:\n{}",
            gw.metrics().await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Counted as the client's hang-up (nginx's 499).
    let metrics = gw.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("switchyard_requests_total{")
                && l.contains("route=\"/v1/chat/completions\"")
                && l.contains("status=\"499\"")),
        "{metrics}"
    );
    // And it has its usage row (the writer stores rows in the background).
    loop {
        let (st, _, v) = common::send(gw.get("/admin/usage")).await;
        assert_eq!(st, 200, "{v}");
        let rows = v["data"].as_array().cloned().unwrap_or_default();
        if rows
            .iter()
            .any(|r| r["status"] == 499 && r["error_kind"] == "client_closed" && r["key_id"] == key_id)
        {
            break;
        }
        assert!(
            dropped_at.elapsed() < Duration::from_secs(15),
            "no usage row: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ------------------------------------------------------------------ concurrency

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_streams_each_get_their_own_content() {
    let (mock, gw) = Gateway::with_mock().await;
    let gw = Arc::new(gw);
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                let text = format!("client {i} says hello-{i} and bye-{i}");
                let mut body = streaming("gpt-delay", &text);
                if i % 2 == 0 {
                    body["stream_options"] = json!({"include_usage": true});
                }
                let (status, _, frames) = gw.chat_stream(&body).await;
                assert_eq!(status, 200, "stream {i}");
                assert_eq!(frames.last().map(String::as_str), Some("[DONE]"), "stream {i}");
                let chunks = parse(&frames);
                let id = chunks[0]["id"].clone();
                assert!(chunks.iter().all(|c| c["id"] == id), "stream {i}: ids differ");
                assert_eq!(
                    chunks.iter().any(|c| c["usage"].is_object()),
                    i % 2 == 0,
                    "stream {i}: usage shown iff asked"
                );
                (joined_content(&frames), text, id)
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in futures::future::join_all(tasks).await {
        let (got, text, id) = t.unwrap();
        assert_eq!(got, format!("echo: {text}"));
        ids.push(id.to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100, "stream ids must be unique per request");
    assert_eq!(mock.state.count(CHAT), 100);
}

#[tokio::test]
async fn azure_deployments_get_their_path_version_and_api_key() {
    let mock = MockServer::start_with_state(mock_upstream::MockState::with_require_key("az-secret"))
        .await
        .unwrap();
    let cfg = format!(
        "[server]\naddress = \"127.0.0.1:0\"\n[auth]\nmaster_key = \"{}\"\n\
         [providers.az]\nkind = \"azure\"\nbase_url = \"{}\"\napi_key = \"az-secret\"\napi_version = \"2024-06-01\"\n\
         [providers.az_bearer]\nkind = \"azure\"\nbase_url = \"{}\"\napi_key = \"az-secret\"\nbearer = true\n\
         [models.gpt-az]\nprovider = \"az\"\nmodel = \"my-deployment\"\n\
         [models.gpt-az-token]\nprovider = \"az_bearer\"\nmodel = \"other-deployment\"\n",
        common::KEY,
        mock.base_url(),
        mock.base_url()
    );
    let gw = Gateway::start(&cfg).await;
    let (st, _, body) = gw.chat(&chat_body("gpt-az", "hello azure")).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["model"], json!("gpt-az"));
    let sent = mock.state.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/openai/deployments/my-deployment/chat/completions?api-version=2024-06-01"
    );
    assert_eq!(sent.header("api-key"), Some("az-secret"));
    assert_eq!(sent.header("authorization"), None);
    // Streaming takes the same path; a bearer-token provider sends the key as a bearer token.
    let mut b = chat_body("gpt-az-token", "hello");
    b["stream"] = json!(true);
    let (st, _, frames) = gw.chat_stream(&b).await;
    assert_eq!(st, 200);
    assert!(!joined_content(&frames).is_empty(), "{frames:?}");
    let sent = mock.state.last_request().unwrap();
    assert!(
        sent.path
            .starts_with("/openai/deployments/other-deployment/chat/completions?api-version="),
        "{}",
        sent.path
    );
    assert_eq!(sent.header("authorization"), Some("Bearer az-secret"));
    assert_eq!(sent.header("api-key"), None);
}

#[tokio::test]
async fn presets_give_url_key_tier_and_quirks_from_one_table() {
    let mock = MockServer::start_with_state(mock_upstream::MockState::with_require_key("mi-secret"))
        .await
        .unwrap();
    // `mistral`: the key from MISTRAL_API_KEY, OpenAI-only fields left out, the cap renamed; the
    // base URL from config wins over the preset's. `ollama`: the local tier, its default URL.
    let cfg = format!(
        "[server]\naddress = \"127.0.0.1:0\"\n[auth]\nmaster_key = \"{}\"\n\
         [providers.mi]\nkind = \"openai\"\npreset = \"mistral\"\nbase_url = \"{}/v1\"\n\
         [providers.ol]\nkind = \"openai\"\npreset = \"ollama\"\n\
         [models.mistral-small]\nprovider = \"mi\"\nmodel = \"mock-ok\"\n\
         [models.llama-local]\nprovider = \"ol\"\nmodel = \"llama3.2\"\n",
        common::KEY,
        mock.base_url(),
    );
    let gw = Gateway::start_with_env(&cfg, &[("MISTRAL_API_KEY", "mi-secret")]).await;
    let (st, h, body) = gw
        .chat(
            &json!({"model": "mistral-small", "max_completion_tokens": 7, "logit_bias": {"50256": -100},
            "user": "u1", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(h["x-switchyard-tier"], "cloud");
    let sent = mock.state.last_request().unwrap();
    assert_eq!(sent.header("authorization"), Some("Bearer mi-secret"));
    let b = sent.body;
    assert_eq!(b["max_tokens"], json!(7), "{b}");
    for f in ["max_completion_tokens", "logit_bias", "user"] {
        assert!(b.get(f).is_none(), "{f} was sent: {b}");
    }
    // Streaming: no stream_options for an upstream that refuses them.
    let mut s = chat_body("mistral-small", "hi");
    s["stream"] = json!(true);
    let (st, _, _) = gw.chat_stream(&s).await;
    assert_eq!(st, 200);
    let b = mock.state.last_request().unwrap().body;
    assert!(b.get("stream_options").is_none(), "{b}");
    // The ollama preset: local tier, at Ollama's default address.
    let (_, _, models) = common::send(gw.get("/v1/models")).await;
    let local = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "llama-local")
        .unwrap();
    assert_eq!(local["tiers"], json!(["local"]), "{local}");
    // A preset that does not exist is a config error naming the known ones.
    let (ok, _, err) = common::run_cli(
        &[
            std::ffi::OsStr::new("check-config"),
            common::TempDir::new()
                .write(
                    "bad.toml",
                    "[providers.x]\nkind = \"openai\"\npreset = \"nope\"\n",
                )
                .as_os_str(),
        ],
        &[],
    );
    assert!(!ok && err.contains("groq"), "{err}");
}
