//! Anthropic's Messages API (and anything that speaks it): `POST {base}/v1/messages` and
//! `POST {base}/v1/messages/count_tokens`, with `x-api-key`, `anthropic-version` and `anthropic-beta`.
//!
//! Two paths, as for OpenAI-compatible upstreams: the same-dialect fast path ([`AnthropicProvider::forward`])
//! sends an Anthropic caller's validated body with only `model` rewritten and hands back the upstream's
//! JSON or its stream events as they are; the canonical path ([`AnthropicProvider::chat`]) renders a
//! request from another dialect with [`MessagesRequest::from_canonical`] and decodes the answer into
//! canonical events. Either way a stream ends with `message_stop`, or with an error: an upstream `error`
//! event, a stream cut before `message_stop`, or the whole-request deadline.

use futures::StreamExt;
use futures::stream::BoxStream;
use http::{HeaderMap, HeaderValue, StatusCode};
use protocol::anthropic::{self as wire, EventDecoder, MessagesRequest, MessagesResponse};
use protocol::canonical::{self as c, StreamEvent};
use protocol::sse::SseEvent;
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::http_client::{HttpUpstream, gateway_status, sse_events};
use super::{ChatOutput, EventStream, ProviderOptions, Raw, with_deadline};
use crate::error::{Error, ErrorKind, Result};

/// The `anthropic-version` sent when the config names none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

#[derive(Debug)]
pub struct AnthropicProvider {
    http: HttpUpstream,
    /// `anthropic-beta` values sent with every request.
    beta: Vec<String>,
}

/// The API root of a base URL given the way the Anthropic SDK takes it (`https://api.anthropic.com`),
/// tolerating one that already ends in `/v1`.
pub fn api_root(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    let base = base.strip_suffix("/v1").unwrap_or(base);
    format!("{base}/v1")
}

/// Splits `anthropic-beta` values (comma-separated, possibly over several headers) and appends the new
/// ones to `out`, keeping the first occurrence of each.
fn merge_beta<'a>(out: &mut Vec<String>, values: impl IntoIterator<Item = &'a str>) {
    for v in values {
        for b in v.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            if !out.iter().any(|x| x == b) {
                out.push(b.to_string());
            }
        }
    }
}

impl AnthropicProvider {
    pub fn new(
        name: &str,
        opts: &ProviderOptions,
        version: Option<&str>,
        beta: &[String],
    ) -> Result<AnthropicProvider> {
        let invalid =
            |what: &str| Error::internal(format!("provider {name}: {what} is not a valid header value"));
        let mut headers = HeaderMap::new();
        if let Some(key) = opts.api_key.as_deref().filter(|k| !k.is_empty()) {
            let mut v = HeaderValue::from_str(key).map_err(|_| invalid("api_key"))?;
            v.set_sensitive(true);
            headers.insert("x-api-key", v);
        }
        let version = version.filter(|v| !v.is_empty()).unwrap_or(DEFAULT_VERSION);
        headers.insert(
            "anthropic-version",
            HeaderValue::from_str(version).map_err(|_| invalid("anthropic_version"))?,
        );
        let mut merged = Vec::new();
        merge_beta(&mut merged, beta.iter().map(String::as_str));
        if !merged.is_empty() {
            HeaderValue::from_str(&merged.join(",")).map_err(|_| invalid("anthropic_beta"))?;
        }
        let mut opts = opts.clone();
        opts.base_url = api_root(&opts.base_url);
        Ok(AnthropicProvider {
            http: HttpUpstream::new(name, &opts, headers)?,
            beta: merged,
        })
    }

    pub fn name(&self) -> &str {
        &self.http.name
    }

    pub(crate) fn http(&self) -> &HttpUpstream {
        &self.http
    }

    /// The `anthropic-beta` header: the config's values, then the caller's (fast path only).
    fn beta_header(&self, client: &[&str]) -> Option<HeaderMap> {
        let mut all = self.beta.clone();
        merge_beta(&mut all, client.iter().copied());
        if all.is_empty() {
            return None;
        }
        let v = HeaderValue::from_str(&all.join(",")).ok()?;
        let mut h = HeaderMap::new();
        h.insert("anthropic-beta", v);
        Some(h)
    }

