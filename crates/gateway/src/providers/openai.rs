//! Any OpenAI-compatible upstream: OpenAI itself, vLLM, llama.cpp's server, Ollama, hosted clouds.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use protocol::canonical::{self as c, StreamEvent};
use protocol::openai::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkDecoder};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::{ChatOutput, ChunkStream, EventStream, ProviderOptions, Raw, sse_json_stream, with_deadline};
use crate::error::{Error, ErrorKind, Result};

#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    base_url: String,
    headers: HeaderMap,
    client: reqwest::Client,
    timeout: Duration,
}

impl OpenAiProvider {
    pub fn new(name: &str, opts: &ProviderOptions) -> Result<OpenAiProvider> {
        let mut headers = opts.extra_headers()?;
        if let Some(key) = opts.api_key.as_deref().filter(|k| !k.is_empty()) {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                Error::internal(format!("provider {name}: api_key is not a valid header value"))
            })?;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        Ok(OpenAiProvider {
            name: name.to_string(),
            base_url: opts.base_url.trim_end_matches('/').to_string(),
            headers,
            client: opts.client()?,
            timeout: opts.timeout,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path)
    }

    /// Sends a JSON body and returns the response once its status is a success.
    pub async fn post(&self, path: &str, body: Vec<u8>, deadline: Instant) -> Result<reqwest::Response> {
        let req = self
            .client
            .post(self.url(path))
            .headers(self.headers.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body);
        let resp = match tokio::time::timeout_at(deadline, req.send()).await {
            Err(_) => return Err(timeout_error(&self.name)),
            Ok(Err(e)) => return Err(transport_error(&self.name, &e)),
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(upstream_error(&self.name, resp, deadline).await)
    }

    /// Reads a whole success body, bounded by the deadline.
    pub async fn read_body(&self, resp: reqwest::Response, deadline: Instant) -> Result<Bytes> {
        match tokio::time::timeout_at(deadline, resp.bytes()).await {
            Err(_) => Err(timeout_error(&self.name)),
            Ok(Err(e)) => Err(transport_error(&self.name, &e)),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// The same-dialect fast path: the caller's validated body goes upstream as it is, with only the
    /// model name and stream options rewritten. `path` is relative to the base URL.
    pub async fn forward(
        &self,
        path: &str,
        mut body: Map<String, Value>,
        upstream_model: &str,
    ) -> Result<Raw> {
        let deadline = Instant::now() + self.timeout;
        body.insert("model".into(), Value::String(upstream_model.to_string()));
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        if stream {
            // Always ask for usage, so it is known even when the client did not ask to see it.
            let opts = body
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if !opts.is_object() {
                *opts = Value::Object(Map::new());
            }
            if let Value::Object(o) = opts {
                o.insert("include_usage".into(), Value::Bool(true));
            }
        }
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let resp = self.post(path, bytes, deadline).await?;
        if stream {
            let events = sse_json_stream(resp, self.name.clone());
            Ok(Raw::Stream(with_deadline(events, deadline, self.name.clone())))
        } else {
            let body = self.read_body(resp, deadline).await?;
            match serde_json::from_slice::<Value>(&body) {
                Ok(v @ Value::Object(_)) => Ok(Raw::Full(v)),
                _ => Err(Error::bad_gateway(format!(
                    "upstream {} returned a body that is not JSON",
                    self.name
                ))),
            }
        }
    }

    /// The canonical path: a request from another dialect, rendered as OpenAI.
    pub async fn chat(
        &self,
        req: &c::ChatRequest,
        upstream_model: &str,
    ) -> Result<(ChatOutput, Vec<String>)> {
        let (wire, warnings) = ChatCompletionRequest::from_canonical(req);
        let mut body = match serde_json::to_value(&wire) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Error::internal("could not encode the upstream request")),
        };
        // Fields from the caller's own dialect that OpenAI also understands travel on.
        for (k, v) in &req.extra {
            if !body.contains_key(k) && protocol::openai::chat::openai_only_fields(&req.extra).any(|f| f == k)
            {
                body.insert(k.clone(), v.clone());
            }
        }
        let name = self.name.clone();
        let out = match self.forward("chat/completions", body, upstream_model).await? {
            Raw::Full(v) => {
                let resp: ChatCompletion =
                    serde_json::from_value(v).map_err(|e| not_a_completion(&name, &e))?;
                ChatOutput::Full(resp.to_canonical())
            }
            Raw::Stream(values) => {
                let chunks = values
                    .map(move |item| {
                        item.and_then(|v| {
                            serde_json::from_value::<ChatCompletionChunk>(v)
                                .map_err(|e| not_a_completion(&name, &e))
                        })
                    })
                    .boxed();
                ChatOutput::Stream(chunks_to_events(chunks))
            }
        };
        Ok((out, warnings))
    }
}

fn not_a_completion(provider: &str, e: &serde_json::Error) -> Error {
    Error::bad_gateway(format!(
        "upstream {provider} sent something that is not a chat completion: {e}"
    ))
}

/// Decodes a chunk stream into canonical events.
pub fn chunks_to_events(chunks: ChunkStream) -> EventStream {
    let mut decoder = ChunkDecoder::new();
    chunks
        .flat_map(move |item| {
            let events: Vec<Result<StreamEvent>> = match item {
                Ok(chunk) => {
                    let mut evs = Vec::new();
                    decoder.decode(chunk, &mut evs);
                    evs.into_iter().map(Ok).collect()
                }
                Err(e) => vec![Err(e)],
            };
            futures::stream::iter(events)
        })
        .boxed()
}

pub(crate) fn timeout_error(provider: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("upstream {provider} did not answer in time"),
    )
}

