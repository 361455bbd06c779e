//! What every HTTP upstream shares: one pooled client, fixed headers, the whole-request deadline, and
//! the faithful mapping of transport failures and error answers onto the gateway's error kinds.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use protocol::sse::{SseDecoder, SseEvent};
use serde_json::Value;
use tokio::time::Instant;

use super::ProviderOptions;
use super::transport::{self, Client, ClientOptions, Response, TransportError};
use crate::error::{Error, ErrorKind, Result};

/// One upstream reached over HTTP.
#[derive(Debug)]
pub struct HttpUpstream {
    pub name: String,
    /// Without a trailing `/`.
    pub base_url: String,
    pub headers: HeaderMap,
    pub client: Client,
    /// The whole-request deadline, streaming included.
    pub timeout: Duration,
    /// Endpoint URLs parsed once (a handful per provider), instead of a `format!` and a URL parse per
    /// request.
    urls: parking_lot::RwLock<Vec<(String, http::Uri)>>,
}

impl HttpUpstream {
    /// `headers` are sent with every request, after the config's own `headers`.
    pub fn new(name: &str, opts: &ProviderOptions, headers: HeaderMap) -> Result<HttpUpstream> {
        let mut all = HeaderMap::new();
        all.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("switchyard/", env!("CARGO_PKG_VERSION"))),
        );
        all.extend(opts.extra_headers()?);
        all.extend(headers);
        all.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let client = Client::new(
            &opts.base_url,
            ClientOptions {
                connect_timeout: opts.connect_timeout,
                idle_timeout: opts.idle_timeout,
                http2_prior_knowledge: opts.http2_prior_knowledge,
            },
        )
        .map_err(|e| Error::internal(format!("provider {name}: {e}")))?;
        Ok(HttpUpstream {
            name: name.to_string(),
            base_url: opts.base_url.trim_end_matches('/').to_string(),
            headers: all,
            client,
            timeout: opts.timeout,
            urls: Default::default(),
        })
    }

    /// A fresh deadline for one request.
    pub fn deadline(&self) -> Instant {
        Instant::now() + self.timeout
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}", self.base_url, path)
    }

    /// The URL of an endpoint, parsed on its first use.
    fn parsed_url(&self, path: &str) -> Result<http::Uri> {
        if let Some((_, u)) = self.urls.read().iter().find(|(p, _)| p == path) {
            return Ok(u.clone());
        }
        let url = self.url(path);
        let url: http::Uri = url.parse().map_err(|e| {
            Error::bad_gateway(format!("upstream {}: `{url}` is not a valid URL: {e}", self.name))
        })?;
        let mut urls = self.urls.write();
        // Paths are a fixed set per provider (the Azure form carries the deployment): bounded anyway.
        if urls.len() < 64 {
            urls.push((path.to_string(), url.clone()));
        }
        Ok(url)
    }

    /// Sends a JSON body (plus per-request headers) and returns the response once its status is a
    /// success; an error answer becomes [`upstream_error`].
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        extra: Option<HeaderMap>,
        deadline: Instant,
    ) -> Result<Response> {
        let url = self.parsed_url(path)?;
        // The header values are shared, not copied (`HeaderValue` is reference-counted bytes).
        let mut headers = self.headers.clone();
        if let Some(extra) = extra {
            headers.extend(extra);
        }
        let send = self
            .client
            .send(http::Method::POST, url, headers, Bytes::from(body));
        let resp = match tokio::time::timeout_at(deadline, send).await {
            Err(_) => return Err(timeout_error(&self.name)),
            Ok(Err(e)) => return Err(transport_error(&self.name, &e)),
            Ok(Ok(resp)) => resp,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(upstream_error(&self.name, resp, deadline).await)
    }

    /// An active health check: `GET path`. Reachable and not a 5xx is healthy (a server without the
    /// route still answers, so 404 counts as up).
    pub async fn probe(&self, path: &str, timeout: Duration) -> std::result::Result<(), String> {
        let url = match self.parsed_url(path) {
            Ok(u) => u,
            Err(e) => return Err(e.message),
        };
        let mut headers = self.headers.clone();
        headers.remove(http::header::CONTENT_TYPE);
        let req = self.client.send(http::Method::GET, url, headers, Bytes::new());
        match tokio::time::timeout(timeout, req).await {
            Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            Ok(Err(e)) => Err(transport_error(&self.name, &e).message),
            Ok(Ok(resp)) if resp.status().is_server_error() => {
                Err(format!("answered HTTP {}", resp.status().as_u16()))
            }
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Reads a whole success body, bounded by the deadline.
    pub async fn read_body(&self, resp: Response, deadline: Instant) -> Result<Bytes> {
        match tokio::time::timeout_at(deadline, resp.bytes()).await {
            Err(_) => Err(timeout_error(&self.name)),
            Ok(Err(e)) => Err(transport_error(&self.name, &e)),
            Ok(Ok(b)) => Ok(b),
        }
    }

    /// Reads a whole success body that must be a JSON object.
    pub async fn read_object(&self, resp: Response, deadline: Instant) -> Result<Value> {
        let body = self.read_body(resp, deadline).await?;
        match serde_json::from_slice::<Value>(&body) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(super::not_json(&self.name)),
        }
    }

    /// Reads a whole success body that must be a JSON object, with no tree of its values built (it is
    /// checked: a malformed answer still fails the attempt, so the next deployment can be tried).
    pub async fn read_json(&self, resp: Response, deadline: Instant) -> Result<protocol::raw::ParsedObject> {
        let body = self.read_body(resp, deadline).await?;
        protocol::raw::ParsedObject::parse(body).map_err(|_| super::not_json(&self.name))
    }
}

/// The raw server-sent events of a response body, in order. A transport failure or a malformed event
/// stream ends it with an error; the end of the body simply ends it (callers judge whether the
/// upstream finished).
pub(crate) fn sse_events(resp: Response, provider: String) -> BoxStream<'static, Result<SseEvent>> {
    struct St {
        body: transport::BodyStream,
        decoder: SseDecoder,
        pending: std::collections::VecDeque<SseEvent>,
        finished: bool,
        provider: String,
    }
    let st = St {
        body: resp.into_stream(),
        decoder: SseDecoder::new(),
        pending: Default::default(),
        finished: false,
        provider,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.finished {
                return None;
            }
            match st.body.next().await {
                Some(Ok(bytes)) => {
                    let mut out = Vec::new();
                    if let Err(e) = st.decoder.push(&bytes, &mut out) {
                        st.finished = true;
                        st.pending.clear();
                        let e = Error::bad_gateway(format!("upstream {}: {e}", st.provider));
                        return Some((Err(e), st));
                    }
                    // After the payload's last event only the body's end can follow: read it
                    // without waiting, so that the connection serves the next request.
                    if out.iter().any(is_last_event) {
                        st.body.finish();
                    }
                    st.pending.extend(out);
                }
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(transport_error(&st.provider, &e)), st));
                }
                None => {
                    st.finished = true;
                    let mut out = Vec::new();
                    let _ = st.decoder.finish(&mut out);
                    st.pending.extend(out);
                }
            }
        }
    })
    .boxed()
}

