//! CLI agents as providers, through the binary, with fake programs that print the real output formats
//! of Claude Code, Codex and Gemini CLI (tests/fixtures/fake-cli): text and streams from each, the run's
//! environment and working directory, usage limits that ban the deployment until their reset, a crash
//! with its stderr, a hang killed at the deadline with its children, a disconnect that kills the run,
//! a full queue, and `auto` walking CLI → cloud.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Gateway, KEY, TempDir, chat_body, joined_content, send, sse_data};
use mock_upstream::MockServer;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/fake-cli")
}

fn config(
    mock: &str,
    dir: &TempDir,
    max_parallel: u32,
    queue: u32,
    timeout_ms: u64,
    auto_cloud: bool,
) -> String {
    let f = fixtures();
    let log = dir.0.join("runs.jsonl");
    let pids = dir.0.join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let env = format!(
        "env = {{ FAKE_LOG = \"{}\", FAKE_PID_DIR = \"{}\" }}",
        log.display(),
        pids.display()
    );
    let mut c = format!(
        r#"[server]
address = "127.0.0.1:0"

[auth]
master_key = "{KEY}"

[routing]
health_check_interval_ms = 0
backoff_ms = 10

[providers.cloud]
kind = "openai"
base_url = "{mock}/v1"

[providers.claude]
kind = "cli"
preset = "claude"
command = "{claude}"
max_parallel = {max_parallel}
queue = {queue}
timeout_ms = {timeout_ms}
{env}

[providers.codex]
kind = "cli"
preset = "codex"
command = "{codex}"
timeout_ms = {timeout_ms}
{env}

[providers.gemini]
kind = "cli"
preset = "gemini"
command = "{gemini}"
timeout_ms = {timeout_ms}
{env}

[providers.cmd]
kind = "cli"
preset = "command"
command = "{command}"
args = ["--", "{{prompt}}"]
timeout_ms = {timeout_ms}
{env}

[models.cc]
provider = "claude"
model = "sonnet"

[models.cloud-model]
provider = "cloud"
model = "mock-ok"
"#,
        claude = f.join("claude").display(),
        codex = f.join("codex").display(),
        gemini = f.join("gemini").display(),
        command = f.join("command").display(),
    );
    if !auto_cloud {
        c.push_str(
            "\n[models.cx]\nprovider = \"codex\"\nmodel = \"gpt-5-codex\"\nauto = false\n\n\
             [models.gm]\nprovider = \"gemini\"\nmodel = \"gemini-2.5-pro\"\nauto = false\n\n\
             [models.cmd]\nprovider = \"cmd\"\nmodel = \"default\"\nauto = false\n",
        );
    }
    c
}