pub(crate) fn transport_error(provider: &str, e: &reqwest::Error) -> Error {
    if e.is_timeout() {
        return Error::new(
            ErrorKind::Timeout,
            format!("upstream {provider} went silent for too long"),
        );
    }
    let what = if e.is_connect() {
        "could not be reached"
    } else if e.is_body() || e.is_decode() {
        "broke off its answer"
    } else {
        "failed"
    };
    let mut source: Option<&dyn std::error::Error> = Some(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    Error::bad_gateway(format!("upstream {provider} {what}: {detail}"))
}

/// Maps an upstream error response faithfully: a 4xx keeps its status and message; a 5xx becomes 502
/// (503 and 504 stay) with the upstream's message; `Retry-After` is kept.
pub(crate) async fn upstream_error(provider: &str, resp: reqwest::Response, deadline: Instant) -> Error {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match tokio::time::timeout_at(deadline, read_limited(resp, 64 * 1024)).await {
        Ok(Ok(b)) => b,
        _ => Bytes::new(),
    };
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let err_obj = parsed.as_ref().and_then(|v| v.get("error"));
    let message = err_obj
        .and_then(|e| e.get("message").or(Some(e)).and_then(Value::as_str))
        .map(str::to_string)
        .or_else(|| {
            parsed
                .as_ref()
                .and_then(|v| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&body);
            let snippet: String = text.chars().take(200).collect();
            if snippet.trim().is_empty() {
                format!("upstream {provider} answered HTTP {}", status.as_u16())
            } else {
                format!(
                    "upstream {provider} answered HTTP {}: {}",
                    status.as_u16(),
                    snippet.trim()
                )
            }
        });
    let mut e = Error::new(ErrorKind::Upstream, message);
    e.status = Some(match status.as_u16() {
        400..=499 | 503 | 504 => status,
        _ => StatusCode::BAD_GATEWAY,
    });
    e.upstream_type = err_obj
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str)
        .map(str::to_string);
    e.code = err_obj
        .and_then(|o| o.get("code"))
        .and_then(Value::as_str)
        .map(str::to_string);
    e.param = err_obj
        .and_then(|o| o.get("param"))
        .and_then(Value::as_str)
        .map(str::to_string);
    e.retry_after = retry_after;
    metrics::counter!(crate::telemetry::UPSTREAM_ERRORS, "provider" => provider.to_string(), "kind" => "status")
        .increment(1);
    e
}

async fn read_limited(resp: reqwest::Response, limit: usize) -> reqwest::Result<Bytes> {
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        let room = limit.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= limit {
            break;
        }
    }
    Ok(Bytes::from(out))
}

impl ProviderOptions {
    pub(crate) fn extra_headers(&self) -> Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (k, v) in &self.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| Error::internal(format!("header name `{k}` is not valid")))?;
            let value = HeaderValue::from_str(v)
                .map_err(|_| Error::internal(format!("header `{k}` has an invalid value")))?;
            headers.insert(name, value);
        }
        Ok(headers)
    }
}
