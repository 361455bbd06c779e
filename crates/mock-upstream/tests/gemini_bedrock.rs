//! Gemini and Bedrock (Converse / ConverseStream) over a real socket, with a raw HTTP/1.1 client,
//! an independent SigV4 signer and an independent event-stream decoder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use mock_upstream::{MockServer, MockState, embedding_for_text};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------- raw HTTP

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.text()))
    }
}

fn decode_chunked(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_str = std::str::from_utf8(&raw[..pos]).unwrap();
        let size = usize::from_str_radix(size_str.split(';').next().unwrap().trim(), 16).unwrap();
        raw = &raw[pos + 2..];
        if size == 0 || raw.len() < size + 2 {
            out.extend_from_slice(&raw[..raw.len().min(size)]);
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Sends exactly the given headers (plus host, connection, content-length).
async fn request(mock: &MockServer, path: &str, headers: &[(String, String)], body: &[u8]) -> Resp {
    let mut s = TcpStream::connect(mock.addr).await.unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {}\r\nconnection: close\r\ncontent-length: {}\r\n",
        mock.addr,
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
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
    let body = if chunked {
        decode_chunked(rest)
    } else {
        rest.to_vec()
    };
    Resp {
        status,
        headers,
        body,
    }
}

fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect()
}

async fn post_json(mock: &MockServer, path: &str, extra: &[(&str, &str)], body: &Value) -> Resp {
    let mut headers = h(&[("content-type", "application/json")]);
    headers.extend(h(extra));
    request(mock, path, &headers, body.to_string().as_bytes()).await
}

// ---------------------------------------------------------------- Gemini

fn gemini_req(text: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
    })
}

