//! Command-line model clients as providers (`kind = "cli"`): Claude Code, Codex, Gemini CLI, or any
//! program. Each request runs the program once, in a fresh temporary directory, with an environment
//! limited to an allow-list plus the provider's `env` table, and streams what it prints as canonical
//! events. The process (with its whole process group) is killed when the answer ends, at the
//! deadline, or when the client goes away.
//!
//! Caller-declared tools are described in the prompt and the model's call comes back as `tool_calls`;
//! the CLI's own tools are switched off where the CLI allows it, so nothing is executed on its side.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use protocol::canonical::{self as c, FinishReason, Part, Role, StreamEvent};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;

use super::{ChatOutput, EventStream};
use crate::error::{Error, ErrorKind, Result};

/// How a CLI is driven and read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Claude Code: `-p --output-format stream-json --verbose`.
    Claude,
    /// Codex: `exec --json`.
    Codex,
    /// Gemini CLI: `--output-format stream-json` (its one-object `json` output is read too).
    Gemini,
    /// Any program: stdout is the answer, as text.
    Command,
}

impl Preset {
    pub fn parse(s: &str) -> Option<Preset> {
        Some(match s {
            "claude" => Preset::Claude,
            "codex" => Preset::Codex,
            "gemini" => Preset::Gemini,
            "command" => Preset::Command,
            _ => return None,
        })
    }

    /// The program when `command` is not given.
    pub fn default_command(self) -> Option<&'static str> {
        match self {
            Preset::Claude => Some("claude"),
            Preset::Codex => Some("codex"),
            Preset::Gemini => Some("gemini"),
            Preset::Command => None,
        }
    }
}

/// What the run may see of the gateway's environment (besides the provider's own `env`).
const ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TERM",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "NO_PROXY",
    "https_proxy",
    "http_proxy",
    "no_proxy",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_CACHE_HOME",
];

/// Lines of stderr kept for the error of a failed run.
const STDERR_LINES: usize = 20;

#[derive(Debug)]
pub struct CliProvider {
    name: String,
    preset: Preset,
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    timeout: Duration,
    permits: Arc<Semaphore>,
    max_parallel: usize,
    queue: usize,
    /// Requests waiting for a permit.
    waiting: Arc<AtomicUsize>,
}

/// What [`CliProvider::new`] takes.
#[derive(Debug, Clone)]
pub struct CliOptions {
    pub preset: Preset,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub timeout: Duration,
    pub max_parallel: usize,
    pub queue: usize,
}

