//! Shared plumbing: errors, auth, request prelude, text helpers, reply planning, body faults.

use std::io;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::opts::Opts;
use crate::state::MockState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
    /// Google Gemini (Generative Language API): `{"error": {"code", "message", "status"}}`.
    Gemini,
    /// AWS Bedrock Runtime: `{"message"}` plus an `x-amzn-errortype` header.
    Bedrock,
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- errors

fn openai_error_kind(status: u16) -> (&'static str, Value) {
    match status {
        400 => ("invalid_request_error", Value::Null),
        401 => ("authentication_error", json!("invalid_api_key")),
        403 => ("permission_error", Value::Null),
        404 => ("invalid_request_error", json!("model_not_found")),
        429 => ("rate_limit_error", json!("rate_limit_exceeded")),
        s if s >= 500 => ("server_error", Value::Null),
        _ => ("invalid_request_error", Value::Null),
    }
}

fn anthropic_error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

/// Google's canonical status name for an HTTP status.
pub fn gemini_status(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

/// The AWS error type (`x-amzn-errortype`, without the `:namespace` suffix) for an HTTP status.
pub fn bedrock_error_type(status: u16) -> &'static str {
    match status {
        400 => "ValidationException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        408 => "ModelTimeoutException",
        424 => "ModelErrorException",
        429 => "ThrottlingException",
        503 => "ServiceUnavailableException",
        s if s >= 500 => "InternalServerException",
        _ => "ValidationException",
    }
}

/// The dialect's error envelope as JSON.
pub fn error_body(dialect: Dialect, status: u16, message: &str) -> Value {
    match dialect {
        Dialect::Gemini => {
            json!({"error": {"code": status, "message": message, "status": gemini_status(status)}})
        }
        Dialect::Bedrock => json!({"message": message}),
        Dialect::OpenAi => {
            let (ty, code) = openai_error_kind(status);
            json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        }
        Dialect::Anthropic => {
            json!({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})
        }
    }
}

/// An error response with the dialect's envelope (and `Retry-After` when given).
pub fn error_response(dialect: Dialect, status: u16, message: &str, retry_after: Option<u64>) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut body = error_body(dialect, code.as_u16(), message);
    if dialect == Dialect::Gemini
        && let (Some(secs), Some(err)) = (retry_after, body.get_mut("error").and_then(Value::as_object_mut))
    {
        err.insert(
            "details".into(),
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{secs}s")}]),
        );
    }
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    if dialect == Dialect::Anthropic && status == 429 {
        h.insert("x-should-retry", HeaderValue::from_static("true"));
    }
    if dialect == Dialect::Bedrock {
        let ty = bedrock_error_type(code.as_u16());
        if let Ok(v) = HeaderValue::from_str(&format!("{ty}:{BEDROCK_ERROR_NAMESPACE}")) {
            h.insert("x-amzn-errortype", v);
        }
    }
    resp
}

/// What AWS appends to `x-amzn-errortype` after the `:` for Bedrock's own errors.
pub const BEDROCK_ERROR_NAMESPACE: &str = "http://internal.amazon.com/coral/com.amazon.bedrock/";

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    v.strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("bearer "))
        .map(str::trim)
}