#[tokio::test]
async fn gemini_generate_content_json() {
    let mock = MockServer::start().await.unwrap();
    let path = "/v1beta/models/mock-ok:generateContent";
    let r = post_json(&mock, path, &[], &gemini_req("hello big world")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let v = r.json();
    let cand = &v["candidates"][0];
    assert_eq!(cand["content"]["role"], "model");
    assert_eq!(cand["content"]["parts"][0]["text"], "echo: hello big world");
    assert_eq!(cand["finishReason"], "STOP");
    assert_eq!(cand["index"], 0);
    assert_eq!(v["usageMetadata"]["promptTokenCount"], 5);
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 4);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 9);
    assert_eq!(v["modelVersion"], "mock-ok");
    assert!(v["responseId"].as_str().is_some_and(|s| !s.is_empty()));
    let rec = mock.state.requests_for("POST /v1beta/models:generateContent");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].path, path);
    assert_eq!(rec[0].body["contents"][0]["parts"][0]["text"], "hello big world");

    // Options in the model segment; maxOutputTokens cuts the answer.
    let mut body = gemini_req("x");
    body["generationConfig"] = json!({"maxOutputTokens": 3, "temperature": 0.2});
    let v = post_json(
        &mock,
        "/v1beta/models/mock-ok+tokens=5:generateContent",
        &[],
        &body,
    )
    .await
    .json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "w1 w2 w3");
    assert_eq!(v["candidates"][0]["finishReason"], "MAX_TOKENS");
    assert_eq!(v["usageMetadata"]["candidatesTokenCount"], 3);

    // includeThoughts: a first thought part and thoughtsTokenCount.
    let mut body = gemini_req("x");
    body["generationConfig"] = json!({"thinkingConfig": {"thinkingBudget": 128, "includeThoughts": true}});
    let v = post_json(&mock, "/v1beta/models/m+tokens=2:generateContent", &[], &body)
        .await
        .json();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts[0], json!({"text": "thinking...", "thought": true}));
    assert_eq!(parts[1]["text"], "w1 w2");
    assert_eq!(v["usageMetadata"]["thoughtsTokenCount"], 1);
    assert_eq!(v["usageMetadata"]["totalTokenCount"], 3 + 2 + 1);

    // Header options work too; bad requests get Google's envelope.
    let v = post_json(
        &mock,
        "/v1beta/models/m:generateContent",
        &[("x-mock-tokens", "1")],
        &gemini_req("x"),
    )
    .await
    .json();
    assert_eq!(v["candidates"][0]["content"]["parts"][0]["text"], "w1");
    let r = post_json(
        &mock,
        "/v1beta/models/m:generateContent",
        &[],
        &json!({"contents": []}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["status"], "INVALID_ARGUMENT");
    let r = post_json(
        &mock,
        "/v1beta/models/m:generateContent",
        &[],
        &json!({"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "Please use a valid role: user, model."
    );
}

fn sse_payloads(body: &str) -> Vec<Value> {
    assert!(body.ends_with("\r\n\r\n"), "{body:?}");
    body.trim_end_matches("\r\n\r\n")
        .split("\r\n\r\n")
        .map(|ev| {
            let d = ev
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("bad event {ev:?}"));
            serde_json::from_str(d).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn gemini_stream_sse_and_array() {
    let mock = MockServer::start().await.unwrap();
    let r = post_json(
        &mock,
        "/v1beta/models/mock-ok+tokens=4+delay=5:streamGenerateContent?alt=sse",
        &[],
        &gemini_req("x"),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let evs = sse_payloads(&r.text());
    assert_eq!(evs.len(), 4, "one chunk per word");
    let text: String = evs
        .iter()
        .map(|e| {
            e["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(text, "w1 w2 w3 w4");
    for e in &evs[..3] {
        assert!(e["candidates"][0].get("finishReason").is_none());
        assert!(e.get("usageMetadata").is_none());
    }
    let last = &evs[3];
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 4);
    assert!(!r.text().contains("[DONE]"));
    assert_eq!(mock.state.count("POST /v1beta/models:streamGenerateContent"), 1);
    assert!(
        mock.state.requests()[0]
            .path
            .ends_with(":streamGenerateContent?alt=sse")
    );

    // Without alt=sse: one JSON array.
    let r = post_json(
        &mock,
        "/v1beta/models/mock-ok+tokens=3:streamGenerateContent",
        &[],
        &gemini_req("x"),
    )
    .await;
    let arr = r.json();
    assert_eq!(arr.as_array().unwrap().len(), 3);
    assert_eq!(arr[2]["candidates"][0]["finishReason"], "STOP");

    // error_after: Google's error object as a stream event.
    let r = post_json(
        &mock,
        "/v1beta/models/m+tokens=4+error_after=2:streamGenerateContent?alt=sse",
        &[],
        &gemini_req("x"),
    )
    .await;
    let evs = sse_payloads(&r.text());
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[2]["error"]["status"], "UNAVAILABLE");
}

#[tokio::test]
async fn gemini_function_call() {
    let mock = MockServer::start().await.unwrap();
    let mut body = gemini_req("weather?");
    body["tools"] = json!([{"functionDeclarations": [
        {"name": "lookup", "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "other", "parameters": {"type": "object"}}
    ]}]);
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "AUTO"}});
    let v = post_json(
        &mock,
        "/v1beta/models/m+tools=1+notext:generateContent",
        &[],
        &body,
    )
    .await
    .json();
    let parts = v["candidates"][0]["content"]["parts"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["functionCall"]["name"], "lookup");
    assert_eq!(parts[0]["functionCall"]["args"]["city"], "Paris");
    assert_eq!(v["candidates"][0]["finishReason"], "STOP");

    // Default: a text preface then the call; streamed, the call arrives whole in one chunk.
    let r = post_json(
        &mock,
        "/v1beta/models/m+tools=1:streamGenerateContent?alt=sse",
        &[],
        &body,
    )
    .await;
    let evs = sse_payloads(&r.text());
    let calls: Vec<&Value> = evs
        .iter()
        .filter_map(|e| e["candidates"][0]["content"]["parts"][0].get("functionCall"))
        .collect();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["args"],
        json!({"city": "Paris", "unit": "celsius", "i": 0})
    );
    assert_eq!(evs.last().unwrap()["candidates"][0]["finishReason"], "STOP");

    // A function response round trip is accepted and echoed.
    let body = json!({"contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "lookup", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "lookup", "response": {"t": 21}}}]}
    ]});
    let v = post_json(&mock, "/v1beta/models/m:generateContent", &[], &body)
        .await
        .json();
    assert_eq!(
        v["candidates"][0]["content"]["parts"][0]["text"],
        r#"echo: {"t":21}"#
    );
}

#[tokio::test]
async fn gemini_embeddings() {
    let mock = MockServer::start().await.unwrap();
    let v = post_json(
        &mock,
        "/v1beta/models/text-embedding-004:embedContent",
        &[],
        &json!({"content": {"parts": [{"text": "hello"}]}}),
    )
    .await
    .json();
    let vals: Vec<f32> = v["embedding"]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(vals, embedding_for_text("hello", 8));

    let v = post_json(
        &mock,
        "/v1beta/models/text-embedding-004:batchEmbedContents",
        &[],
        &json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 4}
        ]}),
    )
    .await
    .json();
    let embs = v["embeddings"].as_array().unwrap();
    assert_eq!(embs.len(), 2);
    assert_eq!(embs[0]["values"].as_array().unwrap().len(), 8);
    let b: Vec<f32> = embs[1]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(b, embedding_for_text("b", 4));
    assert_eq!(mock.state.count("POST /v1beta/models:embedContent"), 1);
    assert_eq!(mock.state.count("POST /v1beta/models:batchEmbedContents"), 1);
}

