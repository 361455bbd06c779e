//! Rendering: errors in each dialect's envelope, SSE bodies, and the labels the metrics layer reads.

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};

use crate::error::Error;

/// Which envelope a surface answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    OpenAi,
    Anthropic,
}

impl Dialect {
    /// The dialect a path belongs to, for answers given before a handler runs (auth, 404, 413).
    pub fn of_path(path: &str) -> Dialect {
        if path.starts_with("/anthropic/") || path.starts_with("/v1/messages") {
            Dialect::Anthropic
        } else {
            Dialect::OpenAi
        }
    }
}

/// The model label a handler leaves on its response for the metrics layer.
#[derive(Debug, Clone)]
pub struct ModelLabel(pub std::sync::Arc<str>);

/// The OpenAI error object.
pub fn openai_error_body(e: &Error) -> Value {
    json!({
        "error": {
            "message": e.message,
            "type": e.openai_type(),
            "param": e.param,
            "code": e.code,
        }
    })
}

/// The Anthropic error object.
pub fn anthropic_error_body(e: &Error) -> Value {
    json!({"type": "error", "error": {"type": e.anthropic_type(), "message": e.message}})
}

pub fn error_body(dialect: Dialect, e: &Error) -> Value {
    match dialect {
        Dialect::OpenAi => openai_error_body(e),
        Dialect::Anthropic => anthropic_error_body(e),
    }
}

/// An error answered in a dialect.
pub fn error_response(dialect: Dialect, e: &Error) -> Response {
    let status = match (dialect, e.status()) {
        // Anthropic's own overload status.
        (Dialect::Anthropic, s)
            if e.anthropic_type() == "overloaded_error" && s == StatusCode::SERVICE_UNAVAILABLE =>
        {
            StatusCode::from_u16(529).unwrap_or(s)
        }
        (_, s) => s,
    };
    let mut resp = (status, json_body(&error_body(dialect, e))).into_response();
    if let Some(ra) = e.retry_after() {
        let secs = ra.as_secs_f64().ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp.extensions_mut()
        .insert(super::ErrorTag(super::shared::error_tag(e)));
    for (name, value) in e.headers.iter().flat_map(|h| h.iter()) {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(*name, v);
        }
    }
    if e.status().is_server_error() {
        tracing::warn!(status = status.as_u16(), "{}", e.message);
    }
    resp
}

/// A JSON body with its content type.
pub fn json_body(v: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(v) {
        Ok(bytes) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            bytes,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("could not encode a response: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

/// Headers an answer can carry: its own few, the routing and rate headers and the request id. hyper
/// keeps a response's header map (emptied) for the rest of its connection's life, a stream's whole
/// life, so the map is made at this size once: grown from the default, its first table would be
/// copied and dropped on every request.
pub const ANSWER_HEADERS: usize = 20;

/// A response whose header map has room for [`ANSWER_HEADERS`].
pub(crate) fn answer_with(body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.headers_mut() = http::HeaderMap::with_capacity(ANSWER_HEADERS);
    resp
}

/// A server-sent-events response relaying `frames` as they come, never buffered.
pub fn sse_response<S>(frames: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
{
    let mut resp = answer_with(Body::from_stream(frames));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
