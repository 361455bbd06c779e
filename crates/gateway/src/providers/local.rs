//! The in-process provider: GGUF models on llama.cpp and BERT embeddings on candle, through the engine.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::llm::{
    FinishReason as EngineFinish, GenEvent, GenerateRequest, Prompt, SamplingParams, TokenLogprob,
};
use engine::{EmbedInput, Embedder, EngineError, LlmModel};
use futures::StreamExt;
use protocol::canonical::{self as c, FinishReason, Part, Role, StreamEvent};
use serde_json::{Value, json};

use super::{ChatOutput, EventStream};
use crate::config::ModelType;
use crate::error::{Error, ErrorKind, Result};

/// The name every local model is served under as a provider.
pub const NAME: &str = "local";

pub enum LocalModel {
    Llm(LlmModel),
    Embed(Arc<Embedder>),
}

pub struct LocalProvider {
    pub public_name: String,
    pub kind: ModelType,
    pub model: LocalModel,
    pub default_temperature: Option<f64>,
}

impl std::fmt::Debug for LocalProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalProvider")
            .field("model", &self.public_name)
            .finish_non_exhaustive()
    }
}

/// How one local model is loaded.
#[derive(Debug, Clone)]
pub struct LocalSpec {
    pub public_name: String,
    pub kind: ModelType,
    pub path: PathBuf,
    pub context_length: Option<u32>,
    pub parallel: Option<u32>,
    pub threads: Option<u32>,
    pub queue: Option<usize>,
    pub default_temperature: Option<f64>,
}

/// Maps an engine error onto the gateway's error kinds.
pub fn engine_error(e: EngineError) -> Error {
    match e {
        EngineError::PromptTooLong { tokens, limit } => Error::invalid_param(
            "messages",
            format!(
                "This model's maximum context length is {limit} tokens. However, you requested {tokens} tokens. \
                 Please reduce the length of the messages or of max_tokens."
            ),
        )
        .with_code("context_length_exceeded"),
        EngineError::QueueFull => Error::new(
            ErrorKind::Unavailable,
            "The local model is serving as many requests as it can queue; retry shortly.",
        )
        .with_code("queue_full")
        .with_retry_after(Duration::from_secs(1)),
        EngineError::InvalidParam { param, message } => {
            Error::invalid_param(param.clone(), format!("Invalid '{param}': {message}."))
        }
        EngineError::NoChatTemplate => Error::invalid_param(
            "model",
            "This model has no chat template, so it only serves /v1/completions.",
        ),
        EngineError::Template(m) => Error::invalid(format!("The model's chat template refused the request: {m}")),
        other => Error::internal(other.to_string()),
    }
}

impl LocalProvider {
    /// Loads a model (blocking: call it from a blocking context at start-up).
    pub fn load(spec: &LocalSpec) -> std::result::Result<LocalProvider, EngineError> {
        let model = match spec.kind {
            ModelType::Embedding => LocalModel::Embed(Arc::new(Embedder::load(&spec.path)?)),
            ModelType::Chat | ModelType::Completion => {
                let mut cfg = engine::llm::ModelConfig::new(spec.public_name.clone(), spec.path.clone());
                if let Some(n) = spec.context_length {
                    cfg.context_length = n;
                }
                if let Some(p) = spec.parallel {
                    cfg.parallel = p;
                }
                if let Some(t) = spec.threads {
                    cfg.threads = t;
                }
                if let Some(q) = spec.queue {
                    cfg.queue_capacity = q;
                }
                let m = LlmModel::load(cfg)?;
                if spec.kind == ModelType::Chat && m.chat_template().is_none() {
                    return Err(EngineError::InvalidModel {
                        path: spec.path.clone(),
                        message: "it has no chat template (tokenizer.chat_template); declare it with type = \"completion\""
                            .into(),
                    });
                }
                LocalModel::Llm(m)
            }
        };
        Ok(LocalProvider {
            public_name: spec.public_name.clone(),
            kind: spec.kind,
            model,
            default_temperature: spec.default_temperature,
        })
    }

    pub fn context_length(&self) -> Option<u32> {
        match &self.model {
            LocalModel::Llm(m) => Some(m.context_length()),
            LocalModel::Embed(e) => u32::try_from(e.max_tokens()).ok(),
        }
    }

    /// Whether a new request would be refused now: every slot busy and the queue full. The router then
    /// tries this model last, so `auto` moves on to the next tier instead of waiting for a 503.
    pub fn is_saturated(&self) -> bool {
        match &self.model {
            LocalModel::Llm(m) => {
                let st = m.stats();
                st.queued as usize >= m.config().queue_capacity
            }
            LocalModel::Embed(_) => false,
        }
    }