#[tokio::test]
async fn gemini_keys_and_errors() {
    let mock = MockServer::start_with_state(MockState::with_require_key("gkey"))
        .await
        .unwrap();
    let path = "/v1beta/models/m:generateContent";
    let r = post_json(&mock, path, &[("x-goog-api-key", "wrong")], &gemini_req("x")).await;
    assert_eq!(r.status, 400);
    let e = r.json();
    assert_eq!(e["error"]["code"], 400);
    assert_eq!(
        e["error"]["message"],
        "API key not valid. Please pass a valid API key."
    );
    assert_eq!(e["error"]["status"], "INVALID_ARGUMENT");
    let r = post_json(&mock, path, &[("x-goog-api-key", "gkey")], &gemini_req("x")).await;
    assert_eq!(r.status, 200);
    let r = post_json(
        &mock,
        "/v1beta/models/m:generateContent?key=gkey",
        &[],
        &gemini_req("x"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = post_json(&mock, path, &[], &gemini_req("x")).await;
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["status"], "PERMISSION_DENIED");

    let r = post_json(
        &mock,
        "/v1beta/models/m+status=429+retry_after=7:generateContent",
        &[("x-goog-api-key", "gkey")],
        &gemini_req("x"),
    )
    .await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("7"));
    let e = r.json();
    assert_eq!(e["error"]["code"], 429);
    assert_eq!(e["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(e["error"]["details"][0]["retryDelay"], "7s");
    for (status, name) in [(404, "NOT_FOUND"), (500, "INTERNAL"), (503, "UNAVAILABLE")] {
        let r = post_json(
            &mock,
            &format!("/v1beta/models/m+status={status}:generateContent"),
            &[("x-goog-api-key", "gkey")],
            &gemini_req("x"),
        )
        .await;
        assert_eq!(r.status, status);
        assert_eq!(r.json()["error"]["status"], name);
    }
}

// ---------------------------------------------------------------- SigV4 signer (independent)

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const AMZ_DATE: &str = "20250102T030405Z";

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).unwrap();
    m.update(data.as_bytes());
    m.finalize().into_bytes().to_vec()
}