impl CliProvider {
    pub fn new(name: &str, o: CliOptions) -> CliProvider {
        let max_parallel = o.max_parallel.max(1);
        CliProvider {
            name: name.to_string(),
            preset: o.preset,
            program: o.command,
            args: o.args,
            env: o.env,
            timeout: o.timeout,
            permits: Arc::new(Semaphore::new(max_parallel)),
            max_parallel,
            queue: o.queue,
            waiting: Arc::default(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether every run slot is taken (a new request would wait): the router tries others first.
    pub fn is_busy(&self) -> bool {
        self.permits.available_permits() == 0
    }

    pub fn max_parallel(&self) -> usize {
        self.max_parallel
    }

    /// Runs the CLI for this conversation and streams its answer.
    pub async fn chat(&self, req: &c::ChatRequest, model: &str) -> Result<(ChatOutput, Vec<String>)> {
        let (prompt, system, warnings) = render(req);
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!(
                            "CLI provider {} is running {} requests and has {} waiting; retry shortly.",
                            self.name, self.max_parallel, self.queue
                        ),
                    )
                    .with_code("queue_full")
                    .with_retry_after(Duration::from_secs(1)));
                }
                let waited = self.permits.clone().acquire_owned().await;
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                waited.map_err(|_| Error::internal("the CLI provider is shutting down"))?
            }
        };
        let run = self.spawn(&prompt, system.as_deref(), model).await?;
        let tools = !req.tools.is_empty() && !matches!(req.tool_choice, Some(c::ToolChoice::None));
        let events = read_run(
            run,
            self.preset,
            self.name.clone(),
            model.to_string(),
            tools,
            permit,
        );
        let events = super::with_deadline(
            events,
            tokio::time::Instant::now() + self.timeout,
            self.name.clone(),
        );
        Ok((ChatOutput::Stream(events), warnings))
    }

    /// The command line of one run: the preset's flags, the provider's `args` (with `{prompt}` and
    /// `{model}` filled in), and whether the prompt goes to stdin.
    fn command_line(&self, prompt: &str, system: Option<&str>, model: &str) -> (Vec<String>, bool) {
        let mut argv: Vec<String> = Vec::new();
        let mut stdin = true;
        match self.preset {
            Preset::Claude => {
                argv.extend(
                    [
                        "-p",
                        "--output-format",
                        "stream-json",
                        "--verbose",
                        "--include-partial-messages",
                    ]
                    .map(String::from),
                );
                // No tools of its own: the caller's tools come back as tool calls, nothing runs here.
                argv.extend(["--tools", ""].map(String::from));
                if !model.is_empty() && model != "default" {
                    argv.extend(["--model".to_string(), model.to_string()]);
                }
                if let Some(s) = system {
                    argv.extend(["--system-prompt".to_string(), s.to_string()]);
                }
            }
            Preset::Codex => {
                argv.extend(
                    [
                        "exec",
                        "--json",
                        "--skip-git-repo-check",
                        "--sandbox",
                        "read-only",
                    ]
                    .map(String::from),
                );
                if !model.is_empty() && model != "default" {
                    argv.extend(["-m".to_string(), model.to_string()]);
                }
            }
            Preset::Gemini => {
                argv.extend(["--output-format", "stream-json"].map(String::from));
                if !model.is_empty() && model != "default" {
                    argv.extend(["-m".to_string(), model.to_string()]);
                }
            }
            Preset::Command => {}
        }
        let mut used_prompt = false;
        for a in &self.args {
            if a.contains("{prompt}") {
                used_prompt = true;
            }
            argv.push(a.replace("{prompt}", prompt).replace("{model}", model));
        }
        if used_prompt {
            stdin = false;
        } else if self.preset == Preset::Codex {
            // `-` as the prompt reads it from stdin, which keeps it off the process list.
            argv.push("-".into());
        }
        (argv, stdin)
    }

    async fn spawn(&self, prompt: &str, system: Option<&str>, model: &str) -> Result<Run> {
        let (argv, via_stdin) = self.command_line(prompt, system, model);
        let dir = std::env::temp_dir().join(format!("switchyard-cli-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::internal(format!("cannot make a working directory: {e}")))?;
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&argv)
            .current_dir(&dir)
            .env_clear()
            .stdin(if via_stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for k in ENV_ALLOW {
            if let Some(v) = std::env::var_os(k) {
                cmd.env(k, v);
            }
        }
        cmd.envs(&self.env);
        #[cfg(unix)]
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            Error::new(
                ErrorKind::Upstream,
                format!("CLI provider {}: cannot run `{}`: {e}", self.name, self.program),
            )
            .with_status(http::StatusCode::BAD_GATEWAY)
        })?;
        let pgid = child.id();
        if via_stdin && let Some(mut stdin) = child.stdin.take() {
            let text = prompt.to_string();
            tokio::spawn(async move {
                let _ = stdin.write_all(text.as_bytes()).await;
                let _ = stdin.shutdown().await;
            });
        }
        let stderr_tail = Arc::new(parking_lot::Mutex::new(VecDeque::<String>::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(err).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut t = tail.lock();
                    if t.len() == STDERR_LINES {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            });
        }
        Ok(Run {
            child,
            pgid,
            dir,
            stderr_tail,
        })
    }
}

/// One running CLI. Dropping it kills the process group and removes the working directory.
struct Run {
    child: tokio::process::Child,
    pgid: Option<u32>,
    dir: PathBuf,
    stderr_tail: Arc<parking_lot::Mutex<VecDeque<String>>>,
}