fn check_auth(state: &MockState, dialect: Dialect, headers: &HeaderMap) -> Option<Response> {
    let key = state.require_key()?;
    let ok = match dialect {
        // Their handlers check credentials themselves (query-string key, SigV4).
        Dialect::Gemini | Dialect::Bedrock => true,
        // Azure OpenAI sends its key in `api-key`.
        Dialect::OpenAi => {
            bearer(headers) == Some(key.as_str())
                || headers.get("api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str())
        }
        Dialect::Anthropic => {
            headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(key.as_str())
                || bearer(headers) == Some(key.as_str())
        }
    };
    if ok {
        return None;
    }
    let msg = match dialect {
        Dialect::OpenAi => {
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
        }
        Dialect::Anthropic | Dialect::Gemini | Dialect::Bedrock => "invalid x-api-key",
    };
    Some(error_response(dialect, 401, msg, None))
}

// ---------------------------------------------------------------- prelude

/// What a handler gets after the common checks passed.
pub struct Ctx {
    /// Parsed JSON body (`Null` for bodiless routes).
    pub body: Value,
    pub opts: Opts,
}

/// Auth → JSON parse → options → `hang` → `ttfb` → `status`.
pub async fn prelude(
    state: &MockState,
    dialect: Dialect,
    headers: &HeaderMap,
    raw: Option<&[u8]>,
) -> Result<Ctx, Response> {
    if let Some(resp) = check_auth(state, dialect, headers) {
        return Err(resp);
    }
    prelude_checked(state, dialect, headers, raw, None).await
}

/// The message of an injected `status=NNN` error.
fn injected_message(dialect: Dialect, status: u16) -> String {
    match (dialect, status) {
        (Dialect::Bedrock, 429) => "Too many requests, please wait before trying again.".to_string(),
        (Dialect::Gemini, 429) => "Resource has been exhausted (e.g. check quota).".to_string(),
        _ => format!("mock: injected error status {status}"),
    }
}

/// [`prelude`] after authentication (which the caller did): JSON parse → options (from `model`,
/// else the body's `model` field) → `hang` → `ttfb` → `status`.
pub async fn prelude_checked(
    state: &MockState,
    dialect: Dialect,
    headers: &HeaderMap,
    raw: Option<&[u8]>,
    model: Option<&str>,
) -> Result<Ctx, Response> {
    let body = match raw {
        None => Value::Null,
        Some(raw) => match serde_json::from_slice::<Value>(raw) {
            Ok(v) if v.is_object() => v,
            Ok(_) => {
                return Err(error_response(
                    dialect,
                    400,
                    "The request body must be a JSON object.",
                    None,
                ));
            }
            Err(e) => {
                let msg = match dialect {
                    Dialect::OpenAi => format!(
                        "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. {e})"
                    ),
                    Dialect::Anthropic => format!("There was an error parsing the body: {e}"),
                    Dialect::Gemini => format!("Invalid JSON payload received. {e}"),
                    Dialect::Bedrock => {
                        format!("Malformed input request: {e}, please reformat your input and try again.")
                    }
                };
                return Err(error_response(dialect, 400, &msg, None));
            }
        },
    };
    let model = model.or_else(|| body.get("model").and_then(Value::as_str));
    let mut opts = Opts::from_request(headers, model);
    opts.fill(&state.defaults());
    if opts.flag("hang") {
        state.closed().await;
        return Err(error_response(dialect, 503, "mock: server shutting down", None));
    }
    if let Some(ms) = opts.num("ttfb").filter(|ms| *ms > 0) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(status) = opts.num("status").filter(|s| (400..=999).contains(s)) {
        let msg = injected_message(dialect, status as u16);
        return Err(error_response(
            dialect,
            status as u16,
            &msg,
            opts.num("retry_after"),
        ));
    }
    if opts.flag("html") {
        // A 200 that is not the API at all (a captive portal, a misrouted proxy): streaming or not.
        return Err(axum::response::IntoResponse::into_response((
            [(axum::http::header::CONTENT_TYPE, "text/html")],
            "<html><body>502 Bad Gateway</body></html>",
        )));
    }
    Ok(Ctx { body, opts })
}

// ---------------------------------------------------------------- text helpers

/// Whitespace-separated word count (the mock's "token" count).
pub fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// Split `text` into stream pieces: one word per piece, whitespace attached to the front of the
/// following word (`"a b c"` → `["a", " b", " c"]`; trailing whitespace becomes its own piece).
/// Concatenating the pieces gives `text` back exactly.
pub fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut cur_has_word = false;
    let mut prev_ws = true;
    for ch in text.chars() {
        let ws = ch.is_whitespace();
        // A whitespace run after a word starts the next piece.
        if ws && !prev_ws && cur_has_word {
            out.push(std::mem::take(&mut cur));
            cur_has_word = false;
        }
        cur.push(ch);
        if !ws {
            cur_has_word = true;
        }
        prev_ws = ws;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Split a string into `n` (at least 3 when long enough) roughly equal pieces on char boundaries.
pub fn split_n(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let n = n.max(1).min(chars.len().max(1));
    let size = chars.len().div_ceil(n).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

// ---------------------------------------------------------------- reply plan

pub const REASONING_TEXT: &str = "Let me think step by step about what the user asked.";
pub const TOOL_PREFACE: &str = "Let me check.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
}

impl Finish {
    pub fn openai(self) -> &'static str {
        match self {
            Finish::Stop => "stop",
            Finish::Length => "length",
            Finish::ToolCalls => "tool_calls",
        }
    }
    pub fn anthropic(self) -> &'static str {
        match self {
            Finish::Stop => "end_turn",
            Finish::Length => "max_tokens",
            Finish::ToolCalls => "tool_use",
        }
    }
    /// Bedrock Converse's `stopReason` (the same names as Anthropic's).
    pub fn bedrock(self) -> &'static str {
        self.anthropic()
    }
    /// Gemini's `finishReason` (function calls finish with `STOP` too).
    pub fn gemini(self) -> &'static str {
        match self {
            Finish::Stop | Finish::ToolCalls => "STOP",
            Finish::Length => "MAX_TOKENS",
        }
    }
}