    /// Posts `body` with `model` rewritten; returns the success response, its deadline and whether it
    /// streams.
    async fn send(
        &self,
        path: &str,
        body: &mut Map<String, Value>,
        upstream_model: &str,
        client_beta: &[&str],
    ) -> Result<(super::transport::Response, Instant, bool)> {
        let deadline = self.http.deadline();
        body.insert("model".into(), Value::String(upstream_model.to_string()));
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let bytes = serde_json::to_vec(&*body).map_err(|e| Error::internal(e.to_string()))?;
        let resp = self
            .http
            .post(path, bytes, self.beta_header(client_beta), deadline)
            .await?;
        Ok((resp, deadline, stream))
    }

    /// The same-dialect fast path: the caller's validated body goes upstream as it is, with only the
    /// model name rewritten; `client_beta` are the caller's own `anthropic-beta` headers. `path` is
    /// relative to `{base}/v1` (`messages`, `messages/count_tokens`). A stream comes back as its events'
    /// JSON objects, `ping` included, ending with `message_stop`.
    pub async fn forward(
        &self,
        path: &str,
        body: &mut Map<String, Value>,
        upstream_model: &str,
        client_beta: &[&str],
    ) -> Result<Raw> {
        let (resp, deadline, stream) = self.send(path, body, upstream_model, client_beta).await?;
        if stream {
            let events = json_events(sse_events(resp, self.http.name.clone()), self.http.name.clone());
            Ok(Raw::Stream(with_deadline(
                events,
                deadline,
                self.http.name.clone(),
            )))
        } else {
            Ok(Raw::Full(self.http.read_object(resp, deadline).await?))
        }
    }

    /// `count_tokens` forwarded: the upstream's `{"input_tokens": N}`.
    pub async fn count_tokens(
        &self,
        mut body: Map<String, Value>,
        upstream_model: &str,
        client_beta: &[&str],
    ) -> Result<Value> {
        body.remove("stream");
        match self
            .forward("messages/count_tokens", &mut body, upstream_model, client_beta)
            .await?
        {
            Raw::Full(v) if v.get("input_tokens").is_some_and(Value::is_u64) => Ok(v),
            _ => Err(Error::bad_gateway(format!(
                "upstream {} answered count_tokens without input_tokens",
                self.http.name
            ))),
        }
    }

    /// The canonical path: a request from another dialect, rendered as Anthropic. What Anthropic cannot
    /// carry is refused (400) or returned as warnings.
    pub async fn chat(
        &self,
        req: &c::ChatRequest,
        upstream_model: &str,
    ) -> Result<(ChatOutput, Vec<String>)> {
        let (wire, warnings) = MessagesRequest::from_canonical(req)?;
        let mut body = match serde_json::to_value(&wire) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Error::internal("could not encode the upstream request")),
        };
        let (resp, deadline, stream) = self.send("messages", &mut body, upstream_model, &[]).await?;
        let name = self.http.name.clone();
        let created = now_secs();
        let out = if stream {
            let events = decode_events(sse_events(resp, name.clone()), name.clone(), created);
            ChatOutput::Stream(with_deadline(events, deadline, name))
        } else {
            let v = self.http.read_object(resp, deadline).await?;
            let mut r = parse_message(v, &name)?.to_canonical();
            r.created = created;
            ChatOutput::Full(r)
        };
        Ok((out, warnings))
    }
}