impl Run {
    fn stderr(&self) -> String {
        self.stderr_tail
            .lock()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.and_then(|p| i32::try_from(p).ok())
            && pgid > 0
        {
            // SAFETY: kill(2) with a negative pid signals the process group this run leads; the id
            // came from the child we spawned with `process_group(0)`.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The conversation as one prompt, the system prompt, and what could not be carried.
fn render(req: &c::ChatRequest) -> (String, Option<String>, Vec<String>) {
    let mut warnings = Vec::new();
    let mut system = Vec::new();
    let mut turns: Vec<(Role, String)> = Vec::new();
    for m in &req.messages {
        let mut text = String::new();
        for p in &m.content {
            match p {
                Part::Text { text: t } => text.push_str(t),
                Part::ToolCall { id, name, arguments } => {
                    text.push_str(&format!("[called tool {name} (call {id}) with {arguments}]"));
                }
                Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                } => {
                    let body: String = content
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text { text } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    let what = if *is_error { "error" } else { "result" };
                    text.push_str(&format!("[tool {what} for call {tool_call_id}: {body}]"));
                }
                Part::Image { .. } => {
                    if !warnings.iter().any(|w: &String| w.starts_with("images")) {
                        warnings.push("images are not passed to CLI providers".into());
                    }
                }
                Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {}
            }
        }
        match m.role {
            Role::System | Role::Developer => system.push(text),
            r => turns.push((r, text)),
        }
    }
    let mut prompt = String::new();
    let last_user = turns.iter().rposition(|(r, _)| *r == Role::User);
    if turns.len() > 1 {
        prompt.push_str(
            "Earlier turns of this conversation, for context only (they are done; do not repeat them):\n\n",
        );
        for (i, (r, t)) in turns.iter().enumerate() {
            if Some(i) == last_user {
                continue;
            }
            let who = match r {
                Role::User => "User",
                Role::Assistant => "Assistant",
                Role::Tool => "Tool",
                _ => "System",
            };
            prompt.push_str(&format!("{who}: {t}\n\n"));
        }
        prompt.push_str("Now answer this message:\n\n");
    }
    if let Some(i) = last_user {
        prompt.push_str(&turns[i].1);
    }
    if !req.tools.is_empty() && !matches!(req.tool_choice, Some(c::ToolChoice::None)) {
        prompt.push_str(&tool_instructions(req));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (prompt, system, warnings)
}

fn tool_instructions(req: &c::ChatRequest) -> String {
    let mut s = String::from("\n\nYou can call these functions (the caller runs them, not you):\n");
    for t in &req.tools {
        s.push_str(&format!(
            "- {}: {} Parameters (JSON Schema): {}\n",
            t.name,
            t.description.as_deref().unwrap_or(""),
            t.parameters
        ));
    }
    s.push_str(
        "To call one or more, answer with only this JSON and nothing else: \
         {\"tool_calls\": [{\"name\": \"<function>\", \"arguments\": {...}}]}\n\
         Otherwise answer normally.",
    );
    if matches!(
        req.tool_choice,
        Some(c::ToolChoice::Required) | Some(c::ToolChoice::Tool { .. })
    ) {
        s.push_str(" You must call a function.");
    }
    s
}

/// Tool calls in an answer, if the whole answer is the JSON [`tool_instructions`] asks for (a code
/// fence around it is tolerated).
pub fn parse_tool_calls(text: &str) -> Option<Vec<(String, String)>> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .unwrap_or(t)
        .trim();
    let v: Value = serde_json::from_str(t).ok()?;
    let calls = v.get("tool_calls")?.as_array()?;
    let out: Vec<(String, String)> = calls
        .iter()
        .map(|c| {
            let name = c.get("name")?.as_str()?.to_string();
            // Arguments must be a JSON object (or a string holding one); anything else means the
            // answer was not a tool call after all, and it is returned as text.
            let args = match c
                .get("arguments")
                .cloned()
                .unwrap_or(Value::Object(Default::default()))
            {
                Value::String(s) => serde_json::from_str::<Value>(&s).ok().filter(Value::is_object)?,
                v @ Value::Object(_) => v,
                _ => return None,
            };
            Some((name, args.to_string()))
        })
        .collect::<Option<Vec<_>>>()?;
    (!out.is_empty()).then_some(out)
}

/// What one line of a CLI's output means.
#[derive(Debug)]
pub enum Line {
    Text(String),
    Reasoning(String),
    Usage(c::Usage),
    /// The run is over, successfully (with its final text when the CLI gives it in one piece and
    /// none was streamed).
    Done(Option<String>),
    Failed(Error),
    /// A usage limit was hit; it resets at this unix time (when known).
    LimitResets(Option<u64>),
    Nothing,
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// Claude Code's `stream-json` lines.
pub fn claude_line(v: &Value) -> Line {
    match v.get("type").and_then(Value::as_str) {
        Some("stream_event") => {
            let ev = &v["event"];
            if ev["type"] == "content_block_delta" {
                match ev["delta"]["type"].as_str() {
                    Some("text_delta") => {
                        return Line::Text(ev["delta"]["text"].as_str().unwrap_or("").to_string());
                    }
                    Some("thinking_delta") => {
                        return Line::Reasoning(ev["delta"]["thinking"].as_str().unwrap_or("").to_string());
                    }
                    _ => {}
                }
            }
            Line::Nothing
        }
        // Whole `assistant` messages are skipped: the text comes from the partial events, or whole
        // from the `result` line (a failed call also writes a synthetic assistant message first).
        Some("result") => {
            let is_error = v["is_error"].as_bool().unwrap_or(false)
                || v["subtype"].as_str().is_some_and(|s| s != "success");
            let result = v["result"].as_str().unwrap_or("");
            if is_error {
                let status = v["api_error_status"].as_u64();
                return Line::Failed(claude_error(
                    result,
                    v["subtype"].as_str().unwrap_or("error"),
                    status,
                    None,
                ));
            }
            Line::Done((!result.is_empty()).then(|| result.to_string()))
        }
        // A refused rate limit says when it resets; the result line that follows fails.
        Some("rate_limit_event") if v["rate_limit_info"]["status"] == "rejected" => {
            Line::LimitResets(v["rate_limit_info"]["resetsAt"].as_u64())
        }
        _ => Line::Nothing,
    }
}

/// Claude Code's usage of a `result` line.
pub fn claude_usage(v: &Value) -> Option<c::Usage> {
    let u = v.get("usage")?;
    let cache_read = num(u, "cache_read_input_tokens");
    let cache_write = num(u, "cache_creation_input_tokens");
    Some(c::Usage {
        input_tokens: num(u, "input_tokens") + cache_read + cache_write,
        output_tokens: num(u, "output_tokens"),
        cache_read_tokens: cache_read,
        cache_creation_tokens: cache_write,
        ..c::Usage::default()
    })
}

/// A failed Claude Code run. A usage limit (`api_error_status: 429`, "You've hit your limit · resets
/// …", or the older "Claude AI usage limit reached|<unix seconds>") is a 429 that holds until the
/// reset, so the router bans the deployment until then.
fn claude_error(result: &str, subtype: &str, status: Option<u64>, resets_at: Option<u64>) -> Error {
    let lower = result.to_ascii_lowercase();
    if status == Some(429)
        || resets_at.is_some()
        || lower.contains("usage limit")
        || lower.contains("hit your")
        || lower.contains("limit reached")
        || lower.contains("rate limit")
    {
        let now = crate::store::now_secs();
        let wait = result
            .rsplit_once('|')
            .and_then(|(_, ts)| ts.trim().parse::<u64>().ok())
            .or(resets_at)
            .map_or(Duration::from_secs(300), |reset| {
                Duration::from_secs(reset.saturating_sub(now).max(1))
            });
        let msg = result.split('|').next().unwrap_or(result).trim();
        return Error::new(ErrorKind::Upstream, format!("Claude Code: {msg}"))
            .with_status(http::StatusCode::TOO_MANY_REQUESTS)
            .with_retry_after(wait);
    }
    let msg = if result.is_empty() { subtype } else { result };
    Error::new(ErrorKind::Upstream, format!("Claude Code failed: {msg}"))
        .with_status(http::StatusCode::BAD_GATEWAY)
}

/// Codex's `exec --json` lines.
pub fn codex_line(v: &Value) -> Line {
    match v.get("type").and_then(Value::as_str) {
        Some("item.completed") => {
            let item = &v["item"];
            let text = item["text"].as_str().unwrap_or("").to_string();
            // Earlier versions said `item_type` and `assistant_message`.
            let kind = item["type"].as_str().or_else(|| item["item_type"].as_str());
            match kind {
                Some("agent_message" | "assistant_message") if !text.is_empty() => Line::Text(text),
                Some("reasoning") if !text.is_empty() => Line::Reasoning(text),
                _ => Line::Nothing,
            }
        }
        Some("turn.completed") => {
            let u = &v["usage"];
            let cached = num(u, "cached_input_tokens");
            Line::Usage(c::Usage {
                input_tokens: num(u, "input_tokens"),
                output_tokens: num(u, "output_tokens"),
                cache_read_tokens: cached,
                ..c::Usage::default()
            })
        }
        Some("turn.failed") => Line::Failed(cli_error(
            "Codex",
            v["error"]["message"].as_str().unwrap_or("the turn failed"),
        )),
        Some("error") => Line::Failed(cli_error("Codex", v["message"].as_str().unwrap_or("error"))),
        _ => Line::Nothing,
    }
}

/// Gemini CLI's `--output-format json` answer (one object).
pub fn gemini_answer(v: &Value) -> Vec<Line> {
    if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
        let msg = e["message"].as_str().unwrap_or("error");
        return vec![Line::Failed(cli_error("Gemini CLI", msg))];
    }
    let mut out = Vec::new();
    if let Some(t) = v["response"].as_str().filter(|t| !t.is_empty()) {
        out.push(Line::Text(t.to_string()));
    }
    let mut usage = c::Usage::default();
    if let Some(models) = v["stats"]["models"].as_object() {
        for m in models.values() {
            let t = &m["tokens"];
            usage.input_tokens += num(t, "prompt");
            usage.output_tokens += num(t, "candidates");
            usage.cache_read_tokens += num(t, "cached");
            usage.reasoning_tokens += num(t, "thoughts");
        }
        out.push(Line::Usage(usage));
    }
    out.push(Line::Done(None));
    out
}

/// Gemini CLI's `stream-json` lines (and its one-object `json` answer).
pub fn gemini_line(v: &Value) -> Vec<Line> {
    match v.get("type").and_then(Value::as_str) {
        Some("message") if v["role"] == "assistant" => {
            vec![Line::Text(v["content"].as_str().unwrap_or("").to_string())]
        }
        Some("result") => {
            if v["status"] == "error" {
                let msg = v["error"]["message"].as_str().unwrap_or("error");
                return vec![Line::Failed(cli_error("Gemini CLI", msg))];
            }
            let s = &v["stats"];
            vec![
                Line::Usage(c::Usage {
                    input_tokens: num(s, "input_tokens"),
                    output_tokens: num(s, "output_tokens"),
                    cache_read_tokens: num(s, "cached"),
                    ..c::Usage::default()
                }),
                Line::Done(None),
            ]
        }
        Some(_) => vec![Line::Nothing],
        None if v.get("response").is_some() || v.get("error").is_some() => gemini_answer(v),
        None => vec![Line::Nothing],
    }
}

/// A CLI's error: quota and rate limits are 429s (the router bans and moves on); the rest 502.
fn cli_error(who: &str, msg: &str) -> Error {
    let lower = msg.to_ascii_lowercase();
    let status = if lower.contains("quota")
        || lower.contains("rate limit")
        || lower.contains("usage limit")
        || lower.contains("429")
    {
        http::StatusCode::TOO_MANY_REQUESTS
    } else {
        http::StatusCode::BAD_GATEWAY
    };
    Error::new(ErrorKind::Upstream, format!("{who}: {msg}")).with_status(status)
}

/// State of reading one run.
struct Reader {
    run: Run,
    preset: Preset,
    provider: String,
    model: String,
    /// Caller tools: buffer the text, since the whole answer may be a tool call.
    tools: bool,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    pending: VecDeque<Result<StreamEvent>>,
    started: bool,
    streamed: bool,
    buffered: String,
    usage: Option<c::Usage>,
    resets_at: Option<u64>,
    done: bool,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

fn read_run(
    mut run: Run,
    preset: Preset,
    provider: String,
    model: String,
    tools: bool,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> EventStream {
    let stdout = run.child.stdout.take();
    let (lines, raw) = match (preset, stdout) {
        (Preset::Command, Some(s)) => (None, Some(s)),
        (_, Some(s)) => (Some(BufReader::new(s).lines()), None),
        (_, None) => (None, None),
    };
    let Some(lines) = lines else {
        // `command` reads raw bytes.
        return read_raw(run, raw, provider, model, permit);
    };
    let st = Reader {
        run,
        preset,
        provider,
        model,
        tools,
        lines,
        pending: VecDeque::new(),
        started: false,
        streamed: false,
        buffered: String::new(),
        usage: None,
        resets_at: None,
        done: false,
        _permit: permit,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((ev, st));
            }
            if st.done {
                return None;
            }
            let line = match st.lines.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => {
                    st.finish().await;
                    continue;
                }
                Err(e) => {
                    st.fail(Error::bad_gateway(format!("CLI provider {}: {e}", st.provider)));
                    continue;
                }
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue; // banners and progress lines are not events
            };
            let parsed = match st.preset {
                Preset::Claude => {
                    if v["type"] == "result"
                        && let Some(u) = claude_usage(&v)
                    {
                        st.usage = Some(u);
                    }
                    let l = claude_line(&v);
                    vec![l]
                }
                Preset::Codex => vec![codex_line(&v)],
                Preset::Gemini => gemini_line(&v),
                Preset::Command => vec![Line::Nothing],
            };
            for l in parsed {
                st.apply(l);
            }
        }
    })
    .boxed()
}

