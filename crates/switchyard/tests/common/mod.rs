//! Shared harness of the black-box tests: a `mock-upstream` in process, the real `switchyard` binary
//! as a child process (killed on drop) with a config written to a temp dir, and helpers to call it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mock_upstream::MockServer;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// The master key every standard config sets.
pub const KEY: &str = "sk-test-master-key";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchyard")
}

/// A temp directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "switchyard-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// Writes `text` to `name` inside the dir and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// The standard config: master key [`KEY`], provider `mock` at `upstream` (e.g. `http://127.0.0.1:P`),
/// a provider `short` (400 ms whole-request timeout), a provider `idle` (300 ms idle timeout), a
/// provider `refused` on a closed port, and one public model per behaviour the tests need.
pub fn standard_config(upstream: &str) -> String {
    let refused = closed_port();
    let mut c = format!(
        r#"[server]
address = "127.0.0.1:0"
max_body_bytes = 65536

[auth]
master_key = "{KEY}"

# These suites test the spine's own answers to each upstream failure; routing (retries, the breaker,
# health checks) has its own suite, tests/routing.rs.
[routing]
max_attempts = 1
health_check_interval_ms = 0
[routing.breaker]
failures = 1000000
min_requests = 1000000

[providers.mock]
kind = "openai"
base_url = "{upstream}/v1"
api_key = "sk-upstream"

[providers.short]
kind = "openai"
base_url = "{upstream}/v1"
timeout_ms = 400

[providers.idle]
kind = "openai"
base_url = "{upstream}/v1"
idle_timeout_ms = 300

[providers.refused]
kind = "openai"
base_url = "http://127.0.0.1:{refused}/v1"
connect_timeout_ms = 2000
"#
    );
    let models: &[(&str, &str, &str)] = &[
        ("gpt-mock", "mock", "mock-ok"),
        ("gpt-tools", "mock", "mock-ok+tools=1"),
        ("gpt-delay", "mock", "mock-ok+delay=5"),
        ("gpt-slow", "mock", "mock-ok+delay=200+tokens=50"),
        ("gpt-429", "mock", "mock-ok+status=429+retry_after=7"),
        ("gpt-400", "mock", "mock-ok+status=400"),
        ("gpt-500", "mock", "mock-ok+status=500"),
        ("gpt-garbage", "mock", "mock-ok+garbage"),
        ("gpt-truncate", "mock", "mock-ok+truncate"),
        ("gpt-drop", "mock", "mock-ok+drop_after=2+tokens=10"),
        ("gpt-error-after", "mock", "mock-ok+error_after=2+tokens=10"),
        ("gpt-hang", "short", "mock-ok+hang"),
        ("gpt-hang-after", "idle", "mock-ok+hang_after=2+tokens=10"),
        ("gpt-refused", "refused", "mock-ok"),
    ];
    for (public, provider, upstream_model) in models {
        c.push_str(&format!(
            "\n[models.{public}]\nprovider = \"{provider}\"\nmodel = \"{upstream_model}\"\n"
        ));
    }
    c
}

/// A running `switchyard serve`, killed on drop.
pub struct Gateway {
    pub url: String,
    pub client: reqwest::Client,
    pub config_path: PathBuf,
    child: Child,
    stderr: Arc<Mutex<String>>,
    _dir: TempDir,
}

impl Gateway {
    /// Starts the binary with this config text and waits for its `listening on` line.
    pub async fn start(config: &str) -> Gateway {
        Self::start_with_env(config, &[]).await
    }

    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Gateway {
        let dir = TempDir::new();
        let home = dir.0.join("home");
        Self::start_in(dir, &home, config, env).await
    }

    /// Starts with its data in `home` (which outlives it, to start another gateway on the same data).
    pub async fn start_at(home: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        Self::start_in(TempDir::new(), home, config, env).await
    }