fn runs(dir: &TempDir) -> Vec<Value> {
    std::fs::read_to_string(dir.0.join("runs.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether a process is gone (or a zombie nobody has reaped yet).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Zombie processes whose parent is `parent` (children it never reaped).
fn zombies_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: the fields after the last `)`.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (f.next(), f.next().and_then(|p| p.parse::<u32>().ok()));
        if state == Some("Z") && ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Waits until the gateway has reaped every child it ran.
async fn no_zombies(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let z = zombies_of(gw.pid());
        if z.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zombie children of the gateway remain: {z:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn recorded_pids(dir: &TempDir) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.0.join("pids")).unwrap().flatten() {
        let s = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out
}

async fn wait_gone(dir: &TempDir, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let pids = recorded_pids(dir);
        if pids.len() >= 2 && pids.iter().all(|p| gone(*p)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the run and its child still live: {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_preset_answers_and_streams_in_a_clean_environment() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    let gw = Gateway::start_with_env(
        &config(&mock.base_url(), &dir, 2, 4, 20_000, false),
        &[("SECRET_TOKEN", "do-not-leak")],
    )
    .await;
    for (model, preset, provider) in [
        ("cc", "claude", "claude"),
        ("cx", "codex", "codex"),
        ("gm", "gemini", "gemini"),
        ("cmd", "command", "cmd"),
    ] {
        let (st, h, v) = gw.chat(&chat_body(model, "What is the capital of France?")).await;
        assert_eq!(st, 200, "{model}: {v}");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            json!(format!(
                "Hello from {preset}. You said: What is the capital of France?"
            )),
            "{model}"
        );
        assert_eq!(h["x-switchyard-provider"], provider);
        assert_eq!(h["x-switchyard-tier"], "cli");
        if preset != "command" {
            assert!(
                v["usage"]["completion_tokens"].as_u64().unwrap() > 0,
                "{model}: {v}"
            );
        }
        let mut body = chat_body(model, "Say hi");
        body["stream"] = json!(true);
        let (st, _, frames) = gw.chat_stream(&body).await;
        assert_eq!(st, 200);
        let deltas: Vec<String> = frames
            .iter()
            .filter(|f| *f != "[DONE]")
            .filter_map(|f| serde_json::from_str::<Value>(f).ok())
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str().map(String::from))
            .collect();
        assert!(deltas.len() > 1, "{model} streamed in pieces: {deltas:?}");
        assert_eq!(deltas.concat(), format!("Hello from {preset}. You said: Say hi"));
        assert_eq!(frames.last().map(String::as_str), Some("[DONE]"));
    }
    // How they ran: the preset's flags, a fresh working directory (gone after), an environment of
    // the allow-list and the provider's own `env`, never the gateway's secrets.
    let runs = runs(&dir);
    assert_eq!(runs.len(), 8);
    let claude = runs.iter().find(|r| r["preset"] == "claude").unwrap();
    let argv: Vec<&str> = claude["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    for flag in [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--model",
        "sonnet",
    ] {
        assert!(argv.contains(&flag), "{argv:?}");
    }
    let codex = runs.iter().find(|r| r["preset"] == "codex").unwrap();
    assert_eq!(codex["argv"][0], "exec");
    assert!(codex["argv"].as_array().unwrap().contains(&json!("--json")));
    let mut cwds = std::collections::HashSet::new();
    for r in &runs {
        let env: Vec<&str> = r["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(env.contains(&"PATH") && env.contains(&"FAKE_LOG"), "{env:?}");
        assert!(
            !env.contains(&"SECRET_TOKEN"),
            "the gateway's environment leaked: {env:?}"
        );
        let cwd = r["cwd"].as_str().unwrap();
        assert!(cwds.insert(cwd.to_string()), "a working directory was reused");
        assert!(!Path::new(cwd).exists(), "{cwd} was left behind");
    }
}

#[tokio::test]
async fn failures_map_to_errors_and_limits_ban_until_reset() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    let gw = Gateway::start(&config(&mock.base_url(), &dir, 2, 4, 20_000, false)).await;
    // A crash: 502 with the last lines of stderr.
    let (st, _, v) = gw.chat(&chat_body("cx", "please crash now")).await;
    assert_eq!(st, 502, "{v}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("code 3") && msg.contains("fatal: something broke"),
        "{msg}"
    );
    // Usage limits: 429 with Retry-After until the reset, in each dialect.
    let (st, h, v) = gw.chat(&chat_body("cc", "usage-limit please")).await;
    assert_eq!(st, 429, "{v}");
    let wait: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait > 3000, "the ban holds until the reset an hour away: {wait}");
    // The deployment is banned: the next request does not even run the CLI.
    let before = runs(&dir).len();
    let (st, _, v) = gw.chat(&chat_body("cc", "hello again")).await;
    assert_eq!(st, 429, "{v}");
    assert_eq!(runs(&dir).len(), before, "a banned CLI ran again");
    for model in ["cx", "gm"] {
        let (st, _, v) = gw.chat(&chat_body(model, "usage-limit")).await;
        assert_eq!(st, 429, "{model}: {v}");
    }
}

#[tokio::test]
async fn a_hung_cli_is_killed_at_the_deadline_with_its_children() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    let gw = Gateway::start(&config(&mock.base_url(), &dir, 2, 4, 1500, false)).await;
    let t = Instant::now();
    let (st, _, v) = gw.chat(&chat_body("gm", "hang forever")).await;
    assert_eq!(st, 504, "{v}");
    assert!(t.elapsed() < Duration::from_secs(5));
    wait_gone(&dir, Duration::from_secs(3)).await;
    no_zombies(&gw).await;
}

#[tokio::test]
async fn a_client_that_goes_away_kills_the_run() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    let gw = Gateway::start(&config(&mock.base_url(), &dir, 2, 4, 60_000, false)).await;
    let mut body = chat_body("cmd", "hang forever");
    body["stream"] = json!(true);
    let req = gw.post("/v1/chat/completions").json(&body).send();
    // Give up on it once the CLI is running.
    let deadline = Instant::now() + Duration::from_secs(10);
    tokio::select! {
        _ = req => panic!("a hanging CLI answered"),
        () = async {
            while recorded_pids(&dir).len() < 2 {
                assert!(Instant::now() < deadline, "the CLI never started");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } => {}
    }
    // The request future is dropped here: the connection closes.
    wait_gone(&dir, Duration::from_secs(3)).await;
    no_zombies(&gw).await;
}

#[tokio::test]
async fn auto_uses_the_cli_tier_then_the_cloud_when_it_is_busy_or_banned() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    // One run at a time and no queue: a second request finds the CLI busy.
    let gw = Gateway::start(&config(&mock.base_url(), &dir, 1, 0, 2_000, true)).await;
    let (st, h, v) = gw.chat(&chat_body("auto", "Hi there")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (
            h["x-switchyard-tier"].to_str().unwrap(),
            h["x-switchyard-provider"].to_str().unwrap()
        ),
        ("cli", "claude")
    );

    // Busy: while one run hangs, auto goes to the cloud.
    let hang = {
        let c = gw.client.clone();
        let url = gw.url("/v1/chat/completions");
        tokio::spawn(async move {
            c.post(url)
                .bearer_auth(KEY)
                .json(&chat_body("cc", "hang"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded_pids(&dir).len() < 2 {
        assert!(Instant::now() < deadline, "the CLI never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, h, v) = gw.chat(&chat_body("auto", "Hi there")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h["x-switchyard-tier"], "cloud");
    // Asked for directly, a full queue is a 503 with Retry-After.
    let (st, h, v) = gw.chat(&chat_body("cc", "Hi there")).await;
    assert_eq!(st, 503, "{v}");
    assert!(h.contains_key("retry-after"));
    let _ = hang.await;
    wait_gone(&dir, Duration::from_secs(3)).await;
    no_zombies(&gw).await;

    // Banned: a usage limit moves this request to the cloud, and the next ones too.
    let (st, h, v) = gw.chat(&chat_body("auto", "usage-limit")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(h["x-switchyard-tier"], "cloud");
    assert_eq!(
        v["routing_metadata"]["attempts"][0]["provider"],
        json!("claude"),
        "{v}"
    );
    let (st, h, _) = gw.chat(&chat_body("auto", "Hi there")).await;
    assert_eq!(st, 200);
    assert_eq!(h["x-switchyard-tier"], "cloud");
}

#[tokio::test]
async fn tool_calls_come_back_and_the_anthropic_surface_works() {
    let mock = MockServer::start().await.unwrap();
    let dir = TempDir::new();
    let gw = Gateway::start(&config(&mock.base_url(), &dir, 2, 4, 20_000, false)).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    let (st, _, v) = gw
        .chat(&json!({"model": "cc", "tools": tools, "messages": [{"role": "user", "content": "What is the weather in Paris?"}]}))
        .await;
    assert_eq!(st, 200, "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    // The prompt described the tool; the CLI's own tools were switched off.
    let r = runs(&dir).pop().unwrap();
    assert!(r["prompt"].as_str().unwrap().contains("get_weather"));
    let argv = r["argv"].as_array().unwrap();
    let i = argv.iter().position(|a| a == "--tools").unwrap();
    assert_eq!(argv[i + 1], "");

    let (st, _, v) = send(
        gw.client
            .post(gw.url("/v1/messages"))
            .header("x-api-key", KEY)
            .json(&json!({"model": "gm", "max_tokens": 50, "system": "Be brief.", "messages": [{"role": "user", "content": "Hello Gemini"}]})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["content"][0]["text"],
        "Hello from gemini. You said: Hello Gemini"
    );
    let text = gw
        .post("/v1/chat/completions")
        .json(&json!({"model": "cc", "stream": true, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        joined_content(&sse_data(&text)),
        "Hello from claude. You said: Hi",
        "{text}"
    );
    let r = runs(&dir).pop().unwrap();
    let argv = r["argv"].as_array().unwrap();
    let i = argv.iter().position(|a| a == "--system-prompt").unwrap();
    assert_eq!(argv[i + 1], "Be brief.");
}
