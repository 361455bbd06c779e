//! Upstreams. Each kind turns a canonical request into its own wire format and its answer back into
//! canonical events; a provider that speaks the caller's own dialect also offers a raw fast path.

pub mod anthropic;
pub mod bedrock;
pub mod cli;
pub mod gemini;
pub mod http_client;
pub mod local;
pub mod openai;
pub mod presets;
pub mod transport;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use protocol::canonical::{ChatRequest, ChatResponse, StreamEvent};
use protocol::openai::chat::ChatCompletionChunk;
use protocol::raw::KeyProbe;
use serde_json::Value;
use tokio::time::Instant;

use crate::config::{ProviderConfig, ProviderKind};
use crate::error::{Error, Result};

pub use anthropic::AnthropicProvider;
pub use bedrock::BedrockProvider;
pub use cli::CliProvider;
pub use gemini::GeminiProvider;
pub use local::LocalProvider;
pub use openai::OpenAiProvider;

pub type EventStream = BoxStream<'static, Result<StreamEvent>>;
pub type ChunkStream = BoxStream<'static, Result<ChatCompletionChunk>>;

/// A canonical answer: whole, or as a stream of events. (Built once per request: size is no concern.)
#[allow(clippy::large_enum_variant)]
pub enum ChatOutput {
    Full(ChatResponse),
    Stream(EventStream),
}