impl Reader {
    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.pending.push_back(Ok(start_event(&self.model)));
        }
    }

    fn text(&mut self, t: String) {
        self.streamed = true;
        if self.tools {
            self.buffered.push_str(&t);
        } else {
            self.start();
            self.pending
                .push_back(Ok(StreamEvent::TextDelta { choice: 0, text: t }));
        }
    }

    fn apply(&mut self, l: Line) {
        match l {
            Line::Text(t) => self.text(t),
            Line::Reasoning(t) => {
                self.start();
                self.pending
                    .push_back(Ok(StreamEvent::ReasoningDelta { choice: 0, text: t }));
            }
            Line::Usage(u) => self.usage = Some(u),
            Line::Done(text) => {
                if let Some(t) = text
                    && !self.streamed
                {
                    self.text(t);
                }
                self.end(FinishReason::Stop);
            }
            Line::Failed(e) => {
                // A Claude limit's reset time comes on the line before the failure.
                let e = match (self.resets_at, e.retry_after()) {
                    (Some(at), _) if e.status() == http::StatusCode::BAD_GATEWAY => {
                        claude_error(&e.message, "error", Some(429), Some(at))
                    }
                    (Some(at), Some(_)) => {
                        let now = crate::store::now_secs();
                        e.with_retry_after(Duration::from_secs(at.saturating_sub(now).max(1)))
                    }
                    _ => e,
                };
                self.fail(e)
            }
            Line::LimitResets(at) => self.resets_at = at.or(self.resets_at),
            Line::Nothing => {}
        }
    }

    /// The answer is complete: tool calls (when the buffered answer is one), usage, finish.
    fn end(&mut self, reason: FinishReason) {
        if self.done {
            return;
        }
        self.start();
        let mut reason = reason;
        if self.tools {
            let text = std::mem::take(&mut self.buffered);
            match parse_tool_calls(&text) {
                Some(calls) => {
                    for (i, (name, args)) in calls.into_iter().enumerate() {
                        let index = i as u32;
                        self.pending.push_back(Ok(StreamEvent::ToolCallStart {
                            choice: 0,
                            index,
                            id: format!("call_{:016x}", rand::random::<u64>()),
                            name,
                        }));
                        self.pending.push_back(Ok(StreamEvent::ToolCallDelta {
                            choice: 0,
                            index,
                            arguments: args,
                        }));
                    }
                    reason = FinishReason::ToolCalls;
                }
                None if !text.is_empty() => {
                    self.pending
                        .push_back(Ok(StreamEvent::TextDelta { choice: 0, text }));
                }
                None => {}
            }
        }
        self.pending.push_back(Ok(StreamEvent::Finish {
            choice: 0,
            reason,
            stop_sequence: None,
        }));
        if let Some(u) = self.usage.take() {
            self.pending.push_back(Ok(StreamEvent::Usage { usage: u }));
        }
        self.done = true;
    }

    fn fail(&mut self, e: Error) {
        if !self.done {
            self.pending.push_back(Err(e));
            self.done = true;
        }
    }

    /// Stdout closed: the exit status decides between an answer and an error.
    async fn finish(&mut self) {
        if self.done {
            return;
        }
        let status = tokio::time::timeout(Duration::from_secs(5), self.run.child.wait()).await;
        let ok = matches!(&status, Ok(Ok(s)) if s.success());
        if ok && (self.streamed || self.preset == Preset::Command) {
            self.end(FinishReason::Stop);
            return;
        }
        let e = exit_error(&self.provider, status.ok(), &self.run.stderr());
        self.fail(e);
    }
}

