//! AWS Bedrock (`kind = "bedrock"`): the Converse and ConverseStream APIs, signed with SigV4
//! (credentials from config or the standard `AWS_*` environment variables), `toolConfig` for tools,
//! and the binary `application/vnd.amazon.eventstream` answer decoded frame by frame with both of
//! its CRC checks.

use std::collections::HashMap;

use bytes::{Buf, Bytes, BytesMut};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use protocol::canonical::{self as c, FinishReason, ImageSource, Part, Role, StreamEvent};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::http_client::{HttpUpstream, transport_error};
use super::{ChatOutput, EventStream, ProviderOptions, with_deadline};
use crate::error::{Error, Result};

type HmacSha256 = Hmac<Sha256>;

/// AWS credentials.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct BedrockProvider {
    http: HttpUpstream,
    region: String,
    creds: Option<Credentials>,
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => return Vec::new(),
    };
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// `YYYYMMDDTHHMMSSZ` of a unix time.
pub fn amz_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let (y, m, d) = crate::limits::civil_from_days(days);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, as SigV4 wants.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The SigV4 `Authorization` of a request (and the headers it signs, to send with it).
/// `path` is the path as sent (already encoded once); non-S3 services sign it encoded once more.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    creds: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    host: &str,
    path: &str,
    query: &str,
    content_type: &str,
    payload: &[u8],
    unix: u64,
) -> Vec<(&'static str, String)> {
    let date_time = amz_date(unix);
    let date = &date_time[..8];
    let payload_hash = hex::encode(Sha256::digest(payload));
    let mut headers: Vec<(&'static str, String)> = vec![
        ("content-type", content_type.to_string()),
        ("host", host.to_string()),
        ("x-amz-date", date_time.clone()),
    ];
    if let Some(t) = &creds.session_token {
        headers.push(("x-amz-security-token", t.clone()));
    }
    let canonical_uri = path
        .split('/')
        .map(|seg| uri_encode(seg, false))
        .collect::<Vec<_>>()
        .join("/");
    let mut q: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    q.sort();
    let canonical_query = q
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let canonical_headers: String = headers
        .iter()
        .map(|(k, v)| format!("{k}:{}\n", v.trim()))
        .collect();
    let signed_headers = headers.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{method}\n{canonical_uri}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}"
    );
    let scope = format!("{date}/{region}/{service}/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{date_time}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let k_date = hmac(
        format!("AWS4{}", creds.secret_access_key).as_bytes(),
        date.as_bytes(),
    );
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    let signature = hex::encode(hmac(&k_signing, string_to_sign.as_bytes()));
    let mut out: Vec<(&'static str, String)> = headers
        .into_iter()
        .filter(|(k, _)| *k != "host" && *k != "content-type")
        .collect();
    out.push((
        "authorization",
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    out
}

impl BedrockProvider {
    pub fn new(
        name: &str,
        opts: &ProviderOptions,
        region: Option<&str>,
        creds: Option<Credentials>,
    ) -> Result<BedrockProvider> {
        let region = region
            .map(String::from)
            .or_else(|| std::env::var("AWS_REGION").ok())
            .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
            .unwrap_or_else(|| "us-east-1".into());
        let creds = creds.or_else(|| {
            Some(Credentials {
                access_key_id: std::env::var("AWS_ACCESS_KEY_ID").ok()?,
                secret_access_key: std::env::var("AWS_SECRET_ACCESS_KEY").ok()?,
                session_token: std::env::var("AWS_SESSION_TOKEN").ok().filter(|t| !t.is_empty()),
            })
        });
        let mut opts = opts.clone();
        if opts.base_url.is_empty() {
            opts.base_url = format!("https://bedrock-runtime.{region}.amazonaws.com");
        }
        Ok(BedrockProvider {
            http: HttpUpstream::new(name, &opts, HeaderMap::new())?,
            region,
            creds,
        })
    }

    pub fn name(&self) -> &str {
        &self.http.name
    }

    /// The signed headers of a POST to `path` (relative to the base URL) with this body.
    fn signed(&self, path: &str, body: &[u8]) -> Result<HeaderMap> {
        let mut h = HeaderMap::new();
        let Some(creds) = &self.creds else {
            return Err(Error::new(
                crate::error::ErrorKind::Upstream,
                format!(
                    "provider {}: no AWS credentials (set aws_access_key_id / aws_secret_access_key or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                    self.http.name
                ),
            )
            .with_status(http::StatusCode::UNAUTHORIZED));
        };
        let url = url::Url::parse(&self.http.url(path))
            .map_err(|e| Error::internal(format!("bad Bedrock URL: {e}")))?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            _ => return Err(Error::internal("the Bedrock URL has no host")),
        };
        let now = crate::store::now_secs();
        for (k, v) in sign(
            creds,
            &self.region,
            "bedrock",
            "POST",
            &host,
            url.path(),
            url.query().unwrap_or(""),
            "application/json",
            body,
            now,
        ) {
            let mut value =
                HeaderValue::from_str(&v).map_err(|_| Error::internal("a signed header is not valid"))?;
            if k == "authorization" || k == "x-amz-security-token" {
                value.set_sensitive(true);
            }
            h.insert(HeaderName::from_static(k), value);
        }
        Ok(h)
    }

    pub async fn chat(&self, req: &c::ChatRequest, model: &str) -> Result<(ChatOutput, Vec<String>)> {
        let (body, warnings) = request_body(req, model)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let deadline = self.http.deadline();
        let name = self.http.name.clone();
        let model_seg = uri_encode(model, false);
        if req.stream {
            let path = format!("model/{model_seg}/converse-stream");
            let headers = self.signed(&path, &bytes)?;
            let resp = self.http.post(&path, bytes, Some(headers), deadline).await?;
            let events = decode_stream(resp, name.clone(), model.to_string());
            Ok((
                ChatOutput::Stream(with_deadline(events, deadline, name)),
                warnings,
            ))
        } else {
            let path = format!("model/{model_seg}/converse");
            let headers = self.signed(&path, &bytes)?;
            let resp = self.http.post(&path, bytes, Some(headers), deadline).await?;
            let v = self.http.read_object(resp, deadline).await?;
            let events = response_events(&v, model)
                .ok_or_else(|| Error::bad_gateway(format!("upstream {name} answered without a message")))?;
            Ok((
                ChatOutput::Stream(futures::stream::iter(events.into_iter().map(Ok)).boxed()),
                warnings,
            ))
        }
    }
}

fn start(model: &str) -> StreamEvent {
    StreamEvent::Start {
        id: format!("bedrock-{:016x}", rand::random::<u64>()),
        model: model.to_string(),
        created: crate::store::now_secs(),
    }
}

fn stop_reason(s: &str) -> FinishReason {
    match s {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "tool_use" => FinishReason::ToolCalls,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn usage(u: &Value) -> c::Usage {
    let read = num(u, "cacheReadInputTokens");
    let write = num(u, "cacheWriteInputTokens");
    c::Usage {
        input_tokens: num(u, "inputTokens") + read + write,
        output_tokens: num(u, "outputTokens"),
        cache_read_tokens: read,
        cache_creation_tokens: write,
        ..c::Usage::default()
    }
}

/// A whole Converse answer as events.
fn response_events(v: &Value, model: &str) -> Option<Vec<StreamEvent>> {
    let content = v["output"]["message"]["content"].as_array()?;
    let mut out = vec![start(model)];
    let mut tools = 0;
    for block in content {
        if let Some(t) = block["text"].as_str() {
            out.push(StreamEvent::TextDelta {
                choice: 0,
                text: t.to_string(),
            });
        }
        if let Some(r) = block.get("reasoningContent") {
            if let Some(t) = r["reasoningText"]["text"].as_str() {
                out.push(StreamEvent::ReasoningDelta {
                    choice: 0,
                    text: t.to_string(),
                });
            }
            if let Some(s) = r["reasoningText"]["signature"].as_str() {
                out.push(StreamEvent::ReasoningSignature {
                    choice: 0,
                    signature: s.to_string(),
                });
            }
        }
        if let Some(tu) = block.get("toolUse") {
            out.push(StreamEvent::ToolCallStart {
                choice: 0,
                index: tools,
                id: tu["toolUseId"].as_str().unwrap_or("").to_string(),
                name: tu["name"].as_str().unwrap_or("").to_string(),
            });
            out.push(StreamEvent::ToolCallDelta {
                choice: 0,
                index: tools,
                arguments: tu.get("input").map_or_else(|| "{}".into(), Value::to_string),
            });
            tools += 1;
        }
    }
    out.push(StreamEvent::Finish {
        choice: 0,
        reason: stop_reason(v["stopReason"].as_str().unwrap_or("end_turn")),
        stop_sequence: None,
    });
    if let Some(u) = v.get("usage") {
        out.push(StreamEvent::Usage { usage: usage(u) });
    }
    Some(out)
}

/// One decoded event-stream message.
#[derive(Debug)]
pub struct Frame {
    pub headers: HashMap<String, String>,
    pub payload: Bytes,
}

/// Takes one whole message off the front of `buf`, checking both CRCs; `Ok(None)` when more bytes
/// are needed.
pub fn decode_frame(buf: &mut BytesMut) -> std::result::Result<Option<Frame>, String> {
    if buf.len() < 12 {
        return Ok(None);
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let headers_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let prelude_crc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if crc32fast::hash(&buf[..8]) != prelude_crc {
        return Err("event stream prelude CRC mismatch".into());
    }
    if total < 16 + headers_len || total > 16 * 1024 * 1024 {
        return Err(format!("event stream message of impossible length {total}"));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let msg_crc = u32::from_be_bytes([buf[total - 4], buf[total - 3], buf[total - 2], buf[total - 1]]);
    if crc32fast::hash(&buf[..total - 4]) != msg_crc {
        return Err("event stream message CRC mismatch".into());
    }
    let mut msg = buf.split_to(total).freeze();
    msg.advance(12);
    let mut hbytes = msg.split_to(headers_len);
    let payload = msg.split_to(total - 16 - headers_len);
    let mut headers = HashMap::new();
    while hbytes.has_remaining() {
        let nlen = hbytes.get_u8() as usize;
        if hbytes.remaining() < nlen + 1 {
            return Err("truncated event stream header".into());
        }
        let name = String::from_utf8_lossy(&hbytes.split_to(nlen)).into_owned();
        let kind = hbytes.get_u8();
        let value = match kind {
            0 | 1 => String::from(if kind == 0 { "true" } else { "false" }),
            2 => hbytes.get_i8().to_string(),
            3 => hbytes.get_i16().to_string(),
            4 => hbytes.get_i32().to_string(),
            5 | 8 => hbytes.get_i64().to_string(),
            6 | 7 => {
                if hbytes.remaining() < 2 {
                    return Err("truncated event stream header".into());
                }
                let vlen = hbytes.get_u16() as usize;
                if hbytes.remaining() < vlen {
                    return Err("truncated event stream header".into());
                }
                String::from_utf8_lossy(&hbytes.split_to(vlen)).into_owned()
            }
            9 => {
                if hbytes.remaining() < 16 {
                    return Err("truncated event stream header".into());
                }
                hex::encode(hbytes.split_to(16))
            }
            other => return Err(format!("unknown event stream header type {other}")),
        };
        headers.insert(name, value);
    }
    Ok(Some(Frame { headers, payload }))
}

/// The events of a ConverseStream answer.
fn decode_stream(resp: super::transport::Response, provider: String, model: String) -> EventStream {
    struct St {
        body: super::transport::BodyStream,
        buf: BytesMut,
        pending: std::collections::VecDeque<Result<StreamEvent>>,
        provider: String,
        model: String,
        /// contentBlockIndex → tool call index.
        tools: HashMap<u64, u32>,
        finished: bool,
        done: bool,
    }
    let st = St {
        body: resp.into_stream(),
        buf: BytesMut::new(),
        pending: Default::default(),
        provider,
        model,
        tools: HashMap::new(),
        finished: false,
        done: false,
    };
    let events = futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                if e.is_err() {
                    st.done = true;
                }
                return Some((e, st));
            }
            if st.done {
                return None;
            }
            match decode_frame(&mut st.buf) {
                Err(e) => {
                    st.pending
                        .push_back(Err(Error::bad_gateway(format!("upstream {}: {e}", st.provider))));
                    continue;
                }
                Ok(Some(f)) => {
                    st.frame(f);
                    continue;
                }
                Ok(None) => {}
            }
            match st.body.next().await {
                Some(Ok(b)) => st.buf.extend_from_slice(&b),
                Some(Err(e)) => st.pending.push_back(Err(transport_error(&st.provider, &e))),
                None => {
                    if !st.finished {
                        st.pending.push_back(Err(Error::bad_gateway(format!(
                            "upstream {} closed the stream before it finished",
                            st.provider
                        ))));
                    } else {
                        st.done = true;
                    }
                }
            }
        }
    })
    .boxed();

    impl St {
        fn frame(&mut self, f: Frame) {
            let msg_type = f
                .headers
                .get(":message-type")
                .map(String::as_str)
                .unwrap_or("event");
            let v: Value = serde_json::from_slice(&f.payload).unwrap_or(Value::Null);
            if msg_type != "event" {
                let kind = f
                    .headers
                    .get(":exception-type")
                    .or_else(|| f.headers.get(":error-code"))
                    .cloned()
                    .unwrap_or_else(|| "exception".into());
                let msg = v["message"].as_str().unwrap_or("the stream failed");
                let status = match kind.as_str() {
                    "throttlingException" => http::StatusCode::TOO_MANY_REQUESTS,
                    "validationException" => http::StatusCode::BAD_REQUEST,
                    "serviceUnavailableException" | "modelNotReadyException" => {
                        http::StatusCode::SERVICE_UNAVAILABLE
                    }
                    _ => http::StatusCode::BAD_GATEWAY,
                };
                self.pending.push_back(Err(Error::new(
                    crate::error::ErrorKind::Upstream,
                    format!("upstream {} ({kind}): {msg}", self.provider),
                )
                .with_status(status)));
                return;
            }
            let ev = f.headers.get(":event-type").map(String::as_str).unwrap_or("");
            match ev {
                "messageStart" => self.pending.push_back(Ok(start(&self.model))),
                "contentBlockStart" => {
                    if let Some(tu) = v["start"].get("toolUse") {
                        let index = self.tools.len() as u32;
                        self.tools
                            .insert(v["contentBlockIndex"].as_u64().unwrap_or(0), index);
                        self.pending.push_back(Ok(StreamEvent::ToolCallStart {
                            choice: 0,
                            index,
                            id: tu["toolUseId"].as_str().unwrap_or("").to_string(),
                            name: tu["name"].as_str().unwrap_or("").to_string(),
                        }));
                    }
                }
                "contentBlockDelta" => {
                    let d = &v["delta"];
                    if let Some(t) = d["text"].as_str() {
                        self.pending.push_back(Ok(StreamEvent::TextDelta {
                            choice: 0,
                            text: t.to_string(),
                        }));
                    }
                    if let Some(input) = d["toolUse"]["input"].as_str() {
                        let block = v["contentBlockIndex"].as_u64().unwrap_or(0);
                        let index = self.tools.get(&block).copied().unwrap_or(0);
                        self.pending.push_back(Ok(StreamEvent::ToolCallDelta {
                            choice: 0,
                            index,
                            arguments: input.to_string(),
                        }));
                    }
                    if let Some(t) = d["reasoningContent"]["text"].as_str() {
                        self.pending.push_back(Ok(StreamEvent::ReasoningDelta {
                            choice: 0,
                            text: t.to_string(),
                        }));
                    }
                    if let Some(s) = d["reasoningContent"]["signature"].as_str() {
                        self.pending.push_back(Ok(StreamEvent::ReasoningSignature {
                            choice: 0,
                            signature: s.to_string(),
                        }));
                    }
                }
                "messageStop" => {
                    self.finished = true;
                    self.pending.push_back(Ok(StreamEvent::Finish {
                        choice: 0,
                        reason: stop_reason(v["stopReason"].as_str().unwrap_or("end_turn")),
                        stop_sequence: None,
                    }));
                }
                "metadata" => {
                    if let Some(u) = v.get("usage") {
                        self.pending.push_back(Ok(StreamEvent::Usage { usage: usage(u) }));
                    }
                }
                _ => {}
            }
        }
    }
    events
}

/// The Converse body of a canonical request, and what could not be carried.
pub fn request_body(req: &c::ChatRequest, model: &str) -> Result<(Value, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut system = Vec::new();
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let mut blocks = Vec::new();
        for p in &m.content {
            match p {
                Part::Text { text } if !text.is_empty() => blocks.push(json!({"text": text})),
                Part::Text { .. } => {}
                Part::Image { source, .. } => match source {
                    ImageSource::Base64 { media_type, data } => {
                        let format = media_type.strip_prefix("image/").unwrap_or("png");
                        blocks.push(json!({"image": {"format": format, "source": {"bytes": data}}}));
                    }
                    ImageSource::Url { url } => {
                        return Err(Error::invalid_param(
                            "messages",
                            format!("Bedrock takes images inline (data: URLs), not `{url}`."),
                        ));
                    }
                },
                Part::ToolCall { id, name, arguments } => {
                    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
                }
                Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                } => {
                    let inner: Vec<Value> = content
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text { text } => Some(json!({"text": text})),
                            _ => None,
                        })
                        .collect();
                    let mut r = json!({"toolUseId": tool_call_id, "content": inner});
                    if *is_error {
                        r["status"] = json!("error");
                    }
                    blocks.push(json!({"toolResult": r}));
                }
                Part::Reasoning { text, signature } => {
                    let mut rt = json!({"text": text});
                    if let Some(s) = signature {
                        rt["signature"] = json!(s);
                    }
                    blocks.push(json!({"reasoningContent": {"reasoningText": rt}}));
                }
                Part::RedactedReasoning { data } => {
                    blocks.push(json!({"reasoningContent": {"redactedContent": data}}));
                }
            }
        }
        let role = match m.role {
            Role::System | Role::Developer => {
                system.extend(blocks);
                continue;
            }
            Role::Assistant => "assistant",
            Role::User | Role::Tool => "user",
        };
        // Turns alternate: consecutive ones of a role merge.
        match messages.last_mut() {
            Some(last) if last["role"] == role => {
                if let Some(a) = last["content"].as_array_mut() {
                    a.extend(blocks);
                }
            }
            _ => messages.push(json!({"role": role, "content": blocks})),
        }
    }
    let mut body = Map::new();
    body.insert("messages".into(), Value::Array(messages));
    if !system.is_empty() {
        body.insert("system".into(), Value::Array(system));
    }
    let mut inf = Map::new();
    if let Some(m) = req.max_tokens {
        inf.insert("maxTokens".into(), json!(m));
    }
    if let Some(t) = req.sampling.temperature {
        inf.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.sampling.top_p {
        inf.insert("topP".into(), json!(p));
    }
    if !req.stop.is_empty() {
        inf.insert("stopSequences".into(), json!(req.stop));
    }
    if !inf.is_empty() {
        body.insert("inferenceConfig".into(), Value::Object(inf));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = &t.description {
                    spec["description"] = json!(d);
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut tc = json!({"tools": tools});
        match &req.tool_choice {
            Some(c::ToolChoice::Auto) => tc["toolChoice"] = json!({"auto": {}}),
            Some(c::ToolChoice::Required) => tc["toolChoice"] = json!({"any": {}}),
            Some(c::ToolChoice::Tool { name }) => tc["toolChoice"] = json!({"tool": {"name": name}}),
            Some(c::ToolChoice::None) => {
                warnings.push(
                    "Bedrock has no tool_choice none; the tools were sent with the default choice".into(),
                );
            }
            None => {}
        }
        body.insert("toolConfig".into(), tc);
    }
    // Model-specific fields: Anthropic models on Bedrock take top_k and thinking here.
    let mut extra = Map::new();
    let anthropic = model.contains("anthropic.");
    if let Some(k) = req.sampling.top_k {
        if anthropic {
            extra.insert("top_k".into(), json!(k));
        } else {
            warnings.push("top_k is only sent to Anthropic models on Bedrock".into());
        }
    }
    if let Some(r) = &req.reasoning
        && anthropic
        && !r.disabled
    {
        let budget = r.budget_tokens.unwrap_or(match r.effort.as_deref() {
            Some("low" | "minimal") => 1024,
            Some("high") => 16384,
            _ => 4096,
        });
        extra.insert(
            "thinking".into(),
            json!({"type": "enabled", "budget_tokens": budget}),
        );
    }
    if !extra.is_empty() {
        body.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    if req
        .response_format
        .as_ref()
        .is_some_and(|f| !matches!(f, c::ResponseFormat::Text))
    {
        warnings.push("response_format is not enforced on Bedrock Converse".into());
    }
    Ok((Value::Object(body), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The worked example of the SigV4 documentation (IAM ListUsers, GET): the canonical request,
    /// the string to sign and the signature all come out as published.
    #[test]
    fn signing_matches_the_published_example() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        // 2015-08-30T12:36:00Z; the example signs content-type, host and x-amz-date with an empty body.
        let unix = 1_440_938_160;
        assert_eq!(amz_date(unix), "20150830T123600Z");
        let h = sign(
            &creds,
            "us-east-1",
            "iam",
            "GET",
            "iam.amazonaws.com",
            "/",
            "Action=ListUsers&Version=2010-05-08",
            "application/x-www-form-urlencoded; charset=utf-8",
            b"",
            unix,
        );
        let auth = &h.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
    }

    #[test]
    fn paths_are_encoded_once_more_for_signing() {
        assert_eq!(
            uri_encode("anthropic.claude-v1:0", false),
            "anthropic.claude-v1%3A0"
        );
        let creds = Credentials {
            access_key_id: "AK".into(),
            secret_access_key: "S".into(),
            session_token: Some("T".into()),
        };
        let h = sign(
            &creds,
            "us-east-1",
            "bedrock",
            "POST",
            "h",
            "/model/a%3A0/converse",
            "",
            "application/json",
            b"{}",
            0,
        );
        let auth = &h.iter().find(|(k, _)| *k == "authorization").unwrap().1;
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert!(h.iter().any(|(k, v)| *k == "x-amz-security-token" && v == "T"));
    }

    #[test]
    fn odd_answers_are_handled_without_panics() {
        // No message: the caller turns this into a clear 502.
        assert!(response_events(&json!({"output": {}}), "m").is_none());
        // Unknown blocks are skipped; tool input of any shape becomes JSON text.
        let evs = response_events(
            &json!({"output": {"message": {"content": [{"weird": {}}, {"toolUse": {"toolUseId": "t", "name": "f", "input": "not an object"}}]}}, "stopReason": "new_reason"}),
            "m",
        )
        .unwrap();
        assert!(evs.iter().any(|e| matches!(e, StreamEvent::ToolCallDelta { arguments, .. } if serde_json::from_str::<Value>(arguments).is_ok())));
        assert!(matches!(
            evs.last(),
            Some(StreamEvent::Finish {
                reason: FinishReason::Other,
                ..
            })
        ));
        // Garbage where a frame should be: an error, never a panic or an endless wait.
        let mut buf = BytesMut::from(&[0u8, 0, 0, 5, 0, 0, 0, 9, 1, 2, 3, 4][..]);
        assert!(decode_frame(&mut buf).is_err());
        let mut buf = BytesMut::from(&b"not an event stream at all"[..]);
        assert!(decode_frame(&mut buf).is_err());
    }

    fn frame(headers: &[(&str, &str)], payload: &[u8]) -> Vec<u8> {
        let mut hb = Vec::new();
        for (k, v) in headers {
            hb.push(k.len() as u8);
            hb.extend_from_slice(k.as_bytes());
            hb.push(7);
            hb.extend_from_slice(&(v.len() as u16).to_be_bytes());
            hb.extend_from_slice(v.as_bytes());
        }
        let total = 16 + hb.len() + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(total as u32).to_be_bytes());
        m.extend_from_slice(&(hb.len() as u32).to_be_bytes());
        let c = crc32fast::hash(&m);
        m.extend_from_slice(&c.to_be_bytes());
        m.extend_from_slice(&hb);
        m.extend_from_slice(payload);
        let c = crc32fast::hash(&m);
        m.extend_from_slice(&c.to_be_bytes());
        m
    }

    #[test]
    fn frames_decode_across_reads_and_bad_crcs_are_caught() {
        let f = frame(
            &[(":event-type", "contentBlockDelta"), (":message-type", "event")],
            br#"{"delta":{"text":"hi"}}"#,
        );
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&f[..10]);
        assert!(decode_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&f[10..]);
        let got = decode_frame(&mut buf).unwrap().unwrap();
        assert_eq!(got.headers[":event-type"], "contentBlockDelta");
        assert_eq!(&got.payload[..], br#"{"delta":{"text":"hi"}}"#);
        assert!(buf.is_empty());
        let mut bad = f.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        let mut buf = BytesMut::from(&bad[..]);
        assert!(decode_frame(&mut buf).unwrap_err().contains("CRC"));
    }
}
