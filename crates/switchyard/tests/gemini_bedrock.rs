//! Gemini and Bedrock natively, through the binary, against `mock-upstream` speaking their wire
//! formats: Gemini's `generateContent` / SSE stream / function calls / embeddings with the key in
//! `x-goog-api-key`; Bedrock's Converse and its binary event stream, with a SigV4 signature the mock
//! verifies (a wrong secret is refused) and CRCs the gateway checks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Gateway, KEY, chat_body, joined_content, send};
use mock_upstream::{MockServer, MockState};
use serde_json::{Value, json};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn tools() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "additionalProperties": false, "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

async fn start() -> (MockServer, Gateway) {
    let state = MockState::with_require_key("g-key");
    state.set_aws_credentials(Some((AKID.to_string(), SECRET.to_string())));
    let mock = MockServer::start_with_state(state).await.unwrap();
    let url = mock.base_url();
    let cfg = format!(
        r#"[server]
address = "127.0.0.1:0"
[auth]
master_key = "{KEY}"
[routing]
max_attempts = 1
health_check_interval_ms = 0

[providers.google]
kind = "gemini"
base_url = "{url}"
api_key = "g-key"

[providers.google_bad]
kind = "gemini"
base_url = "{url}"
api_key = "wrong"

[providers.aws]
kind = "bedrock"
base_url = "{url}"
region = "eu-west-1"
aws_access_key_id = "{AKID}"
aws_secret_access_key = "{SECRET}"

[providers.aws_bad]
kind = "bedrock"
base_url = "{url}"
region = "eu-west-1"
aws_access_key_id = "{AKID}"
aws_secret_access_key = "not-the-secret"

[models.gem]
provider = "google"
model = "mock-ok"
[models.gem-tools]
provider = "google"
model = "mock-ok+tools=1"
[models.gem-bad]
provider = "google_bad"
model = "mock-ok"
[models.gem-embed]
provider = "google"
model = "mock-embed"
type = "embedding"

[models.br]
provider = "aws"
model = "anthropic.claude-3-haiku-20240307-v1:0"
[models.br-tools]
provider = "aws"
model = "mock-ok+tools=1"
[models.br-bad]
provider = "aws_bad"
model = "mock-ok"
[models.br-badcrc]
provider = "aws"
model = "mock-ok+badcrc"
"#
    );
    let gw = Gateway::start(&cfg).await;
    (mock, gw)
}

#[tokio::test]
async fn gemini_chat_stream_tools_and_embeddings() {
    let (mock, gw) = start().await;
    let (st, h, v) = gw
        .chat(&json!({"model": "gem", "max_tokens": 64, "temperature": 0.3,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello Gemini"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h["x-switchyard-provider"], "google");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Hello Gemini"), "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
    let sent = mock.state.last_request().unwrap();
    assert!(
        sent.path.starts_with("/v1beta/models/mock-ok:generateContent"),
        "{}",
        sent.path
    );
    assert_eq!(
        sent.headers.get("x-goog-api-key").map(String::as_str),
        Some("g-key")
    );
    assert_eq!(sent.body["systemInstruction"]["parts"][0]["text"], "Be brief.");
    assert_eq!(sent.body["contents"][0]["role"], "user");
    assert_eq!(sent.body["generationConfig"]["maxOutputTokens"], 64);

    // The stream says the same, in pieces.
    let mut b = chat_body("gem", "Hello Gemini");
    b["stream"] = json!(true);
    let (st, _, frames) = gw.chat_stream(&b).await;
    assert_eq!(st, 200);
    assert!(frames.len() > 3, "{frames:?}");
    assert_eq!(joined_content(&frames), text);
    assert!(
        mock.state
            .last_request()
            .unwrap()
            .path
            .contains(":streamGenerateContent?alt=sse")
    );

    // Function calls, and the result going back as a functionResponse named after the call.
    let (st, _, v) = gw
        .chat(&json!({"model": "gem-tools", "tools": tools(), "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    let call = v["choices"][0]["message"]["tool_calls"][0].clone();
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let decl = &mock.state.last_request().unwrap().body["tools"][0]["functionDeclarations"][0];
    assert!(decl["parameters"].get("additionalProperties").is_none(), "{decl}");
    let (st, _, v) = gw
        .chat(&json!({"model": "gem", "tools": tools(), "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": v["choices"][0]["message"]["tool_calls"][0]["id"], "content": "sunny"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    let sent = mock.state.last_request().unwrap().body;
    assert_eq!(
        sent["contents"][2]["parts"][0]["functionResponse"]["name"], "get_weather",
        "{sent}"
    );

    // Embeddings.
    let (st, _, v) = send(
        gw.post("/v1/embeddings")
            .json(&json!({"model": "gem-embed", "input": ["one", "two"]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["data"].as_array().unwrap().len(), 2);
    assert!(!v["data"][1]["embedding"].as_array().unwrap().is_empty());

    // A key Google refuses.
    let (st, _, v) = gw.chat(&chat_body("gem-bad", "hi")).await;
    assert!(st.is_client_error(), "{st} {v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("API key not valid"),
        "{v}"
    );
}

#[tokio::test]
async fn bedrock_converse_stream_tools_and_signatures() {
    let (mock, gw) = start().await;
    let (st, h, v) = gw
        .chat(&json!({"model": "br", "max_tokens": 64,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello Bedrock"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h["x-switchyard-provider"], "aws");
    let text = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Hello Bedrock"), "{v}");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let sent = mock.state.last_request().unwrap();
    assert_eq!(
        sent.path,
        "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"
    );
    assert!(sent.headers["authorization"].starts_with(&format!("AWS4-HMAC-SHA256 Credential={AKID}/")));
    assert!(sent.headers["authorization"].contains("/eu-west-1/bedrock/aws4_request"));
    assert_eq!(sent.body["system"][0]["text"], "Be brief.");
    assert_eq!(sent.body["inferenceConfig"]["maxTokens"], 64);

    // ConverseStream: binary frames, decoded and CRC-checked, relayed as SSE.
    let mut b = chat_body("br", "Hello Bedrock");
    b["stream"] = json!(true);
    let (st, _, frames) = gw.chat_stream(&b).await;
    assert_eq!(st, 200);
    assert!(frames.len() > 3, "{frames:?}");
    assert_eq!(joined_content(&frames), text);

    // Tools: toolConfig out, toolUse back (whole and streamed).
    let (st, _, v) = gw
        .chat(&json!({"model": "br-tools", "tools": tools(), "messages": [{"role": "user", "content": "Weather in Paris?"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"], "get_weather",
        "{v}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let spec = &mock.state.last_request().unwrap().body["toolConfig"]["tools"][0]["toolSpec"];
    assert_eq!(spec["name"], "get_weather");
    let mut b = json!({"model": "br-tools", "stream": true, "tools": tools(), "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let (st, _, frames) = gw.chat_stream(&b).await;
    assert_eq!(st, 200);
    let args: String = frames
        .iter()
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(
        serde_json::from_str::<Value>(&args).is_ok(),
        "streamed arguments join into JSON: {args}"
    );
    b["model"] = json!("br-badcrc");
    b["tools"] = json!([]);
    let resp = gw.post("/v1/chat/completions").json(&b).send().await.unwrap();
    let body = resp.text().await.unwrap();
    assert!(body.contains("CRC"), "a corrupted frame is reported: {body}");

    // A wrong secret: the mock's signature check refuses it.
    let (st, _, v) = gw.chat(&chat_body("br-bad", "hi")).await;
    assert_eq!(st, 403, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("signature"),
        "{v}"
    );
}