#[derive(Debug, Clone)]
pub struct PlannedTool {
    pub name: String,
    /// Compact JSON arguments string.
    pub arguments: String,
    pub input: Value,
}

/// What the mock will answer, independent of dialect.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seq: u64,
    pub reasoning: Option<String>,
    pub redacted: bool,
    pub text: Option<String>,
    pub tools: Vec<PlannedTool>,
    pub finish: Finish,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub cached_tokens: u64,
}

pub struct PlanInput<'a> {
    pub opts: &'a Opts,
    pub body: &'a Value,
    pub last_user_text: String,
    pub prompt_tokens: u64,
    pub tool_names: Vec<String>,
    pub supports_tools: bool,
}

impl Plan {
    pub fn build(state: &MockState, inp: PlanInput<'_>) -> Plan {
        let opts = inp.opts;
        let seq = state.next_seq();
        let n_tools = if inp.supports_tools {
            opts.num("tools").unwrap_or(0) as usize
        } else {
            0
        };
        let tools: Vec<PlannedTool> = (0..n_tools)
            .map(|k| {
                let name = if inp.tool_names.is_empty() {
                    "get_weather".to_string()
                } else {
                    inp.tool_names[k % inp.tool_names.len()].clone()
                };
                let input = json!({"city": "Paris", "unit": "celsius", "i": k});
                PlannedTool {
                    name,
                    arguments: input.to_string(),
                    input,
                }
            })
            .collect();
        let text = if !tools.is_empty() {
            (!opts.flag("notext")).then(|| TOOL_PREFACE.to_string())
        } else if opts.flag("echo_request") {
            Some(inp.body.to_string())
        } else if let Some(n) = opts.num("tokens") {
            Some((1..=n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" "))
        } else {
            Some(format!("echo: {}", inp.last_user_text))
        };
        let reasoning = opts.flag("thinking").then(|| REASONING_TEXT.to_string());
        let finish = if !tools.is_empty() {
            Finish::ToolCalls
        } else if opts.get("finish") == Some("length") {
            Finish::Length
        } else {
            Finish::Stop
        };
        let reasoning_tokens = reasoning.as_deref().map_or(0, words);
        let completion_tokens = text.as_deref().map_or(0, words) + reasoning_tokens + tools.len() as u64;
        Plan {
            seq,
            reasoning,
            redacted: opts.flag("thinking") && opts.flag("redacted"),
            text,
            tools,
            finish,
            prompt_tokens: inp.prompt_tokens,
            completion_tokens,
            reasoning_tokens,
            cached_tokens: opts.num("cache").unwrap_or(0),
        }
    }