    async fn start_in(dir: TempDir, home: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Gateway {
        let config_path = dir.write("switchyard.toml", config);
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env("SWITCHYARD_LOG", "warn")
            .env("SWITCHYARD_HOME", home)
            .env_remove("SWITCHYARD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn switchyard");
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut err = child.stderr.take().unwrap();
            let buf = stderr.clone();
            tokio::spawn(async move {
                let mut chunk = vec![0u8; 8192];
                while let Ok(n) = err.read(&mut chunk).await {
                    if n == 0 {
                        break;
                    }
                    buf.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&chunk[..n]));
                }
            });
        }
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let url = tokio::time::timeout(Duration::from_secs(20), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    return Some(rest.trim().to_string());
                }
            }
            None
        })
        .await;
        let url = match url {
            Ok(Some(u)) => u,
            other => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "switchyard did not start ({other:?}); stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Gateway {
            url,
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .unwrap(),
            config_path,
            child,
            stderr,
            _dir: dir,
        }
    }

    /// The mock and a gateway on the standard config.
    pub async fn with_mock() -> (MockServer, Gateway) {
        let mock = MockServer::start().await.unwrap();
        let gw = Gateway::start(&standard_config(&mock.base_url())).await;
        (mock, gw)
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The process id (for its memory).
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// `kill -9`, and waits for the process to be gone.
    pub async fn kill9(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Waits up to `within` for the process to exit; its exit code, `None` if it is still running (or
    /// was killed by a signal).
    pub async fn wait(&mut self, within: Duration) -> Option<i32> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(Ok(status)) => status.code(),
            _ => None,
        }
    }

    /// Resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// A POST with the master key as a bearer token.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(KEY)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.url(path)).bearer_auth(KEY)
    }

    /// POST /v1/chat/completions with the master key; returns status, headers and the body as JSON
    /// (`Value::String` when it is not JSON).
    pub async fn chat(&self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        send(self.post("/v1/chat/completions").json(body)).await
    }

    /// A streamed chat: status, headers and the `data:` payloads in order (`[DONE]` included).
    pub async fn chat_stream(&self, body: &Value) -> (StatusCode, HeaderMap, Vec<String>) {
        let resp = self.post("/v1/chat/completions").json(body).send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = tokio::time::timeout(Duration::from_secs(10), resp.text())
            .await
            .expect("the stream ended in time")
            .unwrap();
        (status, headers, sse_data(&text))
    }

    /// The body of `GET /metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Sends a request and decodes the answer.
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, HeaderMap, Value) {
    let resp = tokio::time::timeout(Duration::from_secs(10), req.send())
        .await
        .expect("answered in time")
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// The `data:` payloads of an SSE body.
pub fn sse_data(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|ev| {
            let data: Vec<&str> = ev
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            (!data.is_empty()).then(|| data.join("\n"))
        })
        .collect()
}

/// A minimal valid chat body.
pub fn chat_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}]})
}

/// Asserts the OpenAI error envelope: exactly the four keys, this `type`, this `param`, and a non-empty
/// message. Returns the error object.
pub fn assert_envelope(body: &Value, ty: &str, param: Option<&str>) -> Value {
    let err = body
        .get("error")
        .unwrap_or_else(|| panic!("no `error` in {body}"));
    let obj = err
        .as_object()
        .unwrap_or_else(|| panic!("`error` is not an object: {body}"));
    for k in ["message", "type", "param", "code"] {
        assert!(obj.contains_key(k), "`error.{k}` missing in {body}");
    }
    assert!(
        obj["message"].as_str().is_some_and(|m| !m.is_empty()),
        "empty message in {body}"
    );
    assert_eq!(obj["type"], json!(ty), "error.type in {body}");
    match param {
        Some(p) => assert_eq!(obj["param"], json!(p), "error.param in {body}"),
        None => assert!(obj["param"].is_null(), "error.param should be null in {body}"),
    }
    err.clone()
}

/// The text of a stream's content deltas joined, from parsed `data:` payloads.
pub fn joined_content(frames: &[String]) -> String {
    frames
        .iter()
        .filter(|f| f.as_str() != "[DONE]")
        .filter_map(|f| serde_json::from_str::<Value>(f).ok())
        .filter_map(|v| {
            v.pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// Runs `switchyard` with args to completion: exit success, stdout, stderr.
pub fn run_cli(args: &[&OsStr], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args).env("SWITCHYARD_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- Postgres and Redis (the suites that share state between replicas) ----

pub fn env_urls(test: &str) -> Option<(String, String)> {
    match (std::env::var("DATABASE_URL"), std::env::var("REDIS_URL")) {
        (Ok(d), Ok(r)) if d.starts_with("postgres") && r.starts_with("redis") => Some((d, r)),
        _ => {
            eprintln!(
                "\n!!! SKIPPED {test}: DATABASE_URL (postgres://…) and REDIS_URL (redis://…) are not both set.\n\
                 !!! scripts/test.sh sets them when Postgres and Redis run on this machine.\n"
            );
            None
        }
    }
}

/// A fresh database on the server of `admin_url`; its URL.
pub async fn fresh_database(admin_url: &str) -> String {
    sqlx::any::install_default_drivers();
    let name = format!("sy_test_{:016x}", rand_u64());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(admin_url)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let query = admin_url
        .split_once('?')
        .map(|(_, q)| format!("?{q}"))
        .unwrap_or_default();
    format!("{base}/{name}{query}")
}

pub fn rand_u64() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    static N: AtomicU64 = AtomicU64::new(0);
    t ^ (u64::from(std::process::id()) << 32) ^ (N.fetch_add(1, Ordering::Relaxed) << 48)
}

/// Where a gateway keeps its state in a test: the default (SQLite in its data directory, counters in
/// memory), or a fresh Postgres database and Redis (with a prefix of its own).
pub struct Backend {
    pub name: &'static str,
    /// The `[state]` table to append to a config (empty for the default).
    pub state: String,
}

impl Backend {
    pub fn local() -> Backend {
        Backend {
            name: "sqlite",
            state: String::new(),
        }
    }

    /// Postgres and Redis from `DATABASE_URL` / `REDIS_URL`; `None` (said loudly) when unset.
    pub async fn shared(test: &str) -> Option<Backend> {
        let (admin, redis) = env_urls(test)?;
        let db = fresh_database(&admin).await;
        Some(Backend {
            name: "postgres+redis",
            state: format!(
                "\n[state]\ndatabase_url = \"{db}\"\nredis_url = \"{redis}\"\nredis_prefix = \"sytest{:x}:\"\n",
                rand_u64()
            ),
        })
    }
}