/// `command`: stdout is the answer, streamed as it comes.
fn read_raw(
    run: Run,
    raw: Option<tokio::process::ChildStdout>,
    provider: String,
    model: String,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> EventStream {
    struct Raw {
        run: Run,
        out: Option<tokio::process::ChildStdout>,
        partial: Vec<u8>,
        reader: ReaderLite,
        _permit: tokio::sync::OwnedSemaphorePermit,
    }
    struct ReaderLite {
        pending: VecDeque<Result<StreamEvent>>,
        started: bool,
        done: bool,
        provider: String,
        model: String,
        any: bool,
    }
    let st = Raw {
        run,
        out: raw,
        partial: Vec::new(),
        reader: ReaderLite {
            pending: VecDeque::new(),
            started: false,
            done: false,
            provider,
            model,
            any: false,
        },
        _permit: permit,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.reader.pending.pop_front() {
                return Some((ev, st));
            }
            if st.reader.done {
                return None;
            }
            let mut buf = [0u8; 4096];
            let n = match st.out.as_mut() {
                Some(o) => o.read(&mut buf).await.unwrap_or(0),
                None => 0,
            };
            if n == 0 {
                let status = tokio::time::timeout(Duration::from_secs(5), st.run.child.wait()).await;
                match status {
                    Ok(Ok(s)) if s.success() => {
                        if !st.reader.started {
                            st.reader.started = true;
                            st.reader.pending.push_back(Ok(start_event(&st.reader.model)));
                        }
                        let rest = String::from_utf8_lossy(&std::mem::take(&mut st.partial)).into_owned();
                        if !rest.is_empty() {
                            st.reader.pending.push_back(Ok(StreamEvent::TextDelta {
                                choice: 0,
                                text: rest,
                            }));
                        }
                        st.reader.pending.push_back(Ok(StreamEvent::Finish {
                            choice: 0,
                            reason: FinishReason::Stop,
                            stop_sequence: None,
                        }));
                    }
                    other => {
                        let e = exit_error(&st.reader.provider, other.ok(), &st.run.stderr());
                        st.reader.pending.push_back(Err(e));
                    }
                }
                st.reader.done = true;
                continue;
            }
            st.partial.extend_from_slice(&buf[..n]);
            // Emit the longest valid UTF-8 prefix; keep a split character for the next read.
            let valid = match std::str::from_utf8(&st.partial) {
                Ok(s) => s.len(),
                Err(e) => e.valid_up_to(),
            };
            if valid == 0 {
                continue;
            }
            let text = String::from_utf8_lossy(&st.partial[..valid]).into_owned();
            st.partial.drain(..valid);
            if !st.reader.started {
                st.reader.started = true;
                st.reader.pending.push_back(Ok(start_event(&st.reader.model)));
            }
            st.reader.any = true;
            st.reader
                .pending
                .push_back(Ok(StreamEvent::TextDelta { choice: 0, text }));
        }
    })
    .boxed()
}

