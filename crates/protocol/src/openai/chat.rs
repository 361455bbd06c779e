//! OpenAI Chat Completions: wire types and their translation to and from the canonical model.
//!
//! Every struct keeps the fields it does not know in `extra`, so they survive a round trip.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::canonical::{self as c, FinishReason, Part, Role, StreamEvent};
use crate::error::WireError;

// ---------------------------------------------------------------------------------------------------
// Request

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatCompletionRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<String>,
    /// Sampling extensions common to vLLM, llama.cpp and Ollama's OpenAI APIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StreamOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    /// Reasoning blocks with their signatures (the convention LiteLLM's users know), so that an
    /// Anthropic upstream gets its thinking back on the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_url: Option<ImageUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ThinkingBlock {
    Thinking {
        #[serde(default)]
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    RedactedThinking {
        data: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionDef>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

// ---------------------------------------------------------------------------------------------------
// Responses

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatCompletion {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    pub model: String,
    pub choices: Vec<ResponseChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn completion_object() -> String {
    "chat.completion".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseChoice {
    pub index: u32,
    pub message: ResponseMessage,
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ResponseMessage {
    #[serde(default = "assistant_role")]
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "reasoning")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn assistant_role() -> String {
    "assistant".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
    #[serde(default)]
    pub total_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_tokens_details: Option<CompletionTokensDetails>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct PromptTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// Not OpenAI's: the tokens an Anthropic upstream wrote to its prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CompletionTokensDetails {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The counts of an OpenAI `usage` object and nothing else: what a relay settles on. It reads what
/// [`WireUsage::to_canonical`] reads, and accepts what [`WireUsage`] accepts, but skips the other
/// members instead of keeping them (`WireUsage`'s flattened maps make serde buffer every member first:
/// 4,000 instructions a `usage` under callgrind, against a few hundred here).
#[derive(Debug, Default, Deserialize)]
pub struct UsageCounts {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    /// Read only so that a bad one is refused, as `WireUsage` refuses it.
    #[serde(default)]
    #[allow(dead_code)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<PromptCounts>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionCounts>,
}

#[derive(Debug, Default, Deserialize)]
struct PromptCounts {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_tokens: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
struct CompletionCounts {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl UsageCounts {
    /// The counts of a `usage` member's JSON text; `None` when it is not an object of counts. (A
    /// derived struct would also take an array, by position; `WireUsage`, a map underneath, does not.)
    pub fn parse(text: &str) -> Option<c::Usage> {
        if !text.trim_start().starts_with('{') {
            return None;
        }
        serde_json::from_str::<UsageCounts>(text)
            .ok()
            .map(|u| u.to_canonical())
    }

    pub fn to_canonical(&self) -> c::Usage {
        let prompt = self.prompt_tokens_details.as_ref();
        canonical_usage(
            self.prompt_tokens,
            self.completion_tokens,
            prompt.and_then(|d| d.cached_tokens),
            prompt.and_then(|d| d.cache_creation_tokens),
            self.completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        )
    }
}

fn canonical_usage(
    prompt: u64,
    completion: u64,
    cached: Option<u64>,
    cache_creation: Option<u64>,
    reasoning: Option<u64>,
) -> c::Usage {
    c::Usage {
        input_tokens: prompt,
        output_tokens: completion,
        cache_read_tokens: cached.unwrap_or(0),
        cache_creation_tokens: cache_creation.unwrap_or(0),
        reasoning_tokens: reasoning.unwrap_or(0),
    }
}

impl WireUsage {
    pub fn to_canonical(&self) -> c::Usage {
        let prompt = self.prompt_tokens_details.as_ref();
        canonical_usage(
            self.prompt_tokens,
            self.completion_tokens,
            prompt.and_then(|d| d.cached_tokens),
            prompt.and_then(|d| d.cache_creation_tokens),
            self.completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        )
    }

    pub fn from_canonical(u: &c::Usage) -> WireUsage {
        WireUsage {
            prompt_tokens: u.input_tokens,
            completion_tokens: u.output_tokens,
            total_tokens: u.total(),
            prompt_tokens_details: Some(PromptTokensDetails {
                cached_tokens: Some(u.cache_read_tokens),
                cache_creation_tokens: (u.cache_creation_tokens > 0).then_some(u.cache_creation_tokens),
                extra: Map::new(),
            }),
            completion_tokens_details: Some(CompletionTokensDetails {
                reasoning_tokens: Some(u.reasoning_tokens),
                extra: Map::new(),
            }),
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatCompletionChunk {
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<WireUsage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_fingerprint: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChunkChoice {
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "reasoning")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking_blocks: Option<Vec<ThinkingBlock>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

// ---------------------------------------------------------------------------------------------------
// Finish reasons

pub fn finish_from_openai(s: &str) -> FinishReason {
    match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

// ---------------------------------------------------------------------------------------------------
// Request ⇄ canonical

/// Fields of the OpenAI request the canonical model has no slot for. They ride in `extra` and reach an
/// OpenAI-compatible upstream unchanged; another dialect must refuse or report them.
const OPENAI_ONLY: &[&str] = &[
    "store",
    "metadata",
    "service_tier",
    "modalities",
    "audio",
    "prediction",
    "web_search_options",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
];

impl ChatCompletionRequest {
    /// Translates to the canonical model. Parts the canonical model cannot carry are refused here.
    pub fn to_canonical(self) -> Result<c::ChatRequest, WireError> {
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            messages.push(message_to_canonical(m, i)?);
        }
        let mut tools = Vec::new();
        for (i, t) in self.tools.unwrap_or_default().into_iter().enumerate() {
            match (t.kind.as_str(), t.function) {
                ("function", Some(f)) => tools.push(c::Tool {
                    name: f.name,
                    description: f.description,
                    parameters: f
                        .parameters
                        .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                    strict: f.strict,
                }),
                (kind, _) => {
                    return Err(WireError::param(
                        format!("tools[{i}].type"),
                        format!("Tools of type '{kind}' can only be sent to OpenAI upstreams."),
                    ));
                }
            }
        }
        let tool_choice = match self.tool_choice {
            None | Some(Value::Null) => None,
            Some(v) => Some(tool_choice_to_canonical(&v)?),
        };
        let response_format = match self.response_format {
            None | Some(Value::Null) => None,
            Some(v) => Some(response_format_to_canonical(&v)?),
        };
        let include_usage = self
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        let mut extra = self.extra;
        if let Some(so) = self.stream_options
            && !so.extra.is_empty()
        {
            extra.insert("stream_options".into(), Value::Object(so.extra));
        }
        Ok(c::ChatRequest {
            model: self.model,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls: self.parallel_tool_calls,
            sampling: c::Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k.and_then(|k| u32::try_from(k).ok()).filter(|k| *k > 0),
                min_p: self.min_p,
                seed: self.seed,
                presence_penalty: self.presence_penalty,
                frequency_penalty: self.frequency_penalty,
                repetition_penalty: self.repetition_penalty,
                logit_bias: self.logit_bias,
            },
            max_tokens: self.max_completion_tokens.or(self.max_tokens),
            stop: self.stop.map(Stop::into_vec).unwrap_or_default(),
            n: self.n,
            logprobs: self.logprobs,
            top_logprobs: self.top_logprobs,
            stream: self.stream.unwrap_or(false),
            include_usage,
            response_format,
            reasoning: self.reasoning_effort.map(|e| c::Reasoning {
                effort: Some(e),
                ..Default::default()
            }),
            user: self.user,
            extra,
        })
    }

    /// Renders a canonical request for an OpenAI-compatible upstream. Returns what could not be carried
    /// as warnings (the caller's dialect had it; OpenAI has no place for it).
    pub fn from_canonical(req: &c::ChatRequest) -> (ChatCompletionRequest, Vec<String>) {
        let mut warnings = Vec::new();
        let mut messages = Vec::with_capacity(req.messages.len());
        for m in &req.messages {
            message_from_canonical(m, &mut messages, &mut warnings);
        }
        let tools = (!req.tools.is_empty()).then(|| {
            req.tools
                .iter()
                .map(|t| ToolDef {
                    kind: "function".into(),
                    function: Some(FunctionDef {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: Some(t.parameters.clone()),
                        strict: t.strict,
                    }),
                    extra: Map::new(),
                })
                .collect()
        });
        let tool_choice = req.tool_choice.as_ref().map(|tc| match tc {
            c::ToolChoice::Auto => Value::from("auto"),
            c::ToolChoice::None => Value::from("none"),
            c::ToolChoice::Required => Value::from("required"),
            c::ToolChoice::Tool { name } => {
                serde_json::json!({"type": "function", "function": {"name": name}})
            }
        });
        let response_format = req.response_format.as_ref().map(|rf| match rf {
            c::ResponseFormat::Text => serde_json::json!({"type": "text"}),
            c::ResponseFormat::JsonObject => serde_json::json!({"type": "json_object"}),
            c::ResponseFormat::JsonSchema { name, schema, strict } => {
                let mut js = serde_json::json!({"name": name, "schema": schema});
                if let Some(s) = strict {
                    js["strict"] = Value::Bool(*s);
                }
                serde_json::json!({"type": "json_schema", "json_schema": js})
            }
        });
        let reasoning_effort = req.reasoning.as_ref().and_then(|r| {
            if r.disabled {
                None
            } else if let Some(e) = &r.effort {
                Some(e.clone())
            } else {
                r.budget_tokens.map(|b| effort_for_budget(b).to_string())
            }
        });
        let s = &req.sampling;
        (
            ChatCompletionRequest {
                model: req.model.clone(),
                messages,
                temperature: s.temperature,
                top_p: s.top_p,
                n: req.n,
                stream: req.stream.then_some(true),
                stream_options: req.stream.then(|| StreamOptions {
                    include_usage: Some(true),
                    extra: Map::new(),
                }),
                stop: (!req.stop.is_empty()).then(|| Stop::Many(req.stop.clone())),
                max_tokens: None,
                max_completion_tokens: req.max_tokens,
                presence_penalty: s.presence_penalty,
                frequency_penalty: s.frequency_penalty,
                logit_bias: s.logit_bias.clone(),
                logprobs: req.logprobs,
                top_logprobs: req.top_logprobs,
                user: req.user.clone(),
                seed: s.seed,
                tools,
                tool_choice,
                parallel_tool_calls: req.parallel_tool_calls,
                response_format,
                reasoning_effort,
                top_k: s.top_k.map(i64::from),
                min_p: s.min_p,
                repetition_penalty: s.repetition_penalty,
                extra: Map::new(),
            },
            warnings,
        )
    }
}

/// The thinking budget an effort level stands for, and back (documented in docs/translation-matrix.md).
pub fn budget_for_effort(effort: &str) -> Option<u32> {
    match effort {
        "none" => None,
        "minimal" => Some(1024),
        "low" => Some(2048),
        "medium" => Some(8192),
        "high" => Some(24576),
        _ => Some(8192),
    }
}

pub fn effort_for_budget(budget: u32) -> &'static str {
    match budget {
        0..=1024 => "minimal",
        1025..=4096 => "low",
        4097..=16384 => "medium",
        _ => "high",
    }
}

/// Whether an OpenAI-only top-level field is present (for translators to other dialects).
pub fn openai_only_fields(extra: &Map<String, Value>) -> impl Iterator<Item = &str> {
    extra
        .keys()
        .map(String::as_str)
        .filter(|k| OPENAI_ONLY.contains(k))
}

fn content_to_parts(content: Option<Content>, path: &str) -> Result<Vec<Part>, WireError> {
    match content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![Part::Text { text: t }]),
        Some(Content::Parts(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, p) in parts.into_iter().enumerate() {
                match p.kind.as_str() {
                    "text" => out.push(Part::Text {
                        text: p.text.unwrap_or_default(),
                    }),
                    "refusal" => out.push(Part::Text {
                        text: p.refusal.unwrap_or_default(),
                    }),
                    "image_url" => {
                        let img = p.image_url.unwrap_or_default();
                        out.push(Part::Image {
                            source: c::ImageSource::from_url(&img.url),
                            detail: img.detail,
                        });
                    }
                    other => {
                        return Err(WireError::param(
                            format!("{path}[{j}].type"),
                            format!("Content parts of type '{other}' can only be sent to OpenAI upstreams."),
                        ));
                    }
                }
            }
            Ok(out)
        }
    }
}

fn message_to_canonical(m: ChatMessage, i: usize) -> Result<c::Message, WireError> {
    let path = format!("messages[{i}].content");
    let role = match m.role.as_str() {
        "system" => Role::System,
        "developer" => Role::Developer,
        "user" => Role::User,
        "assistant" => Role::Assistant,
        "tool" => Role::Tool,
        other => {
            return Err(WireError::param(
                format!("messages[{i}].role"),
                format!("Messages with role '{other}' can only be sent to OpenAI upstreams."),
            ));
        }
    };
    let mut content = Vec::new();
    match role {
        Role::Tool => {
            content.push(Part::ToolResult {
                tool_call_id: m.tool_call_id.unwrap_or_default(),
                content: content_to_parts(m.content, &path)?,
                is_error: false,
            });
        }
        Role::Assistant => {
            if let Some(blocks) = m.thinking_blocks {
                for b in blocks {
                    content.push(match b {
                        ThinkingBlock::Thinking { thinking, signature } => Part::Reasoning {
                            text: thinking,
                            signature,
                        },
                        ThinkingBlock::RedactedThinking { data } => Part::RedactedReasoning { data },
                    });
                }
            } else if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
                content.push(Part::Reasoning {
                    text: r,
                    signature: None,
                });
            }
            content.extend(content_to_parts(m.content, &path)?);
            if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
                content.push(Part::Text { text: r });
            }
            for call in m.tool_calls.unwrap_or_default() {
                content.push(Part::ToolCall {
                    id: call.id,
                    name: call.function.name,
                    arguments: call.function.arguments,
                });
            }
        }
        _ => content = content_to_parts(m.content, &path)?,
    }
    Ok(c::Message {
        role,
        content,
        name: m.name,
    })
}

fn parts_to_content(parts: &[Part]) -> Option<Content> {
    let only_text = parts.iter().all(|p| matches!(p, Part::Text { .. }));
    if only_text {
        let mut text = String::new();
        let mut any = false;
        for p in parts {
            if let Part::Text { text: t } = p {
                text.push_str(t);
                any = true;
            }
        }
        return any.then_some(Content::Text(text));
    }
    Some(Content::Parts(
        parts
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(ContentPart {
                    kind: "text".into(),
                    text: Some(text.clone()),
                    ..Default::default()
                }),
                Part::Image { source, detail } => Some(ContentPart {
                    kind: "image_url".into(),
                    image_url: Some(ImageUrl {
                        url: source.to_url(),
                        detail: detail.clone(),
                    }),
                    ..Default::default()
                }),
                _ => None,
            })
            .collect(),
    ))
}

fn message_from_canonical(m: &c::Message, out: &mut Vec<ChatMessage>, warnings: &mut Vec<String>) {
    match m.role {
        Role::Assistant => {
            let mut msg = ChatMessage {
                role: "assistant".into(),
                name: m.name.clone(),
                ..Default::default()
            };
            let mut text = String::new();
            let mut calls = Vec::new();
            let mut had_reasoning = false;
            for p in &m.content {
                match p {
                    Part::Text { text: t } => text.push_str(t),
                    Part::ToolCall { id, name, arguments } => calls.push(ToolCall {
                        id: id.clone(),
                        kind: "function".into(),
                        function: FunctionCall {
                            name: name.clone(),
                            arguments: arguments.clone(),
                        },
                    }),
                    Part::Reasoning { .. } | Part::RedactedReasoning { .. } => had_reasoning = true,
                    Part::Image { .. } | Part::ToolResult { .. } => warnings.push(
                        "an assistant message's image or tool result has no OpenAI form and was left out"
                            .into(),
                    ),
                }
            }
            if had_reasoning {
                warnings.push(
                    "reasoning blocks from earlier turns are not sent to OpenAI-compatible upstreams".into(),
                );
            }
            msg.content = (!text.is_empty() || calls.is_empty()).then_some(Content::Text(text));
            msg.tool_calls = (!calls.is_empty()).then_some(calls);
            out.push(msg);
        }
        Role::Tool | Role::User => {
            let mut rest = Vec::new();
            for p in &m.content {
                match p {
                    Part::ToolResult {
                        tool_call_id,
                        content,
                        is_error,
                    } => {
                        let mut content = parts_to_content(content).unwrap_or(Content::Text(String::new()));
                        if *is_error {
                            content = match content {
                                Content::Text(t) => Content::Text(format!("Error: {t}")),
                                Content::Parts(mut ps) => {
                                    ps.insert(
                                        0,
                                        ContentPart {
                                            kind: "text".into(),
                                            text: Some("Error:".into()),
                                            ..Default::default()
                                        },
                                    );
                                    Content::Parts(ps)
                                }
                            };
                        }
                        out.push(ChatMessage {
                            role: "tool".into(),
                            content: Some(content),
                            tool_call_id: Some(tool_call_id.clone()),
                            ..Default::default()
                        });
                    }
                    other => rest.push(other.clone()),
                }
            }
            if !rest.is_empty() || (m.role == Role::User && m.content.is_empty()) {
                out.push(ChatMessage {
                    role: "user".into(),
                    content: Some(parts_to_content(&rest).unwrap_or(Content::Text(String::new()))),
                    name: m.name.clone(),
                    ..Default::default()
                });
            }
        }
        Role::System | Role::Developer => out.push(ChatMessage {
            role: m.role.as_str().into(),
            content: Some(parts_to_content(&m.content).unwrap_or(Content::Text(String::new()))),
            name: m.name.clone(),
            ..Default::default()
        }),
    }
}

fn tool_choice_to_canonical(v: &Value) -> Result<c::ToolChoice, WireError> {
    match v {
        Value::String(s) if s == "auto" => Ok(c::ToolChoice::Auto),
        Value::String(s) if s == "none" => Ok(c::ToolChoice::None),
        Value::String(s) if s == "required" => Ok(c::ToolChoice::Required),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    WireError::param("tool_choice.function.name", "Missing required parameter.")
                })?;
            Ok(c::ToolChoice::Tool {
                name: name.to_string(),
            })
        }
        _ => Err(WireError::param(
            "tool_choice",
            "This tool_choice can only be sent to OpenAI upstreams.",
        )),
    }
}

fn response_format_to_canonical(v: &Value) -> Result<c::ResponseFormat, WireError> {
    match v.get("type").and_then(Value::as_str) {
        Some("text") => Ok(c::ResponseFormat::Text),
        Some("json_object") => Ok(c::ResponseFormat::JsonObject),
        Some("json_schema") => {
            let js = v.get("json_schema").cloned().unwrap_or_default();
            Ok(c::ResponseFormat::JsonSchema {
                name: js
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                schema: js.get("schema").cloned().unwrap_or_else(|| serde_json::json!({})),
                strict: js.get("strict").and_then(Value::as_bool),
            })
        }
        _ => Err(WireError::param(
            "response_format.type",
            "Unsupported response_format type.",
        )),
    }
}

// ---------------------------------------------------------------------------------------------------
// Response ⇄ canonical

fn assistant_message(parts: &[Part]) -> ResponseMessage {
    let mut text: Option<String> = None;
    let mut reasoning: Option<String> = None;
    let mut blocks = Vec::new();
    let mut calls = Vec::new();
    let mut signed = false;
    for p in parts {
        match p {
            Part::Text { text: t } => text.get_or_insert_with(String::new).push_str(t),
            Part::Reasoning { text: t, signature } => {
                reasoning.get_or_insert_with(String::new).push_str(t);
                signed |= signature.is_some();
                blocks.push(ThinkingBlock::Thinking {
                    thinking: t.clone(),
                    signature: signature.clone(),
                });
            }
            Part::RedactedReasoning { data } => {
                signed = true;
                blocks.push(ThinkingBlock::RedactedThinking { data: data.clone() });
            }
            Part::ToolCall { id, name, arguments } => calls.push(ToolCall {
                id: id.clone(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.clone(),
                    arguments: arguments.clone(),
                },
            }),
            Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    ResponseMessage {
        role: "assistant".into(),
        content: text,
        reasoning_content: reasoning,
        thinking_blocks: signed.then_some(blocks),
        tool_calls: (!calls.is_empty()).then_some(calls),
        refusal: None,
        extra: Map::new(),
    }
}

impl ChatCompletion {
    pub fn from_canonical(resp: &c::ChatResponse) -> ChatCompletion {
        ChatCompletion {
            id: resp.id.clone(),
            object: completion_object(),
            created: resp.created,
            model: resp.model.clone(),
            choices: resp
                .choices
                .iter()
                .map(|ch| ResponseChoice {
                    index: ch.index,
                    message: assistant_message(&ch.content),
                    finish_reason: Some(
                        ch.finish_reason
                            .unwrap_or(FinishReason::Stop)
                            .as_openai()
                            .to_string(),
                    ),
                    logprobs: ch.logprobs.clone(),
                })
                .collect(),
            usage: resp.usage.as_ref().map(WireUsage::from_canonical),
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    pub fn to_canonical(self) -> c::ChatResponse {
        c::ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self
                .choices
                .into_iter()
                .map(|ch| {
                    let m = ch.message;
                    let mut content = Vec::new();
                    if let Some(blocks) = m.thinking_blocks {
                        for b in blocks {
                            content.push(match b {
                                ThinkingBlock::Thinking { thinking, signature } => Part::Reasoning {
                                    text: thinking,
                                    signature,
                                },
                                ThinkingBlock::RedactedThinking { data } => Part::RedactedReasoning { data },
                            });
                        }
                    } else if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
                        content.push(Part::Reasoning {
                            text: r,
                            signature: None,
                        });
                    }
                    if let Some(t) = m.content.filter(|t| !t.is_empty()) {
                        content.push(Part::Text { text: t });
                    }
                    if let Some(r) = m.refusal.filter(|r| !r.is_empty()) {
                        content.push(Part::Text { text: r });
                    }
                    for call in m.tool_calls.unwrap_or_default() {
                        content.push(Part::ToolCall {
                            id: call.id,
                            name: call.function.name,
                            arguments: call.function.arguments,
                        });
                    }
                    c::Choice {
                        index: ch.index,
                        content,
                        finish_reason: ch.finish_reason.as_deref().map(finish_from_openai),
                        logprobs: ch.logprobs.filter(|l| !l.is_null()),
                    }
                })
                .collect(),
            usage: self.usage.as_ref().map(WireUsage::to_canonical),
            stop_sequence: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams

/// Canonical events → OpenAI `chat.completion.chunk` objects.
#[derive(Debug)]
pub struct ChunkEncoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    /// Choices that have had their `role` chunk.
    started: Vec<u32>,
}

impl ChunkEncoder {
    /// `model` is the public name the client asked for; it replaces whatever the provider says.
    /// The model name every chunk carries.
    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn new(model: impl Into<String>, include_usage: bool) -> ChunkEncoder {
        ChunkEncoder {
            id: String::new(),
            model: model.into(),
            created: 0,
            include_usage,
            started: Vec::new(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    fn chunk(&self, choices: Vec<ChunkChoice>, usage: Option<WireUsage>) -> ChatCompletionChunk {
        ChatCompletionChunk {
            id: self.id.clone(),
            object: chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            system_fingerprint: None,
            extra: Map::new(),
        }
    }

    fn delta_chunk(&mut self, choice: u32, mut delta: Delta, out: &mut Vec<ChatCompletionChunk>) {
        if !self.started.contains(&choice) {
            self.started.push(choice);
            delta.role = Some("assistant".into());
        }
        out.push(self.chunk(
            vec![ChunkChoice {
                index: choice,
                delta,
                finish_reason: None,
                logprobs: None,
            }],
            None,
        ));
    }

    /// Appends the chunks one event becomes (often one, sometimes none).
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<ChatCompletionChunk>) {
        match ev {
            StreamEvent::Start {
                id,
                model: _,
                created,
            } => {
                self.id.clone_from(id);
                self.created = *created;
                self.delta_chunk(
                    0,
                    Delta {
                        content: Some(String::new()),
                        ..Default::default()
                    },
                    out,
                );
            }
            StreamEvent::TextDelta { choice, text } => self.delta_chunk(
                *choice,
                Delta {
                    content: Some(text.clone()),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::ReasoningDelta { choice, text } => self.delta_chunk(
                *choice,
                Delta {
                    reasoning_content: Some(text.clone()),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::ReasoningSignature { choice, signature } => self.delta_chunk(
                *choice,
                Delta {
                    thinking_blocks: Some(vec![ThinkingBlock::Thinking {
                        thinking: String::new(),
                        signature: Some(signature.clone()),
                    }]),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::RedactedReasoning { choice, data } => self.delta_chunk(
                *choice,
                Delta {
                    thinking_blocks: Some(vec![ThinkingBlock::RedactedThinking { data: data.clone() }]),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::ToolCallStart {
                choice,
                index,
                id,
                name,
            } => self.delta_chunk(
                *choice,
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: *index,
                        id: Some(id.clone()),
                        kind: Some("function".into()),
                        function: Some(FunctionCallDelta {
                            name: Some(name.clone()),
                            arguments: Some(String::new()),
                        }),
                    }]),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => self.delta_chunk(
                *choice,
                Delta {
                    tool_calls: Some(vec![ToolCallDelta {
                        index: *index,
                        id: None,
                        kind: None,
                        function: Some(FunctionCallDelta {
                            name: None,
                            arguments: Some(arguments.clone()),
                        }),
                    }]),
                    ..Default::default()
                },
                out,
            ),
            StreamEvent::Logprobs { choice, logprobs } => {
                let mut chunk = self.chunk(
                    vec![ChunkChoice {
                        index: *choice,
                        delta: Delta::default(),
                        finish_reason: None,
                        logprobs: Some(logprobs.clone()),
                    }],
                    None,
                );
                if !self.started.contains(choice) {
                    self.started.push(*choice);
                    chunk.choices[0].delta.role = Some("assistant".into());
                }
                out.push(chunk);
            }
            StreamEvent::Finish { choice, reason, .. } => out.push(self.chunk(
                vec![ChunkChoice {
                    index: *choice,
                    delta: Delta::default(),
                    finish_reason: Some(reason.as_openai().to_string()),
                    logprobs: None,
                }],
                None,
            )),
            StreamEvent::Usage { usage } => {
                if self.include_usage {
                    out.push(self.chunk(Vec::new(), Some(WireUsage::from_canonical(usage))));
                }
            }
        }
    }
}

/// OpenAI chunks → canonical events. Tool-call indices are renumbered per choice in order of first
/// appearance, so the canonical stream never has gaps even if an upstream's indices do.
#[derive(Debug, Default)]
pub struct ChunkDecoder {
    started: bool,
    /// (choice, wire index) → canonical index, in order of appearance.
    calls: Vec<(u32, u32)>,
}

impl ChunkDecoder {
    pub fn new() -> ChunkDecoder {
        ChunkDecoder::default()
    }

    pub fn decode(&mut self, chunk: ChatCompletionChunk, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.clone(),
                model: chunk.model.clone(),
                created: chunk.created,
            });
        }
        for ch in chunk.choices {
            let choice = ch.index;
            let d = ch.delta;
            if let Some(r) = d.reasoning_content.filter(|r| !r.is_empty()) {
                out.push(StreamEvent::ReasoningDelta { choice, text: r });
            }
            for b in d.thinking_blocks.unwrap_or_default() {
                match b {
                    ThinkingBlock::Thinking { thinking, signature } => {
                        if !thinking.is_empty() {
                            out.push(StreamEvent::ReasoningDelta {
                                choice,
                                text: thinking,
                            });
                        }
                        if let Some(signature) = signature {
                            out.push(StreamEvent::ReasoningSignature { choice, signature });
                        }
                    }
                    ThinkingBlock::RedactedThinking { data } => {
                        out.push(StreamEvent::RedactedReasoning { choice, data })
                    }
                }
            }
            if let Some(t) = d.content.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta { choice, text: t });
            }
            if let Some(t) = d.refusal.filter(|t| !t.is_empty()) {
                out.push(StreamEvent::TextDelta { choice, text: t });
            }
            for tc in d.tool_calls.unwrap_or_default() {
                let f = tc.function.unwrap_or_default();
                let known = self
                    .calls
                    .iter()
                    .filter(|(ch, _)| *ch == choice)
                    .position(|(_, w)| *w == tc.index);
                let index = match known {
                    Some(i) => i as u32,
                    None => {
                        let i = self.calls.iter().filter(|(ch, _)| *ch == choice).count() as u32;
                        self.calls.push((choice, tc.index));
                        out.push(StreamEvent::ToolCallStart {
                            choice,
                            index: i,
                            id: tc.id.unwrap_or_default(),
                            name: f.name.clone().unwrap_or_default(),
                        });
                        i
                    }
                };
                if let Some(args) = f.arguments.filter(|a| !a.is_empty()) {
                    out.push(StreamEvent::ToolCallDelta {
                        choice,
                        index,
                        arguments: args,
                    });
                }
            }
            if let Some(lp) = ch.logprobs.filter(|l| !l.is_null()) {
                out.push(StreamEvent::Logprobs { choice, logprobs: lp });
            }
            if let Some(fr) = ch.finish_reason {
                out.push(StreamEvent::Finish {
                    choice,
                    reason: finish_from_openai(&fr),
                    stop_sequence: None,
                });
            }
        }
        if let Some(u) = chunk.usage {
            out.push(StreamEvent::Usage {
                usage: u.to_canonical(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lean usage reader gives what the full one gives, and refuses what it refuses.
    #[test]
    fn usage_counts_read_what_wire_usage_reads() {
        let cases = [
            r#"{"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}"#,
            r#"{"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "prompt_tokens_details": {"cached_tokens": 2, "audio_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 1, "accepted_prediction_tokens": 0}, "cost": {"usd": 1}}"#,
            r#"{"prompt_tokens_details": {"cache_creation_tokens": 9}, "completion_tokens_details": null}"#,
            r#"{"prompt_tokens_details": null, "queue_time": 0.5}"#,
            r#"{}"#,
            r#"{"prompt_tokens": null}"#,
            r#"{"prompt_tokens": -1}"#,
            r#"{"prompt_tokens": "3"}"#,
            r#"{"prompt_tokens_details": {"cached_tokens": "x"}}"#,
            r#"[1, 2]"#,
            r#" {"prompt_tokens": 5}"#,
            r#"null"#,
        ];
        for case in cases {
            let full = serde_json::from_str::<WireUsage>(case)
                .map(|u| u.to_canonical())
                .ok();
            let lean = UsageCounts::parse(case);
            assert_eq!(lean, full, "{case}");
        }
        let u = UsageCounts::parse(cases[1]).unwrap();
        assert_eq!(
            (
                u.input_tokens,
                u.output_tokens,
                u.cache_read_tokens,
                u.reasoning_tokens
            ),
            (3, 4, 2, 1)
        );
    }
    use crate::canonical::{ChatResponse, Choice, StreamAccumulator, Usage};
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let body = json!({
            "model": "m",
            "messages": [{"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}],
            "temperature": 0.5,
            "some_vendor_knob": [1, 2, 3]
        });
        let req: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(req.extra["some_vendor_knob"], json!([1, 2, 3]));
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    #[test]
    fn tool_loop_translates_to_canonical_and_back() {
        let req: ChatCompletionRequest = serde_json::from_value(json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
            ],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "stop": "END",
            "max_tokens": 7
        }))
        .unwrap();
        let canon = req.to_canonical().unwrap();
        assert_eq!(canon.messages.len(), 4);
        assert_eq!(canon.tool_choice, Some(c::ToolChoice::Required));
        assert_eq!(canon.max_tokens, Some(7));
        assert_eq!(canon.stop, vec!["END".to_string()]);
        assert!(matches!(
            canon.messages[1].content[1],
            Part::Image {
                source: c::ImageSource::Base64 { .. },
                ..
            }
        ));
        assert!(
            matches!(&canon.messages[3].content[0], Part::ToolResult { tool_call_id, .. } if tool_call_id == "c1")
        );
        let (back, warnings) = ChatCompletionRequest::from_canonical(&canon);
        assert!(warnings.is_empty());
        assert_eq!(
            back.messages[2].tool_calls.as_ref().unwrap()[0].function.name,
            "get_weather"
        );
        assert_eq!(back.messages[3].role, "tool");
        assert_eq!(back.messages[3].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(back.tool_choice, Some(json!("required")));
    }

    fn arb_response() -> impl Strategy<Value = ChatResponse> {
        let part = prop_oneof![
            "[a-zA-Z ]{1,12}".prop_map(|t| Part::Text { text: t }),
            ("[a-z]{1,6}", "[a-z]{1,6}", "\\{\"[a-z]{1,4}\":[0-9]{1,3}\\}")
                .prop_map(|(id, name, arguments)| Part::ToolCall { id, name, arguments }),
            ("[a-z ]{1,12}", proptest::option::of("[A-Za-z0-9]{4,12}"))
                .prop_map(|(text, signature)| Part::Reasoning { text, signature }),
        ];
        (
            proptest::collection::vec(part, 0..6),
            prop_oneof![
                Just(FinishReason::Stop),
                Just(FinishReason::Length),
                Just(FinishReason::ToolCalls)
            ],
            0u64..1000,
            0u64..1000,
        )
            .prop_map(|(parts, reason, input, output)| {
                // The OpenAI message form orders reasoning, then text, then tool calls, and merges
                // adjacent pieces of the same kind: normalise the generated parts the same way.
                let mut reasoning: Vec<Part> = Vec::new();
                let mut text = String::new();
                let mut calls = Vec::new();
                for p in parts {
                    match p {
                        Part::Text { text: t } => text.push_str(&t),
                        Part::Reasoning { text: t, signature } => {
                            if let Some(Part::Reasoning {
                                text: last,
                                signature: last_sig @ None,
                            }) = reasoning.last_mut()
                            {
                                last.push_str(&t);
                                *last_sig = signature;
                            } else {
                                reasoning.push(Part::Reasoning { text: t, signature });
                            }
                        }
                        call => calls.push(call),
                    }
                }
                let mut content = reasoning;
                if !text.is_empty() {
                    content.push(Part::Text { text });
                }
                content.extend(calls);
                ChatResponse {
                    id: "chatcmpl-1".into(),
                    model: "m".into(),
                    created: 7,
                    choices: vec![Choice {
                        index: 0,
                        content,
                        finish_reason: Some(reason),
                        logprobs: None,
                    }],
                    usage: Some(Usage {
                        input_tokens: input,
                        output_tokens: output,
                        ..Default::default()
                    }),
                    stop_sequence: None,
                }
            })
    }

    proptest! {
        #[test]
        fn response_survives_openai_json(resp in arb_response()) {
            let wire = ChatCompletion::from_canonical(&resp);
            let json = serde_json::to_vec(&wire).unwrap();
            let parsed: ChatCompletion = serde_json::from_slice(&json).unwrap();
            prop_assert_eq!(parsed.to_canonical(), resp);
        }

        #[test]
        fn response_survives_openai_stream(resp in arb_response()) {
            let mut enc = ChunkEncoder::new("m", true);
            let mut chunks = Vec::new();
            for ev in c::response_to_events(&resp) {
                enc.encode(&ev, &mut chunks);
            }
            let mut dec = ChunkDecoder::new();
            let mut acc = StreamAccumulator::new();
            for chunk in chunks {
                let text = serde_json::to_string(&chunk).unwrap();
                let mut evs = Vec::new();
                dec.decode(serde_json::from_str(&text).unwrap(), &mut evs);
                for e in &evs { acc.push(e); }
            }
            prop_assert_eq!(acc.finish(), resp);
        }
    }
}