fn aws_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Headers (content-type, x-amz-date, [x-amz-security-token], authorization) for a POST of `body`
/// to `path` (already URL-encoded, as sent) signed for bedrock in us-east-1.
fn sign(
    mock: &MockServer,
    path: &str,
    body: &[u8],
    akid: &str,
    secret: &str,
    token: Option<&str>,
) -> Vec<(String, String)> {
    let host = mock.addr.to_string();
    let mut signed: Vec<(&str, String)> = vec![
        ("content-type", "application/json".to_string()),
        ("host", host),
        ("x-amz-date", AMZ_DATE.to_string()),
    ];
    if let Some(t) = token {
        signed.push(("x-amz-security-token", t.to_string()));
    }
    signed.sort();
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_names = signed.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let payload_hash = hex::encode(Sha256::digest(body));
    let creq = format!(
        "POST\n{}\n\n{canonical_headers}\n{signed_names}\n{payload_hash}",
        aws_encode(path)
    );
    let date = &AMZ_DATE[..8];
    let scope = format!("{date}/us-east-1/bedrock/aws4_request");
    let sts = format!(
        "AWS4-HMAC-SHA256\n{AMZ_DATE}\n{scope}\n{}",
        hex::encode(Sha256::digest(creq.as_bytes()))
    );
    let mut key = hmac_sha256(format!("AWS4{secret}").as_bytes(), date);
    for part in ["us-east-1", "bedrock", "aws4_request"] {
        key = hmac_sha256(&key, part);
    }
    let sig = hex::encode(hmac_sha256(&key, &sts));
    let mut out: Vec<(String, String)> = signed
        .into_iter()
        .filter(|(k, _)| *k != "host")
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    out.push((
        "authorization".into(),
        format!("AWS4-HMAC-SHA256 Credential={akid}/{scope}, SignedHeaders={signed_names}, Signature={sig}"),
    ));
    out
}

fn converse_req(text: &str) -> Value {
    json!({
        "system": [{"text": "be brief"}],
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.5},
    })
}

async fn signed_post(mock: &MockServer, path: &str, body: &Value, secret: &str) -> Resp {
    let raw = body.to_string();
    let headers = sign(mock, path, raw.as_bytes(), AKID, secret, None);
    request(mock, path, &headers, raw.as_bytes()).await
}

// ---------------------------------------------------------------- Bedrock Converse

const HAIKU: &str = "anthropic.claude-3-haiku-20240307-v1%3A0";

#[tokio::test]
async fn bedrock_converse_sigv4() {
    let mock = MockServer::start_with_state(MockState::with_aws_credentials(AKID, SECRET))
        .await
        .unwrap();
    let path = format!("/model/{HAIKU}/converse");
    let r = signed_post(&mock, &path, &converse_req("hello big world"), SECRET).await;
    assert_eq!(r.status, 200, "{} {:?}", r.text(), r.headers);
    let v = r.json();
    assert_eq!(v["output"]["message"]["role"], "assistant");
    assert_eq!(
        v["output"]["message"]["content"][0]["text"],
        "echo: hello big world"
    );
    assert_eq!(v["stopReason"], "end_turn");
    assert_eq!(v["usage"]["inputTokens"], 5);
    assert_eq!(v["usage"]["outputTokens"], 4);
    assert_eq!(v["usage"]["totalTokens"], 9);
    assert!(v["metrics"]["latencyMs"].as_u64().is_some());
    let rec = mock.state.requests_for("POST /model/converse");
    assert_eq!(rec.len(), 1);
    assert_eq!(rec[0].path, path);

    // Options in the (encoded) model id.
    let r = signed_post(
        &mock,
        "/model/mock-ok%2Btokens%3D3/converse",
        &converse_req("x"),
        SECRET,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["output"]["message"]["content"][0]["text"], "w1 w2 w3");

    // Session token, signed.
    let raw = converse_req("x").to_string();
    let headers = sign(&mock, &path, raw.as_bytes(), AKID, SECRET, Some("tok/en+=="));
    let r = request(&mock, &path, &headers, raw.as_bytes()).await;
    assert_eq!(r.status, 200, "{}", r.text());

    // Wrong secret.
    let r = signed_post(&mock, &path, &converse_req("x"), "not-the-secret").await;
    assert_eq!(r.status, 403);
    assert!(
        r.header("x-amzn-errortype")
            .unwrap()
            .starts_with("InvalidSignatureException:")
    );
    assert_eq!(
        r.json()["message"],
        "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."
    );

    // Body changed after signing.
    let headers = sign(&mock, &path, b"{}", AKID, SECRET, None);
    let r = request(&mock, &path, &headers, raw.as_bytes()).await;
    assert_eq!(r.status, 403);

    // Unknown access key.
    let headers = sign(&mock, &path, raw.as_bytes(), "AKIDOTHER", SECRET, None);
    let r = request(&mock, &path, &headers, raw.as_bytes()).await;
    assert_eq!(r.status, 403);
    assert!(
        r.header("x-amzn-errortype")
            .unwrap()
            .starts_with("UnrecognizedClientException:")
    );
    assert_eq!(
        r.json()["message"],
        "The security token included in the request is invalid."
    );

    // No auth at all.
    let r = post_json(&mock, &path, &[], &converse_req("x")).await;
    assert_eq!(r.status, 403);
    assert!(
        r.header("x-amzn-errortype")
            .unwrap()
            .starts_with("InvalidSignatureException")
    );
}