/// An answer from the same-dialect fast path: JSON objects as the upstream sent them.
pub enum Raw {
    Full(Value),
    /// A whole answer, checked to be one JSON object and where its members lie, but no tree of values
    /// built: the relay rewrites the few members it changes and copies the rest.
    Json(protocol::raw::ParsedObject),
    /// A stream of JSON objects (the Anthropic provider's events).
    Stream(BoxStream<'static, Result<Value>>),
    /// A stream of OpenAI chunks, each the JSON text of one event as the upstream sent it, unparsed:
    /// the relay rewrites a few members and copies the rest (and refuses what is not JSON).
    Chunks(BoxStream<'static, Result<String>>),
}

impl Raw {
    /// The answer with a whole body parsed into a value, for callers that read it as one.
    pub fn parsed(self, provider: &str) -> Result<Raw> {
        match self {
            Raw::Json(b) => match serde_json::from_str::<Value>(b.text()) {
                Ok(v @ Value::Object(_)) => Ok(Raw::Full(v)),
                _ => Err(not_json(provider)),
            },
            other => Ok(other),
        }
    }
}

/// An upstream's success body that is not a JSON object.
pub(crate) fn not_json(provider: &str) -> Error {
    Error::bad_gateway(format!("upstream {provider} returned a body that is not JSON"))
}

/// What every HTTP provider needs from its config.
#[derive(Debug, Clone)]
pub struct ProviderOptions {
    pub base_url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub http2_prior_knowledge: bool,
    pub headers: BTreeMap<String, String>,
}

impl ProviderOptions {
    pub fn from_config(c: &ProviderConfig) -> ProviderOptions {
        let preset = c.openai_preset();
        let base_url = match (c.base_url.get_ref().is_empty(), preset) {
            (true, Some(p)) => p.base_url.to_string(),
            _ => c.base_url.get_ref().clone(),
        };
        let api_key = c.api_key.clone().or_else(|| {
            preset
                .and_then(|p| p.api_key_env)
                .and_then(|k| std::env::var(k).ok())
                .filter(|k| !k.is_empty())
        });
        ProviderOptions {
            base_url,
            api_key,
            timeout: Duration::from_millis(c.timeout_ms),
            connect_timeout: Duration::from_millis(c.connect_timeout_ms),
            idle_timeout: Duration::from_millis(c.idle_timeout_ms),
            http2_prior_knowledge: c.http2_prior_knowledge,
            headers: c.headers.clone(),
        }
    }
}

/// A configured upstream.
#[derive(Clone, Debug)]
pub enum Provider {
    OpenAi(Arc<OpenAiProvider>),
    Anthropic(Arc<AnthropicProvider>),
    Local(Arc<LocalProvider>),
    Cli(Arc<CliProvider>),
    Gemini(Arc<GeminiProvider>),
    Bedrock(Arc<BedrockProvider>),
}

impl Provider {
    pub fn from_config(name: &str, c: &ProviderConfig) -> Result<Provider> {
        let opts = ProviderOptions::from_config(c);
        match c.kind {
            ProviderKind::Openai => {
                let mut p = OpenAiProvider::new(name, &opts)?;
                if let Some(preset) = c.openai_preset() {
                    p = p.with_quirks(preset.quirks);
                }
                p.native_responses = c.responses.as_deref() == Some("native");
                Ok(Provider::OpenAi(Arc::new(p)))
            }
            ProviderKind::Azure => Ok(Provider::OpenAi(Arc::new(OpenAiProvider::azure(
                name,
                &opts,
                c.api_version.as_deref().unwrap_or(openai::AZURE_API_VERSION),
                c.bearer,
            )?))),
            ProviderKind::Gemini => Ok(Provider::Gemini(Arc::new(GeminiProvider::new(name, &opts)?))),
            ProviderKind::Bedrock => {
                let creds = match (&c.aws_access_key_id, &c.aws_secret_access_key) {
                    (Some(id), Some(secret)) => Some(bedrock::Credentials {
                        access_key_id: id.clone(),
                        secret_access_key: secret.clone(),
                        session_token: c.aws_session_token.clone().filter(|t| !t.is_empty()),
                    }),
                    _ => None,
                };
                Ok(Provider::Bedrock(Arc::new(BedrockProvider::new(
                    name,
                    &opts,
                    c.region.as_deref(),
                    creds,
                )?)))
            }
            ProviderKind::Cli => {
                let preset = cli::Preset::parse(c.preset.as_deref().unwrap_or("command"))
                    .ok_or_else(|| Error::internal(format!("providers.{name}: unknown CLI preset")))?;
                let command = c
                    .command
                    .clone()
                    .or_else(|| preset.default_command().map(String::from))
                    .ok_or_else(|| Error::internal(format!("providers.{name}: no command")))?;
                Ok(Provider::Cli(Arc::new(CliProvider::new(
                    name,
                    cli::CliOptions {
                        preset,
                        command,
                        args: c.args.clone(),
                        env: c.env.clone(),
                        timeout: Duration::from_millis(c.timeout_ms),
                        max_parallel: c.max_parallel.unwrap_or(1) as usize,
                        queue: c.queue.unwrap_or(16),
                    },
                ))))
            }
            ProviderKind::Anthropic => Ok(Provider::Anthropic(Arc::new(AnthropicProvider::new(
                name,
                &opts,
                c.anthropic_version.as_deref(),
                &c.anthropic_beta,
            )?))),
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Provider::OpenAi(p) => p.name(),
            Provider::Anthropic(p) => p.name(),
            Provider::Local(_) => local::NAME,
            Provider::Cli(p) => p.name(),
            Provider::Gemini(p) => p.name(),
            Provider::Bedrock(p) => p.name(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Provider::OpenAi(_) => "openai",
            Provider::Anthropic(_) => "anthropic",
            Provider::Local(_) => "local",
            Provider::Cli(_) => "cli",
            Provider::Gemini(_) => "gemini",
            Provider::Bedrock(_) => "bedrock",
        }
    }

    /// An active health check (remote providers only): `GET models` under the API root.
    pub async fn probe(&self, timeout: Duration) -> Option<std::result::Result<(), String>> {
        match self {
            Provider::OpenAi(p) => Some(p.http().probe(&p.models_path(), timeout).await),
            Provider::Anthropic(p) => Some(p.http().probe("models", timeout).await),
            Provider::Gemini(p) => Some(p.http().probe("v1beta/models", timeout).await),
            // Bedrock's runtime has no unsigned listing to probe; its answers feed the breaker.
            Provider::Local(_) | Provider::Cli(_) | Provider::Bedrock(_) => None,
        }
    }

    /// The canonical path. Returns the answer and what could not be carried to this upstream.
    pub async fn chat(&self, req: &ChatRequest, upstream_model: &str) -> Result<(ChatOutput, Vec<String>)> {
        match self {
            Provider::OpenAi(p) => p.chat(req, upstream_model).await,
            Provider::Anthropic(p) => p.chat(req, upstream_model).await,
            Provider::Local(p) => p.chat(req),
            Provider::Cli(p) => p.chat(req, upstream_model).await,
            Provider::Gemini(p) => p.chat(req, upstream_model).await,
            Provider::Bedrock(p) => p.chat(req, upstream_model).await,
        }
    }
}

/// What the SSE reader checks in an event: an `error` member, and whether a choice finished.
#[derive(serde::Deserialize, Default)]
struct EventCheck<'a> {
    #[serde(borrow, default)]
    error: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    choices: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct FinishCheck<'a> {
    #[serde(borrow, default)]
    finish_reason: Option<&'a serde_json::value::RawValue>,
}

#[derive(serde::Deserialize)]
struct ErrorMessage {
    message: Option<String>,
}

/// Reads an SSE body of JSON events until `[DONE]`, each event's JSON text checked for an `error` and a
/// finish but not parsed into values (its consumer parses it, and refuses what is not JSON). A stream
/// that ends without `[DONE]` and without a finish is an error (the upstream broke off); an `error`
/// object in the stream becomes an error.
pub(crate) fn sse_json_stream(
    resp: transport::Response,
    provider: String,
) -> BoxStream<'static, Result<String>> {
    struct St {
        events: BoxStream<'static, Result<protocol::sse::SseEvent>>,
        finished: bool,
        saw_finish: bool,
        provider: String,
    }
    let st = St {
        events: http_client::sse_events(resp, provider.clone()),
        finished: false,
        saw_finish: false,
        provider,
    };
    futures::stream::unfold(st, |mut st| async move {
        loop {
            if st.finished {
                return None;
            }
            let ev = match st.events.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => {
                    st.finished = true;
                    return Some((Err(e), st));
                }
                None => {
                    if st.saw_finish {
                        return None;
                    }
                    st.finished = true;
                    let e = Error::bad_gateway(format!(
                        "upstream {} closed the stream before it finished",
                        st.provider
                    ));
                    return Some((Err(e), st));
                }
            };
            let data = ev.data.trim();
            if data == "[DONE]" {
                return None;
            }
            if data.is_empty() {
                continue;
            }
            // Most events are content: no `error`, and `"finish_reason":null`. Those skip the parse
            // here (the relay or the chunk decoder parses each event anyway, and refuses what is not
            // JSON); the rare event that may carry either is parsed to be sure.
            static ERROR: LazyLock<KeyProbe> = LazyLock::new(|| KeyProbe::new("error"));
            static FINISH: LazyLock<KeyProbe> = LazyLock::new(|| KeyProbe::new("finish_reason"));
            let rare = ERROR.may_hold_non_null(data) || FINISH.may_hold_non_null(data);
            let check = match rare.then(|| serde_json::from_str::<EventCheck>(data)) {
                None => EventCheck::default(),
                Some(Ok(c)) if data.starts_with('{') => c,
                Some(_) => {
                    st.finished = true;
                    let e = Error::bad_gateway(format!(
                        "upstream {} sent an event that is not JSON",
                        st.provider
                    ));
                    return Some((Err(e), st));
                }
            };
            if let Some(err) = check.error {
                st.finished = true;
                let msg = serde_json::from_str::<ErrorMessage>(err.get())
                    .ok()
                    .and_then(|m| m.message);
                let msg = msg
                    .as_deref()
                    .unwrap_or("the upstream reported an error mid-stream");
                let e = Error::bad_gateway(format!("upstream {}: {msg}", st.provider));
                return Some((Err(e), st));
            }
            if check
                .choices
                .and_then(|c| serde_json::from_str::<Vec<FinishCheck>>(c.get()).ok())
                .is_some_and(|cs| cs.iter().any(|c| c.finish_reason.is_some()))
            {
                st.saw_finish = true;
            }
            let data = if data.len() == ev.data.len() {
                ev.data
            } else {
                data.to_owned()
            };
            return Some((Ok(data), st));
        }
    })
    .boxed()
}

/// Ends a stream with a timeout error once the whole-request deadline passes.
pub(crate) fn with_deadline<T: Send + 'static>(
    inner: BoxStream<'static, Result<T>>,
    deadline: Instant,
    provider: String,
) -> BoxStream<'static, Result<T>> {
    let sleep = Box::pin(tokio::time::sleep_until(deadline));
    futures::stream::unfold((inner, sleep, false), move |(mut inner, mut sleep, done)| {
        let provider = provider.clone();
        async move {
            if done {
                return None;
            }
            tokio::select! {
                item = inner.next() => item.map(|i| (i, (inner, sleep, false))),
                () = &mut sleep => Some((Err(http_client::timeout_error(&provider)), (inner, sleep, true))),
            }
        }
    })
    .boxed()
}