/// A whole Messages response, or a 502 naming what is wrong with it.
pub(crate) fn parse_message(v: Value, provider: &str) -> Result<MessagesResponse> {
    if v.get("type").and_then(Value::as_str) != Some("message")
        || !v.get("content").is_some_and(Value::is_array)
    {
        return Err(Error::bad_gateway(format!(
            "upstream {provider} answered with something that is not a message"
        )));
    }
    serde_json::from_value(v).map_err(|e| {
        Error::bad_gateway(format!(
            "upstream {provider} sent something that is not a message: {e}"
        ))
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An error an upstream reported inside its stream (`event: error`), with the status its type stands
/// for (mapped as [`gateway_status`] maps statuses: `overloaded_error` → 503, which the Anthropic surface
/// answers as 529).
pub fn stream_error(provider: &str, error_type: &str, message: &str) -> Error {
    let status = StatusCode::from_u16(wire::status_for_error_type(error_type))
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut e = Error::new(ErrorKind::Upstream, format!("upstream {provider}: {message}"));
    e.status = Some(gateway_status(status));
    e.upstream_type = Some(error_type.to_string());
    metrics::counter!(crate::telemetry::UPSTREAM_ERRORS, "provider" => provider.to_string(), "kind" => "stream")
        .increment(1);
    e
}

fn cut_short(provider: &str) -> Error {
    Error::bad_gateway(format!(
        "upstream {provider} closed the stream before message_stop"
    ))
}

/// Stream event names Anthropic documents; data that is not JSON under one of them is an error.
const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
];

/// The fast path's stream: each event's JSON object (its `type` is the SSE event name), up to and
/// including `message_stop`. An `error` event ends it with that error; so does a stream cut short.
fn json_events(
    events: BoxStream<'static, Result<SseEvent>>,
    provider: String,
) -> BoxStream<'static, Result<Value>> {
    futures::stream::unfold((events, false), move |(mut events, done)| {
        let provider = provider.clone();
        async move {
            if done {
                return None;
            }
            loop {
                let ev = match events.next().await {
                    None => return Some((Err(cut_short(&provider)), (events, true))),
                    Some(Err(e)) => return Some((Err(e), (events, true))),
                    Some(Ok(ev)) => ev,
                };
                let name = ev.event.as_deref().unwrap_or("");
                if ev.data.trim().is_empty() {
                    continue;
                }
                let v: Value = match serde_json::from_str(&ev.data) {
                    Ok(v @ Value::Object(_)) => v,
                    _ if name == "error" => {
                        let e = stream_error(&provider, "api_error", ev.data.trim());
                        return Some((Err(e), (events, true)));
                    }
                    _ if KNOWN_EVENTS.contains(&name) => {
                        let e = Error::bad_gateway(format!(
                            "upstream {provider} sent a {name} event that is not JSON"
                        ));
                        return Some((Err(e), (events, true)));
                    }
                    _ => continue,
                };
                let ty = v.get("type").and_then(Value::as_str).unwrap_or(name);
                if ty == "error" {
                    let err = v.get("error");
                    let kind = err
                        .and_then(|e| e.get("type"))
                        .and_then(Value::as_str)
                        .unwrap_or("api_error");
                    let msg = err
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("the upstream reported an error mid-stream");
                    return Some((Err(stream_error(&provider, kind, msg)), (events, true)));
                }
                let last = ty == "message_stop";
                return Some((Ok(v), (events, last)));
            }
        }
    })
    .boxed()
}

/// The canonical path's stream: events decoded with [`EventDecoder`], ending at `message_stop`. An
/// upstream `error` event, a malformed event or a stream cut short ends it with an error.
fn decode_events(
    events: BoxStream<'static, Result<SseEvent>>,
    provider: String,
    created: u64,
) -> EventStream {
    struct St {
        events: BoxStream<'static, Result<SseEvent>>,
        decoder: EventDecoder,
        pending: std::collections::VecDeque<Result<StreamEvent>>,
        done: bool,
        provider: String,
        created: u64,
    }
    let st = St {
        events,
        decoder: EventDecoder::new(),
        pending: Default::default(),
        done: false,
        provider,
        created,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(item) = st.pending.pop_front() {
                return Some((item, st));
            }
            if st.done {
                return None;
            }
            match st.events.next().await {
                None => {
                    st.done = true;
                    st.pending.push_back(Err(cut_short(&st.provider)));
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.push_back(Err(e));
                }
                Some(Ok(ev)) => {
                    let mut out = Vec::new();
                    let res = st.decoder.decode(&ev, &mut out);
                    st.pending.extend(out.into_iter().map(|mut e| {
                        if let StreamEvent::Start { created, .. } = &mut e
                            && *created == 0
                        {
                            *created = st.created;
                        }
                        Ok(e)
                    }));
                    if let Err(de) = res {
                        st.done = true;
                        let e = stream_error(&st.provider, &de.error_type, &de.message);
                        st.pending.push_back(Err(e));
                    } else if st.decoder.is_finished() {
                        st.done = true;
                    }
                }
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_as_the_sdk_takes_them() {
        assert_eq!(
            api_root("https://api.anthropic.com"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            api_root("https://api.anthropic.com/"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(
            api_root("https://api.anthropic.com/v1"),
            "https://api.anthropic.com/v1"
        );
        assert_eq!(api_root("http://h:1/proxy/v1/"), "http://h:1/proxy/v1");
    }

    #[test]
    fn beta_values_merge_without_repeats() {
        let mut out = vec!["a".to_string()];
        merge_beta(&mut out, ["b, a", "c,,b"]);
        assert_eq!(out, ["a", "b", "c"]);
    }
}
