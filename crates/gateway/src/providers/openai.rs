//! Any OpenAI-compatible upstream: OpenAI itself, vLLM, llama.cpp's server, Ollama, hosted clouds.

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use protocol::canonical::{self as c, StreamEvent};
use protocol::openai::chat::{ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChunkDecoder};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::http_client::HttpUpstream;
use super::{ChatOutput, ChunkStream, EventStream, ProviderOptions, Raw, sse_json_stream, with_deadline};
use crate::error::{Error, Result};

/// The `api-version` an Azure provider uses when its config names none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

#[derive(Debug)]
pub struct OpenAiProvider {
    http: HttpUpstream,
    /// Azure OpenAI: the `api-version`; paths become `openai/deployments/{model}/{path}?api-version=…`.
    azure_api_version: Option<String>,
    /// How this upstream's dialect differs (from its preset).
    quirks: super::presets::Quirks,
    /// `/v1/responses` goes to the upstream's own Responses API, as it is.
    pub native_responses: bool,
}

impl OpenAiProvider {
    pub fn new(name: &str, opts: &ProviderOptions) -> Result<OpenAiProvider> {
        let mut headers = HeaderMap::new();
        if let Some(key) = opts.api_key.as_deref().filter(|k| !k.is_empty()) {
            let mut v = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                Error::internal(format!("provider {name}: api_key is not a valid header value"))
            })?;
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        Ok(OpenAiProvider {
            http: HttpUpstream::new(name, opts, headers)?,
            azure_api_version: None,
            quirks: super::presets::Quirks::default(),
            native_responses: false,
        })
    }

    pub fn with_quirks(mut self, q: super::presets::Quirks) -> OpenAiProvider {
        self.quirks = q;
        self
    }

    /// Azure OpenAI: the same wire format, with the deployment in the path, the version in the query,
    /// and the key in `api-key` (or as a bearer token).
    pub fn azure(
        name: &str,
        opts: &ProviderOptions,
        api_version: &str,
        bearer: bool,
    ) -> Result<OpenAiProvider> {
        let mut headers = HeaderMap::new();
        if let Some(key) = opts.api_key.as_deref().filter(|k| !k.is_empty()) {
            let (header, value) = if bearer {
                (http::header::AUTHORIZATION, format!("Bearer {key}"))
            } else {
                (http::HeaderName::from_static("api-key"), key.to_string())
            };
            let mut v = HeaderValue::from_str(&value).map_err(|_| {
                Error::internal(format!("provider {name}: api_key is not a valid header value"))
            })?;
            v.set_sensitive(true);
            headers.insert(header, v);
        }
        Ok(OpenAiProvider {
            http: HttpUpstream::new(name, opts, headers)?,
            azure_api_version: Some(api_version.to_string()),
            quirks: super::presets::Quirks::default(),
            native_responses: false,
        })
    }

    /// The path of an endpoint for a model, relative to the base URL.
    fn path_for(&self, path: &str, upstream_model: &str) -> String {
        match &self.azure_api_version {
            Some(v) => format!("openai/deployments/{upstream_model}/{path}?api-version={v}"),
            None => path.to_string(),
        }
    }

    /// The path the health check reads.
    pub(crate) fn models_path(&self) -> String {
        match &self.azure_api_version {
            Some(v) => format!("openai/models?api-version={v}"),
            None => "models".to_string(),
        }
    }

    pub fn name(&self) -> &str {
        &self.http.name
    }

    pub(crate) fn http(&self) -> &HttpUpstream {
        &self.http
    }

    /// Sends a JSON body and returns the response once its status is a success.
    pub async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        deadline: Instant,
    ) -> Result<super::transport::Response> {
        self.http.post(path, body, None, deadline).await
    }

    /// Reads a whole success body, bounded by the deadline.
    pub async fn read_body(&self, resp: super::transport::Response, deadline: Instant) -> Result<Bytes> {
        self.http.read_body(resp, deadline).await
    }

    /// The same-dialect fast path: the caller's validated body goes upstream as it is, with only the
    /// model name and stream options rewritten. `path` is relative to the base URL.
    pub async fn forward(
        &self,
        path: &str,
        body: &mut Map<String, Value>,
        upstream_model: &str,
    ) -> Result<Raw> {
        let deadline = self.http.deadline();
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
        self.quirks.apply(body);
        let bytes = serde_json::to_vec(&*body).map_err(|e| Error::internal(e.to_string()))?;
        let resp = self
            .post(&self.path_for(path, upstream_model), bytes, deadline)
            .await?;
        if stream {
            let name = self.http.name.clone();
            let events = sse_json_stream(resp, name.clone());
            Ok(Raw::Chunks(with_deadline(events, deadline, name)))
        } else {
            Ok(Raw::Json(self.http.read_json(resp, deadline).await?))
        }
    }

    /// A Responses API request sent to the upstream's own `/responses` as it is (model renamed). A
    /// stream comes back as its raw server-sent events.
    pub async fn forward_responses(
        &self,
        body: &Map<String, Value>,
        upstream_model: &str,
    ) -> Result<NativeAnswer> {
        let deadline = self.http.deadline();
        let mut body = body.clone();
        body.insert("model".into(), Value::String(upstream_model.to_string()));
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let resp = self
            .post(&self.path_for("responses", upstream_model), bytes, deadline)
            .await?;
        let name = self.http.name.clone();
        if stream {
            let events = super::http_client::sse_events(resp, name.clone());
            Ok(NativeAnswer::Stream(with_deadline(events, deadline, name)))
        } else {
            Ok(NativeAnswer::Full(self.http.read_object(resp, deadline).await?))
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
        let name = self.http.name.clone();
        let out = match self
            .forward("chat/completions", &mut body, upstream_model)
            .await?
        {
            Raw::Json(b) => {
                let resp: ChatCompletion =
                    serde_json::from_str(b.text()).map_err(|e| not_a_completion(&name, &e))?;
                ChatOutput::Full(resp.to_canonical())
            }
            Raw::Full(v) => {
                let resp: ChatCompletion =
                    serde_json::from_value(v).map_err(|e| not_a_completion(&name, &e))?;
                ChatOutput::Full(resp.to_canonical())
            }
            Raw::Chunks(texts) => {
                let chunks = texts
                    .map(move |item| {
                        item.and_then(|t| {
                            serde_json::from_str::<ChatCompletionChunk>(&t)
                                .map_err(|e| not_a_completion(&name, &e))
                        })
                    })
                    .boxed();
                ChatOutput::Stream(chunks_to_events(chunks))
            }
            Raw::Stream(_) => return Err(Error::internal("an OpenAI upstream answered with values")),
        };
        Ok((out, warnings))
    }
}

/// A native Responses answer.
pub enum NativeAnswer {
    Full(Value),
    Stream(futures::stream::BoxStream<'static, Result<protocol::sse::SseEvent>>),
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