    /// Apply a request's output cap (`maxOutputTokens`, `maxTokens`): a text-only answer longer than
    /// `max` words is cut to `max` words and finishes with [`Finish::Length`].
    pub fn cap_output(&mut self, max: Option<u64>) {
        let Some(max) = max else { return };
        if !self.tools.is_empty() {
            return;
        }
        let Some(text) = &self.text else { return };
        let n = words(text);
        if n <= max {
            return;
        }
        let cut = text
            .split_whitespace()
            .take(usize::try_from(max).unwrap_or(usize::MAX))
            .collect::<Vec<_>>()
            .join(" ");
        self.text = Some(cut);
        self.finish = Finish::Length;
        self.completion_tokens = self.completion_tokens - n + max;
    }
}

// ---------------------------------------------------------------- responses with faults

fn with_request_id(mut resp: Response, dialect: Dialect, seq: u64) -> Response {
    let (name, id) = match dialect {
        Dialect::OpenAi => ("x-request-id", format!("req_mock{seq}")),
        Dialect::Anthropic => ("request-id", format!("req_mock{seq}")),
        // Google sends no request id header.
        Dialect::Gemini => return resp,
        Dialect::Bedrock => ("x-amzn-requestid", format!("00000000-0000-4000-8000-{seq:012x}")),
    };
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(name, v);
    }
    resp
}

/// Pause before an abort so the bytes already produced reach the client first.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

fn io_abort(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, format!("mock-upstream: {what}"))
}

/// A 200 JSON response, subject to the non-stream faults `garbage`, `truncate`, `drop_after`, `hang_after`.
pub fn json_response(state: &MockState, dialect: Dialect, opts: &Opts, seq: u64, body: Vec<u8>) -> Response {
    let body = if opts.flag("garbage") {
        Body::from("<html>upstream exploded</html>")
    } else if opts.flag("truncate") {
        let half = Bytes::from(body).split_to_half();
        Body::from_stream(futures::stream::iter([Ok::<Bytes, io::Error>(half)]))
    } else if opts.get("drop_after").is_some() {
        let half = Bytes::from(body).split_to_half();
        let tail = futures::stream::once(async {
            tokio::time::sleep(FLUSH_PAUSE).await;
            Err::<Bytes, io::Error>(io_abort("drop_after"))
        });
        Body::from_stream(futures::StreamExt::chain(futures::stream::iter([Ok(half)]), tail))
    } else if opts.get("hang_after").is_some() {
        let half = Bytes::from(body).split_to_half();
        let st = state.clone();
        let tail = futures::stream::once(async move {
            st.closed().await;
            Err::<Bytes, io::Error>(io_abort("hang_after"))
        });
        Body::from_stream(futures::StreamExt::chain(futures::stream::iter([Ok(half)]), tail))
    } else {
        Body::from(body)
    };
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_request_id(resp, dialect, seq)
}

trait HalfExt {
    fn split_to_half(self) -> Bytes;
}
impl HalfExt for Bytes {
    fn split_to_half(self) -> Bytes {
        let n = self.len() / 2;
        self.slice(..n)
    }
}

/// One SSE frame; `content` marks frames that carry generated content (counted by
/// `drop_after` / `hang_after` / `error_after`).
pub struct Frame {
    pub bytes: Bytes,
    pub content: bool,
}

impl Frame {
    pub fn meta(s: String) -> Self {
        Frame {
            bytes: Bytes::from(s),
            content: false,
        }
    }
    pub fn content(s: String) -> Self {
        Frame {
            bytes: Bytes::from(s),
            content: true,
        }
    }
}

enum Step {
    Emit(Bytes),
    Abort,
    Hang,
}