    pub fn embedding_dimensions(&self) -> Option<usize> {
        match &self.model {
            LocalModel::Embed(e) => Some(e.dimensions()),
            LocalModel::Llm(_) => None,
        }
    }

    fn llm(&self) -> Result<&LlmModel> {
        match &self.model {
            LocalModel::Llm(m) => Ok(m),
            LocalModel::Embed(_) => Err(Error::invalid_param(
                "model",
                format!("The model `{}` is an embedding model.", self.public_name),
            )),
        }
    }

    /// Sampling, limits and choices common to chat and completions.
    fn generate_request(
        &self,
        prompt: Prompt,
        add_special: bool,
        req: &c::ChatRequest,
    ) -> Result<GenerateRequest> {
        let s = &req.sampling;
        let mut logit_bias = Vec::new();
        if let Some(bias) = &s.logit_bias {
            for (k, v) in bias {
                let tok = k.parse::<i32>().map_err(|_| {
                    Error::invalid_param(
                        "logit_bias",
                        format!("Invalid key in 'logit_bias': '{k}' is not a token id."),
                    )
                })?;
                logit_bias.push((tok, v.as_f64().unwrap_or(0.0) as f32));
            }
        }
        let temperature = s.temperature.or(self.default_temperature).unwrap_or(1.0) as f32;
        let mut g = GenerateRequest::new(prompt);
        g.add_special = add_special;
        g.sampling = SamplingParams {
            temperature,
            top_p: s.top_p.map_or(1.0, |p| p as f32),
            top_k: s.top_k.unwrap_or(0),
            min_p: s.min_p.map_or(0.0, |p| p as f32),
            seed: s.seed.map(|x| x as u64),
            presence_penalty: s.presence_penalty.unwrap_or(0.0) as f32,
            frequency_penalty: s.frequency_penalty.unwrap_or(0.0) as f32,
            repetition_penalty: s.repetition_penalty.unwrap_or(1.0) as f32,
            logit_bias,
        };
        if g.sampling.top_p <= 0.0 {
            // OpenAI allows top_p = 0 and means "only the most likely token".
            g.sampling.top_p = f32::MIN_POSITIVE;
        }
        g.max_tokens = req.max_tokens;
        g.stop.clone_from(&req.stop);
        g.n = req.n.unwrap_or(1);
        if g.n > 8 {
            return Err(Error::invalid_param(
                "n",
                "Invalid 'n': local models generate at most 8 choices.",
            ));
        }
        g.logprobs = if req.logprobs == Some(true) {
            Some(req.top_logprobs.unwrap_or(0))
        } else {
            None
        };
        Ok(g)
    }

    /// Chat: render the model's own template, generate, and report canonical events.
    pub fn chat(&self, req: &c::ChatRequest) -> Result<(ChatOutput, Vec<String>)> {
        let m = self.chat_model()?;
        refuse_unsupported(req)?;
        let (prompt, warnings) = self.chat_prompt(req)?;
        let g = self.generate_request(Prompt::Text(prompt), false, req)?;
        let generation = m.generate(g).map_err(engine_error)?;
        let events = generation_events(generation, &req.model, "chatcmpl");
        Ok((ChatOutput::Stream(events), warnings))
    }

    /// The exact prompt token count of a chat request: its messages and tools rendered with the model's
    /// own chat template (generation prompt included) and tokenized, as [`LocalProvider::chat`] would.
    /// Generation settings (sampling, reasoning) do not change the count and are not checked.
    pub fn count_chat_tokens(&self, req: &c::ChatRequest) -> Result<u64> {
        let (prompt, _) = self.chat_prompt(req)?;
        Ok(self.llm()?.tokenize(&prompt, false).map_err(engine_error)?.len() as u64)
    }

    /// The model, when it is a chat model.
    fn chat_model(&self) -> Result<&LlmModel> {
        let m = self.llm()?;
        if self.kind != ModelType::Chat {
            return Err(Error::invalid_param(
                "model",
                format!(
                    "The model `{}` is a completion model; use /v1/completions.",
                    self.public_name
                ),
            ));
        }
        Ok(m)
    }