/// The event that ends an answer: OpenAI's `data: [DONE]`, Anthropic's `message_stop`.
fn is_last_event(ev: &SseEvent) -> bool {
    ev.data.trim_ascii() == "[DONE]" || ev.event.as_deref() == Some("message_stop")
}

pub(crate) fn timeout_error(provider: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("upstream {provider} did not answer in time"),
    )
}

pub(crate) fn transport_error(provider: &str, e: &TransportError) -> Error {
    let (what, detail) = match e {
        TransportError::Idle => {
            return Error::new(
                ErrorKind::Timeout,
                format!("upstream {provider} went silent for too long"),
            );
        }
        TransportError::Connect(d) => ("could not be reached", d),
        TransportError::Body(d) => ("broke off its answer", d),
        TransportError::Send(d) => ("failed", d),
    };
    Error::bad_gateway(format!("upstream {provider} {what}: {detail}"))
}

/// The status the gateway answers for an upstream's error status: a 4xx is kept, 503 and 504 are kept,
/// Anthropic's 529 (overloaded) becomes 503 (which the Anthropic surface renders as 529 again), and any
/// other 5xx becomes 502.
pub(crate) fn gateway_status(status: StatusCode) -> StatusCode {
    match status.as_u16() {
        400..=499 | 503 | 504 => status,
        529 => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    }
}

/// Maps an upstream error response faithfully: a 4xx keeps its status and message; a 5xx becomes 502
/// (503 and 504 stay, 529 becomes 503) with the upstream's message; `Retry-After` is kept. Reads both
/// OpenAI's `{"error": {"message", "type", "code", "param"}}` and Anthropic's
/// `{"type": "error", "error": {"type", "message"}}`.
pub(crate) async fn upstream_error(provider: &str, resp: Response, deadline: Instant) -> Error {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match tokio::time::timeout_at(deadline, resp.bytes_limited(64 * 1024)).await {
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
    e.status = Some(gateway_status(status));
    e.upstream_status = Some(status.as_u16());
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
    e.set_retry_after(retry_after);
    metrics::counter!(crate::telemetry::UPSTREAM_ERRORS, "provider" => provider.to_string(), "kind" => "status")
        .increment(1);
    e
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