/// An SSE response streaming `frames` with `delay` between them and the stream faults applied.
pub fn sse_response(
    state: &MockState,
    dialect: Dialect,
    opts: &Opts,
    seq: u64,
    frames: Vec<Frame>,
    error_frame: String,
    garbage_frame: &'static str,
) -> Response {
    stream_response(
        state,
        dialect,
        opts,
        seq,
        frames,
        StreamFaultFrames {
            error: Bytes::from(error_frame),
            garbage: Bytes::from_static(garbage_frame.as_bytes()),
        },
        "text/event-stream; charset=utf-8",
    )
}

/// What `error_after` and `garbage` insert into a stream.
pub struct StreamFaultFrames {
    pub error: Bytes,
    pub garbage: Bytes,
}

/// A streamed 200 of `frames` (any framing) with `delay` between them and the stream faults
/// `drop_after`, `hang_after`, `error_after`, `garbage` applied.
pub fn stream_response(
    state: &MockState,
    dialect: Dialect,
    opts: &Opts,
    seq: u64,
    frames: Vec<Frame>,
    faults: StreamFaultFrames,
    content_type: &'static str,
) -> Response {
    let StreamFaultFrames {
        error: error_frame,
        garbage: garbage_frame,
    } = faults;
    let last_content = frames.iter().rposition(|f| f.content);
    let fault = if let Some(n) = opts.num("drop_after") {
        Some((n, 0))
    } else if let Some(n) = opts.num("hang_after") {
        Some((n, 1))
    } else {
        opts.num("error_after").map(|n| (n, 2))
    };
    let garbage = opts.flag("garbage");
    let garbage_at = last_content.map_or(0, |_| frames.iter().position(|f| f.content).unwrap_or(0));
    let mut steps = Vec::with_capacity(frames.len() + 2);
    let mut emitted_content = 0u64;
    for (i, f) in frames.into_iter().enumerate() {
        if let Some((n, kind)) = fault {
            let past_content = last_content.is_none_or(|lc| i > lc);
            if emitted_content >= n && (f.content || past_content) {
                steps.push(match kind {
                    0 => Step::Abort,
                    1 => Step::Hang,
                    _ => Step::Emit(error_frame),
                });
                break;
            }
        }
        if f.content {
            emitted_content += 1;
        }
        steps.push(Step::Emit(f.bytes));
        if garbage && i == garbage_at {
            steps.push(Step::Emit(garbage_frame.clone()));
        }
    }
    let delay = Duration::from_millis(opts.num("delay").unwrap_or(0));
    let st = state.clone();
    let stream = futures::stream::unfold((steps.into_iter(), true), move |(mut it, first)| {
        let st = st.clone();
        async move {
            let step = it.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let item = match step {
                Step::Emit(b) => Ok(b),
                Step::Abort => {
                    // Let hyper flush what was sent so far, then cut the connection.
                    tokio::time::sleep(FLUSH_PAUSE).await;
                    Err(io_abort("drop_after"))
                }
                Step::Hang => {
                    st.closed().await;
                    Err(io_abort("hang_after"))
                }
            };
            Some((item, (it, false)))
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    with_request_id(resp, dialect, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_roundtrip() {
        for s in [
            "echo: hello world",
            "  a  b ",
            "",
            "one",
            "x\ny\tz",
            "{\"a\": 1, \"b\":[1, 2]}",
        ] {
            let p = pieces(s);
            assert_eq!(p.concat(), s);
            assert!(p.len() as u64 >= words(s).min(1));
        }
        assert_eq!(pieces("echo: hi there"), vec!["echo:", " hi", " there"]);
    }

    #[test]
    fn split_n_roundtrip() {
        let s = r#"{"city":"Paris","unit":"celsius","i":0}"#;
        let p = split_n(s, 4);
        assert!(p.len() >= 3);
        assert_eq!(p.concat(), s);
    }
}