    /// The chat prompt rendered with the model's template, and what was left out of it.
    fn chat_prompt(&self, req: &c::ChatRequest) -> Result<(String, Vec<String>)> {
        let m = self.chat_model()?;
        let mut warnings = Vec::new();
        let messages = template_messages(&req.messages, &mut warnings)?;
        let tools = if req.tools.is_empty() || matches!(req.tool_choice, Some(c::ToolChoice::None)) {
            None
        } else {
            let supports = m.chat_template().is_some_and(|t| t.contains("tools"));
            if !supports {
                return Err(Error::invalid_param(
                    "tools",
                    format!(
                        "The model `{}` has a chat template without tool support.",
                        self.public_name
                    ),
                ));
            }
            Some(Value::Array(
                req.tools
                    .iter()
                    .map(|t| {
                        json!({"type": "function", "function": {
                            "name": t.name, "description": t.description, "parameters": t.parameters}})
                    })
                    .collect(),
            ))
        };
        let prompt = m
            .render_chat(&messages, tools.as_ref(), true)
            .map_err(engine_error)?;
        Ok((prompt, warnings))
    }

    /// Completions: the prompt as it is (with the model's BOS), for base models and chat models alike.
    pub fn complete(&self, prompt: Prompt, echo: bool, req: &c::ChatRequest) -> Result<EventStream> {
        let m = self.llm()?;
        refuse_unsupported(req)?;
        let mut g = self.generate_request(prompt, true, req)?;
        g.echo = echo;
        let generation = m.generate(g).map_err(engine_error)?;
        Ok(generation_events(generation, &req.model, "cmpl"))
    }

    pub fn tokenize(&self, text: &str) -> Result<Vec<i32>> {
        self.llm()?.tokenize(text, true).map_err(engine_error)
    }

    /// Embeddings, on a blocking thread so the runtime never waits on the CPU.
    pub async fn embed(&self, inputs: Vec<EmbedInput>) -> Result<(Vec<Vec<f32>>, u64)> {
        let LocalModel::Embed(e) = &self.model else {
            return Err(Error::invalid_param(
                "model",
                format!(
                    "The model `{}` is not an embedding model; use /v1/embeddings with one.",
                    self.public_name
                ),
            ));
        };
        let e = e.clone();
        tokio::task::spawn_blocking(move || {
            let mut tokens = 0u64;
            for input in &inputs {
                tokens += match input {
                    EmbedInput::Text(t) => e.count_tokens(t).map_err(embed_error)? as u64,
                    EmbedInput::Tokens(t) => t.len() as u64 + 2,
                };
            }
            let vectors = e.embed(&inputs).map_err(embed_error)?;
            Ok((vectors, tokens))
        })
        .await
        .map_err(|e| Error::internal(format!("embedding task failed: {e}")))?
    }
}

fn embed_error(e: EngineError) -> Error {
    match e {
        EngineError::PromptTooLong { tokens, limit } => Error::invalid_param(
            "input",
            format!("This model's maximum input length is {limit} tokens; an input has {tokens} tokens."),
        )
        .with_code("context_length_exceeded"),
        other => engine_error(other),
    }
}

/// Parameters a local model cannot honour are refused, never silently ignored.
fn refuse_unsupported(req: &c::ChatRequest) -> Result<()> {
    if let Some(rf) = &req.response_format
        && !matches!(rf, c::ResponseFormat::Text)
    {
        return Err(Error::invalid_param(
            "response_format",
            "Local models do not support structured output (response_format json_object / json_schema).",
        ));
    }
    if let Some(r) = &req.reasoning
        && !r.disabled
    {
        return Err(Error::invalid_param(
            "reasoning_effort",
            "Local models do not support reasoning effort or thinking budgets.",
        ));
    }
    if let Some(k) = req.extra.keys().next() {
        return Err(Error::invalid_param(
            k.clone(),
            format!("Unsupported parameter for a local model: '{k}'."),
        ));
    }
    Ok(())
}

/// Canonical messages → the OpenAI-shaped list chat templates expect.
fn template_messages(messages: &[c::Message], warnings: &mut Vec<String>) -> Result<Value> {
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let mut text = String::new();
        let mut calls = Vec::new();
        for part in &m.content {
            match part {
                Part::Text { text: t } => text.push_str(t),
                Part::Image { .. } => {
                    return Err(Error::invalid_param(
                        format!("messages[{i}].content"),
                        "This local model does not accept images.",
                    ));
                }
                Part::ToolCall { id, name, arguments } => {
                    let args: Value =
                        serde_json::from_str(arguments).unwrap_or(Value::String(arguments.clone()));
                    calls.push(
                        json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}),
                    );
                }
                Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                } => {
                    let mut t = String::new();
                    for p in content {
                        if let Part::Text { text } = p {
                            t.push_str(text);
                        }
                    }
                    if *is_error {
                        t.insert_str(0, "Error: ");
                    }
                    out.push(json!({"role": "tool", "tool_call_id": tool_call_id, "content": t}));
                }
                Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {
                    warnings.push("reasoning from earlier turns is not shown to local models".into());
                }
            }
        }
        if m.role == Role::Tool {
            continue;
        }
        let role = match m.role {
            Role::Developer => "system",
            r => r.as_str(),
        };
        let mut msg = json!({"role": role, "content": text});
        if !calls.is_empty() {
            msg["tool_calls"] = Value::Array(calls);
        }
        if let Some(n) = &m.name {
            msg["name"] = json!(n);
        }
        if role != "user"
            || !text.is_empty()
            || m.content.iter().all(|p| !matches!(p, Part::ToolResult { .. }))
        {
            out.push(msg);
        }
    }
    warnings.dedup();
    Ok(Value::Array(out))
}