#[tokio::test]
async fn bedrock_converse_tools_limits_and_errors() {
    let mock = MockServer::start().await.unwrap();
    let path = format!("/model/{HAIKU}/converse");
    let mut body = converse_req("weather?");
    body["toolConfig"] = json!({
        "tools": [{"toolSpec": {"name": "lookup", "description": "d",
                   "inputSchema": {"json": {"type": "object"}}}}],
        "toolChoice": {"auto": {}}
    });
    let r = post_json(&mock, &path, &[("x-mock-tools", "1")], &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["stopReason"], "tool_use");
    let content = v["output"]["message"]["content"].as_array().unwrap();
    let tu = content
        .iter()
        .find_map(|b| b.get("toolUse"))
        .expect("a toolUse block");
    assert_eq!(tu["name"], "lookup");
    assert!(tu["toolUseId"].as_str().unwrap().starts_with("tooluse_"));
    assert_eq!(tu["input"]["city"], "Paris");

    // A tool result turn.
    let mut body2 = body.clone();
    body2["messages"] = json!([
        {"role": "user", "content": [{"text": "weather?"}]},
        {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "lookup", "input": {}}}]},
        {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"json": {"t": 21}}], "status": "success"}}]}
    ]);
    let v = post_json(&mock, &path, &[], &body2).await.json();
    assert_eq!(v["output"]["message"]["content"][0]["text"], r#"echo: {"t":21}"#);
    // ... which needs a toolConfig.
    body2.as_object_mut().unwrap().remove("toolConfig");
    let r = post_json(&mock, &path, &[], &body2).await;
    assert_eq!(r.status, 400);
    assert!(
        r.header("x-amzn-errortype")
            .unwrap()
            .starts_with("ValidationException:")
    );

    // maxTokens.
    let mut body = converse_req("x");
    body["inferenceConfig"]["maxTokens"] = json!(2);
    let v = post_json(&mock, "/model/m%2Btokens%3D5/converse", &[], &body)
        .await
        .json();
    assert_eq!(v["stopReason"], "max_tokens");
    assert_eq!(v["output"]["message"]["content"][0]["text"], "w1 w2");

    // Injected statuses.
    for (status, ty) in [
        (429, "ThrottlingException"),
        (400, "ValidationException"),
        (404, "ResourceNotFoundException"),
        (500, "InternalServerException"),
        (503, "ServiceUnavailableException"),
    ] {
        let r = post_json(
            &mock,
            &path,
            &[("x-mock-status", &status.to_string())],
            &converse_req("x"),
        )
        .await;
        assert_eq!(r.status, status);
        let et = r.header("x-amzn-errortype").unwrap();
        assert_eq!(et.split(':').next(), Some(ty), "{et}");
        assert!(r.json()["message"].is_string());
        if status == 429 {
            assert_eq!(
                r.json()["message"],
                "Too many requests, please wait before trying again."
            );
        }
    }

    // Conversation shape.
    let r = post_json(
        &mock,
        &path,
        &[],
        &json!({"messages": [{"role": "assistant", "content": [{"text": "x"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = post_json(
        &mock,
        &path,
        &[],
        &json!({"messages": [{"role": "user", "content": [{"text": "a"}]},
                             {"role": "user", "content": [{"text": "b"}]}]}),
    )
    .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["message"].as_str().unwrap().contains("alternate"));
    // Images as base64 bytes.
    let r = post_json(
        &mock,
        &path,
        &[],
        &json!({"messages": [{"role": "user", "content": [
            {"image": {"format": "png", "source": {"bytes": "iVBORw0KGgo="}}}, {"text": "what?"}]}]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

// ---------------------------------------------------------------- event stream decoding (independent)

#[derive(Debug)]
struct EsMsg {
    headers: BTreeMap<String, String>,
    payload: Vec<u8>,
    prelude_crc_ok: bool,
    message_crc_ok: bool,
}

impl EsMsg {
    fn h(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap()
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn decode_event_stream(mut b: &[u8]) -> Vec<EsMsg> {
    let mut out = Vec::new();
    while !b.is_empty() {
        assert!(b.len() >= 16, "short message: {} bytes left", b.len());
        let total = be32(&b[0..4]) as usize;
        let hlen = be32(&b[4..8]) as usize;
        let prelude_crc_ok = be32(&b[8..12]) == crc32fast::hash(&b[0..8]);
        let msg = &b[..total];
        let message_crc_ok = be32(&msg[total - 4..]) == crc32fast::hash(&msg[..total - 4]);
        let mut hs = &msg[12..12 + hlen];
        let mut headers = BTreeMap::new();
        while !hs.is_empty() {
            let n = hs[0] as usize;
            let name = String::from_utf8(hs[1..1 + n].to_vec()).unwrap();
            assert_eq!(hs[1 + n], 7, "string header");
            let vlen = u16::from_be_bytes([hs[2 + n], hs[3 + n]]) as usize;
            let value = String::from_utf8(hs[4 + n..4 + n + vlen].to_vec()).unwrap();
            headers.insert(name, value);
            hs = &hs[4 + n + vlen..];
        }
        out.push(EsMsg {
            headers,
            payload: msg[12 + hlen..total - 4].to_vec(),
            prelude_crc_ok,
            message_crc_ok,
        });
        b = &b[total..];
    }
    out
}

#[tokio::test]
async fn bedrock_converse_stream_frames() {
    let mock = MockServer::start_with_state(MockState::with_aws_credentials(AKID, SECRET))
        .await
        .unwrap();
    let path = "/model/mock-ok%2Btokens%3D3%2Bdelay%3D5/converse-stream";
    let r = signed_post(&mock, path, &converse_req("x"), SECRET).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let msgs = decode_event_stream(&r.body);
    for m in &msgs {
        assert!(m.prelude_crc_ok && m.message_crc_ok);
        assert_eq!(m.h(":message-type"), "event");
        assert_eq!(m.h(":content-type"), "application/json");
    }
    let types: Vec<&str> = msgs.iter().map(|m| m.h(":event-type")).collect();
    assert_eq!(
        types,
        [
            "messageStart",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockDelta",
            "contentBlockStop",
            "messageStop",
            "metadata"
        ]
    );
    assert_eq!(msgs[0].json()["role"], "assistant");
    let text: String = msgs[1..4]
        .iter()
        .map(|m| {
            let v = m.json();
            assert_eq!(v["contentBlockIndex"], 0);
            v["delta"]["text"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(text, "w1 w2 w3");
    assert_eq!(msgs[5].json()["stopReason"], "end_turn");
    let meta = msgs[6].json();
    assert_eq!(meta["usage"]["outputTokens"], 3);
    assert_eq!(meta["usage"]["inputTokens"], 3);
    assert_eq!(meta["usage"]["totalTokens"], 6);
    assert!(meta["metrics"]["latencyMs"].is_u64());
    assert_eq!(mock.state.count("POST /model/converse-stream"), 1);

    // Tool use: start, input JSON in 2+ pieces, stop; stopReason tool_use.
    let mut body = converse_req("weather?");
    body["toolConfig"] = json!({"tools": [{"toolSpec": {"name": "lookup",
        "inputSchema": {"json": {"type": "object"}}}}]});
    let r = signed_post(
        &mock,
        "/model/m%2Btools%3D1%2Bnotext/converse-stream",
        &body,
        SECRET,
    )
    .await;
    let msgs = decode_event_stream(&r.body);
    assert!(msgs.iter().all(|m| m.prelude_crc_ok && m.message_crc_ok));
    let start = msgs
        .iter()
        .find(|m| m.h(":event-type") == "contentBlockStart")
        .unwrap()
        .json();
    let idx = start["contentBlockIndex"].clone();
    assert_eq!(start["start"]["toolUse"]["name"], "lookup");
    assert!(
        start["start"]["toolUse"]["toolUseId"]
            .as_str()
            .unwrap()
            .starts_with("tooluse_")
    );
    let pieces: Vec<String> = msgs
        .iter()
        .filter(|m| m.h(":event-type") == "contentBlockDelta")
        .map(|m| {
            let v = m.json();
            assert_eq!(v["contentBlockIndex"], idx);
            v["delta"]["toolUse"]["input"].as_str().unwrap().to_string()
        })
        .collect();
    assert!(pieces.len() >= 2, "{pieces:?}");
    let input: Value = serde_json::from_str(&pieces.concat()).unwrap();
    assert_eq!(input["city"], "Paris");
    let stop = msgs
        .iter()
        .find(|m| m.h(":event-type") == "contentBlockStop")
        .unwrap()
        .json();
    assert_eq!(stop["contentBlockIndex"], idx);
    let ms = msgs
        .iter()
        .find(|m| m.h(":event-type") == "messageStop")
        .unwrap()
        .json();
    assert_eq!(ms["stopReason"], "tool_use");
}

#[tokio::test]
async fn bedrock_stream_faults() {
    let mock = MockServer::start().await.unwrap();
    let r = post_json(
        &mock,
        "/model/m%2Btokens%3D3%2Bbadcrc/converse-stream",
        &[],
        &converse_req("x"),
    )
    .await;
    let msgs = decode_event_stream(&r.body);
    assert_eq!(msgs.len(), 7);
    assert!(msgs.iter().all(|m| m.prelude_crc_ok));
    assert_eq!(msgs.iter().filter(|m| !m.message_crc_ok).count(), 1);

    let r = post_json(
        &mock,
        "/model/m/converse-stream",
        &[("x-mock-tokens", "3"), ("x-mock-badcrc", "prelude")],
        &converse_req("x"),
    )
    .await;
    let msgs = decode_event_stream(&r.body);
    assert_eq!(msgs.iter().filter(|m| !m.prelude_crc_ok).count(), 1);

    // error_after: an exception message ends the stream.
    let r = post_json(
        &mock,
        "/model/m%2Btokens%3D3%2Berror_after%3D1/converse-stream",
        &[],
        &converse_req("x"),
    )
    .await;
    let msgs = decode_event_stream(&r.body);
    let last = msgs.last().unwrap();
    assert!(last.message_crc_ok);
    assert_eq!(last.h(":message-type"), "exception");
    assert_eq!(last.h(":exception-type"), "throttlingException");
    assert!(last.json()["message"].is_string());
    assert_eq!(
        msgs.iter()
            .filter(|m| m.h(":event-type") == "contentBlockDelta")
            .count(),
        1
    );
}