/// A run that ended without an answer: a 502 with how it exited and the last lines of its stderr.
fn exit_error(
    provider: &str,
    status: Option<std::io::Result<std::process::ExitStatus>>,
    stderr_tail: &str,
) -> Error {
    let code = match status {
        Some(Ok(s)) => s
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("code {c}")),
        _ => "an unknown status".into(),
    };
    let sep = if stderr_tail.is_empty() { "" } else { ": " };
    Error::new(
        ErrorKind::Upstream,
        format!("CLI provider {provider} exited with {code} before answering{sep}{stderr_tail}"),
    )
    .with_status(http::StatusCode::BAD_GATEWAY)
}

fn start_event(model: &str) -> StreamEvent {
    StreamEvent::Start {
        id: format!("chatcmpl-cli{:016x}", rand::random::<u64>()),
        model: model.to_string(),
        created: crate::store::now_secs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tool_calls_are_read_from_the_whole_answer() {
        let calls = parse_tool_calls(
            "```json\n{\"tool_calls\": [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]}\n```",
        )
        .unwrap();
        assert_eq!(calls, vec![("get_weather".into(), "{\"city\":\"Paris\"}".into())]);
        assert!(parse_tool_calls("Paris is sunny.").is_none());
        // Arguments that are not a JSON object: not a tool call, the answer stays text.
        assert!(parse_tool_calls(r#"{"tool_calls": [{"name": "f", "arguments": "oops"}]}"#).is_none());
        assert!(parse_tool_calls(r#"{"tool_calls": [{"name": "f", "arguments": [1]}]}"#).is_none());
        assert!(parse_tool_calls(r#"{"tool_calls": [{"arguments": {}}]}"#).is_none());
    }

    #[test]
    fn claude_lines() {
        let delta = json!({"type": "stream_event", "event": {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}});
        assert!(matches!(claude_line(&delta), Line::Text(t) if t == "Hi"));
        let whole = json!({"type": "assistant", "message": {"content": [{"type": "text", "text": "Hi"}]}});
        assert!(matches!(claude_line(&whole), Line::Nothing));
        assert!(matches!(claude_line(&whole), Line::Nothing));
        let limit = json!({"type": "result", "subtype": "success", "is_error": true, "result": "Claude AI usage limit reached|4102444800"});
        let Line::Failed(e) = claude_line(&limit) else {
            panic!("not a failure")
        };
        assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
        assert!(e.retry_after().unwrap() > Duration::from_secs(3600));
        let ok = json!({"type": "result", "subtype": "success", "is_error": false, "result": "Hi", "usage": {"input_tokens": 3, "cache_read_input_tokens": 10, "output_tokens": 2}});
        assert!(matches!(claude_line(&ok), Line::Done(Some(t)) if t == "Hi"));
        let u = claude_usage(&ok).unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (13, 10, 2)
        );
    }

    #[test]
    fn codex_and_gemini_lines() {
        let msg = json!({"type": "item.completed", "item": {"id": "item_1", "type": "agent_message", "text": "Hi"}});
        assert!(matches!(codex_line(&msg), Line::Text(t) if t == "Hi"));
        let usage = json!({"type": "turn.completed", "usage": {"input_tokens": 5, "cached_input_tokens": 1, "output_tokens": 2}});
        assert!(matches!(codex_line(&usage), Line::Usage(u) if u.output_tokens == 2));
        let g = json!({"response": "Hi", "stats": {"models": {"gemini-2.5-pro": {"tokens": {"prompt": 4, "candidates": 1, "total": 5, "cached": 0}}}}});
        let lines = gemini_answer(&g);
        assert!(matches!(&lines[0], Line::Text(t) if t == "Hi"));
        assert!(matches!(lines.last(), Some(Line::Done(None))));
        let quota =
            json!({"error": {"type": "ApiError", "message": "Quota exceeded for quota metric", "code": 429}});
        let Line::Failed(e) = &gemini_answer(&quota)[0] else {
            panic!("not a failure")
        };
        assert_eq!(e.status(), http::StatusCode::TOO_MANY_REQUESTS);
    }

    #[test]
    fn history_is_rendered_once_and_the_system_prompt_apart() {
        let req = c::ChatRequest {
            model: "m".into(),
            messages: vec![
                c::Message::new(Role::System, vec![Part::text("Be brief.")]),
                c::Message::new(Role::User, vec![Part::text("Hi")]),
                c::Message::new(Role::Assistant, vec![Part::text("Hello!")]),
                c::Message::new(Role::User, vec![Part::text("Capital of France?")]),
            ],
            ..serde_json::from_value(json!({"model": "m", "messages": []})).unwrap()
        };
        let (prompt, system, _) = render(&req);
        assert_eq!(system.as_deref(), Some("Be brief."));
        assert!(prompt.contains("User: Hi") && prompt.contains("Assistant: Hello!"));
        assert!(prompt.ends_with("Capital of France?"));
    }
}