fn logprobs_json(lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .map(|lp| {
            json!({
                "token": lp.token,
                "logprob": lp.logprob,
                "bytes": lp.bytes,
                "top_logprobs": lp.top_logprobs.iter().map(|t| json!({
                    "token": t.token, "logprob": t.logprob, "bytes": t.bytes
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({"content": content})
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Engine events → canonical events: `Start`, deltas per choice, `Finish` per choice, then `Usage`.
/// Dropping the stream drops the generation, which frees its slots at once.
fn generation_events(generation: engine::llm::Generation, model: &str, prefix: &str) -> EventStream {
    let id = format!("{prefix}-{:024x}", rand::random::<u128>() >> 32);
    let start = StreamEvent::Start {
        id,
        model: model.to_string(),
        created: now_secs(),
    };
    let prompt_tokens = u64::from(generation.prompt_tokens);
    let state = (generation, 0u64, 0u64, false);
    let body = futures::stream::unfold(
        state,
        move |(mut g, mut out_tokens, mut cached, done)| async move {
            if done {
                return None;
            }
            match g.next().await {
                Some(GenEvent::Text {
                    index,
                    text,
                    logprobs,
                }) => {
                    let mut evs = Vec::with_capacity(2);
                    if !logprobs.is_empty() {
                        evs.push(Ok(StreamEvent::Logprobs {
                            choice: index,
                            logprobs: logprobs_json(&logprobs),
                        }));
                    }
                    if !text.is_empty() {
                        evs.push(Ok(StreamEvent::TextDelta { choice: index, text }));
                    }
                    Some((evs, (g, out_tokens, cached, false)))
                }
                Some(GenEvent::Finished {
                    index,
                    reason,
                    completion_tokens,
                    cached_tokens,
                }) => {
                    out_tokens += u64::from(completion_tokens);
                    cached = cached.max(u64::from(cached_tokens));
                    let reason = match reason {
                        EngineFinish::Stop => FinishReason::Stop,
                        EngineFinish::Length => FinishReason::Length,
                    };
                    Some((
                        vec![Ok(StreamEvent::Finish {
                            choice: index,
                            reason,
                            stop_sequence: None,
                        })],
                        (g, out_tokens, cached, false),
                    ))
                }
                Some(GenEvent::Error(e)) => Some((vec![Err(engine_error(e))], (g, out_tokens, cached, true))),
                None => {
                    let usage = c::Usage {
                        input_tokens: prompt_tokens,
                        output_tokens: out_tokens,
                        cache_read_tokens: cached,
                        ..Default::default()
                    };
                    Some((
                        vec![Ok(StreamEvent::Usage { usage })],
                        (g, out_tokens, cached, true),
                    ))
                }
            }
        },
    )
    .flat_map(futures::stream::iter);
    futures::stream::once(async move { Ok(start) })
        .chain(body)
        .boxed()
}

/// Where a configured local model's files are, fetching a `source` into the cache when needed.
pub fn resolve_path(
    path: Option<&str>,
    source: Option<&str>,
    home: &Path,
) -> std::result::Result<PathBuf, EngineError> {
    if let Some(p) = path {
        let p = PathBuf::from(p);
        if !p.exists() {
            return Err(EngineError::ModelNotFound { path: p });
        }
        return Ok(p);
    }
    let source = source.unwrap_or_default();
    let mut last_stage = None;
    engine::source::resolve(source, home, &mut |p| {
        if last_stage != Some(p.stage) {
            last_stage = Some(p.stage);
            let doing = match p.stage {
                engine::source::Stage::Download => "downloading",
                engine::source::Stage::Extract => "unpacking",
                engine::source::Stage::Assemble => "assembling and checking",
                engine::source::Stage::Done => "ready",
            };
            tracing::info!("model {source}: {doing} {}", p.item);
        }
    })
}
