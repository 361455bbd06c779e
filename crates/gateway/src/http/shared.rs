//! What the chat surfaces (OpenAI, Anthropic) share: reading and resolving a request, the usage
//! settlement, and the headers and labels every answer carries.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::Response;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use protocol::WireError;
use protocol::canonical::{self as c, StreamAccumulator};
use serde_json::{Map, Value};

use super::response::{Dialect, ModelLabel, error_response};
use super::{App, read_body};
use crate::config::ModelType;
use crate::error::{Error, Result};
use crate::providers::EventStream;
use crate::router::{Deployment, ModelEntry};
use crate::telemetry;

/// Usage and timing of one call, recorded when the response ends — or when the client goes away, so a
/// disconnect never loses what was already spent.
pub(crate) struct Settle {
    model: String,
    pub(crate) provider: String,
    start: Instant,
    usage: Option<c::Usage>,
    first_token: bool,
}

impl Settle {
    pub(crate) fn new(model: &str, dep: &Deployment) -> Settle {
        Settle {
            model: model.to_string(),
            provider: dep.provider.name().to_string(),
            start: Instant::now(),
            usage: None,
            first_token: false,
        }
    }

    pub(crate) fn usage(&mut self, u: c::Usage) {
        self.usage = Some(u);
    }

    pub(crate) fn token(&mut self) {
        if !self.first_token {
            self.first_token = true;
            metrics::histogram!(telemetry::TIME_TO_FIRST_TOKEN, "model" => self.model.clone())
                .record(self.start.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Settle {
    fn drop(&mut self) {
        if let Some(u) = self.usage {
            let labels = |dir: &'static str| {
                [
                    ("model", self.model.clone()),
                    ("provider", self.provider.clone()),
                    ("direction", dir.to_string()),
                ]
            };
            metrics::counter!(telemetry::TOKENS, &labels("input")).increment(u.input_tokens);
            metrics::counter!(telemetry::TOKENS, &labels("output")).increment(u.output_tokens);
        }
    }
}

/// A handler's answer: its response, or its error in the caller's envelope; labelled with the model
/// for the metrics layer either way.
pub(crate) fn answer(dialect: Dialect, model: &str, result: Result<Response>) -> Response {
    match result {
        Ok(resp) => labelled(resp, model),
        Err(e) => labelled(error_response(dialect, &e), model),
    }
}

pub(crate) fn labelled(mut resp: Response, model: &str) -> Response {
    resp.extensions_mut().insert(ModelLabel(model.to_string()));
    resp
}

pub(crate) fn served_by(resp: &mut Response, dep: &Deployment, warnings: &[String]) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(dep.provider.name()) {
        h.insert("x-switchyard-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&dep.upstream_model) {
        h.insert("x-switchyard-upstream-model", v);
    }
    if !warnings.is_empty() {
        // Header values are visible ASCII: anything else is shown as `?`.
        let text: String = warnings
            .join("; ")
            .chars()
            .map(|ch| {
                if ch == ' ' || ch.is_ascii_graphic() {
                    ch
                } else {
                    '?'
                }
            })
            .collect();
        if let Ok(v) = HeaderValue::from_str(&text) {
            h.insert("x-switchyard-warnings", v);
        }
    }
}

/// Checks that a model can answer chat on this route.
pub(crate) fn chat_deployment(entry: &ModelEntry) -> Result<&Deployment> {
    if entry.kind != ModelType::Chat {
        return Err(Error::invalid_param(
            "model",
            format!(
                "The model `{}` is a {} model and does not support chat; use {}.",
                entry.public_name,
                entry.kind.as_str(),
                match entry.kind {
                    ModelType::Completion => "/v1/completions",
                    _ => "/v1/embeddings",
                }
            ),
        ));
    }
    entry
        .deployments
        .first()
        .ok_or_else(|| Error::model_not_found(&entry.public_name))
}

/// Folds a canonical stream into a whole response.
pub(crate) async fn collect(mut s: EventStream) -> Result<c::ChatResponse> {
    let mut acc = StreamAccumulator::new();
    while let Some(ev) = s.next().await {
        acc.push(&ev?);
    }
    Ok(acc.finish())
}

/// A chat request read (within the body limit), parsed into a JSON object, validated by the surface's
/// own rules, and resolved to its catalog entry. `model_out` gets the public name as soon as it is
/// known, for the metrics label of an error answer too.
pub(crate) async fn read_chat_request(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    validate: fn(&Map<String, Value>) -> std::result::Result<(), WireError>,
    model_out: &mut String,
) -> Result<(Map<String, Value>, Arc<ModelEntry>)> {
    let bytes = read_body(body, headers, app.max_body_bytes).await?;
    let obj = protocol::openai::parse_object(&bytes)?;
    validate(&obj)?;
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let entry = app.catalog.resolve(&model)?.clone();
    model_out.clone_from(&model);
    Ok((obj, entry))
}
