//! Messages request and response ⇄ the canonical model. See the module docs of [`crate::anthropic`] for
//! the translation table and the decisions behind it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::types::*;
use crate::canonical::{self as c, FinishReason, Part, Role};
use crate::error::WireError;
use crate::openai::chat::budget_for_effort;

/// `max_tokens` when the canonical request has none (Anthropic requires it); a thinking budget is added
/// on top so that the answer keeps this much room.
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// Anthropic's smallest `thinking.budget_tokens`.
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// The key of canonical `extra` under which an Anthropic request keeps what the canonical model has no
/// slot for (see [`Carry`]), so that the same-dialect path gives it back unchanged.
pub const CARRY_KEY: &str = "anthropic";

// ---------------------------------------------------------------------------------------------------
// What rides along in canonical `extra`

/// What an Anthropic request had that canonical types cannot hold, with where it stood. Messages and
/// parts are numbered as in the canonical request (the system prompt, when present, is message 0).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Carry {
    /// Top-level fields (`service_tier`, `container`, `mcp_servers`, top-level `cache_control`,
    /// adaptive `thinking`, the rest of `output_config`, unknown fields, …), sent back as they came.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// Unknown fields of messages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_fields: Vec<MessageFields>,
    /// `cache_control`, `citations`, `caller`, … of blocks that became canonical parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub part_fields: Vec<PartFields>,
    /// Blocks with no canonical part (`document`, `search_result`, server tool blocks, file images,
    /// `mid_conv_system`, tool results holding documents, …) and their index in their message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque_blocks: Vec<OpaqueBlock>,
    /// `cache_control`, `defer_loading`, `input_examples`, … of client tools (by canonical tool index).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_fields: Vec<ToolFields>,
    /// Server tools (`web_search_20250305`, …) and their index in `tools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque_tools: Vec<OpaqueTool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageFields {
    pub message: usize,
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartFields {
    pub message: usize,
    pub part: usize,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Map<String, Value>,
    /// For a `tool_result`: the fields of each block of its content (empty maps where none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nested: Vec<Map<String, Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpaqueBlock {
    pub message: usize,
    pub index: usize,
    pub block: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolFields {
    pub tool: usize,
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpaqueTool {
    pub index: usize,
    pub tool: Value,
}

impl Carry {
    pub fn is_empty(&self) -> bool {
        *self == Carry::default()
    }

    /// Reads the carry of a canonical request (empty when it came from another dialect).
    pub fn of(extra: &Map<String, Value>) -> Carry {
        extra
            .get(CARRY_KEY)
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default()
    }

    /// What another dialect would lose, one line each, for its translator's warnings.
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .fields
            .keys()
            .map(|k| format!("Anthropic field '{k}'"))
            .collect();
        let cached = self
            .part_fields
            .iter()
            .filter(|p| p.fields.contains_key("cache_control"))
            .count()
            + self
                .tool_fields
                .iter()
                .filter(|t| t.fields.contains_key("cache_control"))
                .count();
        if cached > 0 {
            out.push(format!("cache_control on {cached} blocks or tools"));
        }
        for b in &self.opaque_blocks {
            let kind = b.block.get("type").and_then(Value::as_str).unwrap_or("unknown");
            out.push(format!("a '{kind}' block in message {}", b.message));
        }
        for t in &self.opaque_tools {
            let kind = t.tool.get("type").and_then(Value::as_str).unwrap_or("unknown");
            out.push(format!("server tool '{kind}'"));
        }
        out
    }
}

/// Warnings that an Anthropic request's carried fields cannot reach another dialect (for the OpenAI and
/// other translators to add to theirs).
pub fn carried_fields(extra: &Map<String, Value>) -> Vec<String> {
    Carry::of(extra).describe()
}

/// A block's own fields besides the ones the canonical part holds.
fn fields_of(cache_control: Option<CacheControl>, extra: Map<String, Value>) -> Map<String, Value> {
    let mut fields = Map::new();
    if let Some(cc) = cache_control
        && let Ok(v) = serde_json::to_value(cc)
    {
        fields.insert("cache_control".into(), v);
    }
    fields.extend(extra);
    fields
}

/// Puts carried fields back on a block: `cache_control` into its slot, the rest into `extra`.
fn apply_fields(block: &mut ContentBlock, fields: &Map<String, Value>) {
    let (slot, extra) = match block {
        ContentBlock::Text(b) => (Some(&mut b.cache_control), &mut b.extra),
        ContentBlock::Image(b) => (Some(&mut b.cache_control), &mut b.extra),
        ContentBlock::ToolUse(b) => (Some(&mut b.cache_control), &mut b.extra),
        ContentBlock::ToolResult(b) => (Some(&mut b.cache_control), &mut b.extra),
        ContentBlock::Thinking(b) => (None, &mut b.extra),
        ContentBlock::RedactedThinking(b) => (None, &mut b.extra),
        ContentBlock::Other(m) => (None, m),
    };
    apply_into(slot, extra, fields);
}

fn apply_into(
    mut slot: Option<&mut Option<CacheControl>>,
    extra: &mut Map<String, Value>,
    fields: &Map<String, Value>,
) {
    for (k, v) in fields {
        if k == "cache_control"
            && let Some(slot) = slot.as_deref_mut()
            && let Ok(cc) = serde_json::from_value::<CacheControl>(v.clone())
        {
            *slot = Some(cc);
            continue;
        }
        extra.insert(k.clone(), v.clone());
    }
}

// ---------------------------------------------------------------------------------------------------
// Request → canonical

/// Tool arguments as text: the `input` object rendered compactly. A string `input` (which only this
/// crate produces, for arguments that were not JSON) is the raw text itself.
fn arguments_of(input: &Value) -> String {
    match input {
        Value::String(s) => s.clone(),
        Value::Null => "{}".to_string(),
        other => other.to_string(),
    }
}

/// The canonical content of a `tool_result`, with the fields of its blocks; `None` when a block has no
/// canonical form (documents, search results, …), in which case the whole block travels opaque.
/// Parts of a tool result, and the carried fields of each of its blocks.
type ResultParts = (Vec<Part>, Vec<Map<String, Value>>);

fn tool_result_to_parts(content: Option<&ToolResultContent>) -> Option<ResultParts> {
    match content {
        None => Some((Vec::new(), Vec::new())),
        Some(ToolResultContent::Text(t)) => Some((
            if t.is_empty() {
                Vec::new()
            } else {
                vec![Part::text(t.clone())]
            },
            Vec::new(),
        )),
        Some(ToolResultContent::Blocks(blocks)) => {
            let mut parts = Vec::with_capacity(blocks.len());
            let mut nested = Vec::with_capacity(blocks.len());
            for b in blocks {
                match b {
                    ContentBlock::Text(t) => {
                        parts.push(Part::text(t.text.clone()));
                        nested.push(fields_of(t.cache_control.clone(), t.extra.clone()));
                    }
                    ContentBlock::Image(img) => {
                        let source = match &img.source {
                            ImageSource::Base64 { media_type, data } => c::ImageSource::Base64 {
                                media_type: media_type.clone(),
                                data: data.clone(),
                            },
                            ImageSource::Url { url } => c::ImageSource::Url { url: url.clone() },
                            ImageSource::Other(_) => return None,
                        };
                        parts.push(Part::Image { source, detail: None });
                        nested.push(fields_of(img.cache_control.clone(), img.extra.clone()));
                    }
                    _ => return None,
                }
            }
            if nested.iter().all(Map::is_empty) {
                nested.clear();
            }
            Some((parts, nested))
        }
    }
}

struct ToCanonical {
    carry: Carry,
}

impl ToCanonical {
    fn note(
        &mut self,
        message: usize,
        part: usize,
        fields: Map<String, Value>,
        nested: Vec<Map<String, Value>>,
    ) {
        if !fields.is_empty() || !nested.is_empty() {
            self.carry.part_fields.push(PartFields {
                message,
                part,
                fields,
                nested,
            });
        }
    }

    fn opaque(&mut self, message: usize, index: usize, block: ContentBlock) {
        let block = serde_json::to_value(block).unwrap_or(Value::Null);
        self.carry.opaque_blocks.push(OpaqueBlock {
            message,
            index,
            block,
        });
    }

    /// One block of message `k` (at index `j` of its content) → a part, or into the carry.
    fn block(&mut self, b: ContentBlock, k: usize, j: usize, parts: &mut Vec<Part>) {
        let p = parts.len();
        match b {
            ContentBlock::Text(t) => {
                self.note(k, p, fields_of(t.cache_control, t.extra), Vec::new());
                parts.push(Part::Text { text: t.text });
            }
            ContentBlock::Image(img) => {
                let source = match img.source {
                    ImageSource::Base64 { media_type, data } => c::ImageSource::Base64 { media_type, data },
                    ImageSource::Url { url } => c::ImageSource::Url { url },
                    source @ ImageSource::Other(_) => {
                        let block = ContentBlock::Image(ImageBlock {
                            source,
                            cache_control: img.cache_control,
                            extra: img.extra,
                        });
                        return self.opaque(k, j, block);
                    }
                };
                self.note(k, p, fields_of(img.cache_control, img.extra), Vec::new());
                parts.push(Part::Image { source, detail: None });
            }
            ContentBlock::ToolUse(tu) => {
                let arguments = arguments_of(&tu.input);
                self.note(k, p, fields_of(tu.cache_control, tu.extra), Vec::new());
                parts.push(Part::ToolCall {
                    id: tu.id,
                    name: tu.name,
                    arguments,
                });
            }
            ContentBlock::ToolResult(tr) => match tool_result_to_parts(tr.content.as_ref()) {
                Some((content, nested)) => {
                    self.note(k, p, fields_of(tr.cache_control, tr.extra), nested);
                    parts.push(Part::ToolResult {
                        tool_call_id: tr.tool_use_id,
                        content,
                        is_error: tr.is_error.unwrap_or(false),
                    });
                }
                None => self.opaque(k, j, ContentBlock::ToolResult(tr)),
            },
            ContentBlock::Thinking(th) => {
                self.note(k, p, th.extra, Vec::new());
                let signature = (!th.signature.is_empty()).then_some(th.signature);
                parts.push(Part::Reasoning {
                    text: th.thinking,
                    signature,
                });
            }
            ContentBlock::RedactedThinking(r) => {
                self.note(k, p, r.extra, Vec::new());
                parts.push(Part::RedactedReasoning { data: r.data });
            }
            other @ ContentBlock::Other(_) => self.opaque(k, j, other),
        }
    }
}

/// The thinking budget of an effort level: `openai::chat::budget_for_effort`, plus `xhigh` (and
/// Anthropic's `max`), which it would read as `medium`.
fn budget_for(effort: &str) -> Option<u32> {
    match effort {
        "xhigh" | "max" => Some(XHIGH_THINKING_BUDGET),
        other => budget_for_effort(other),
    }
}

/// The budget of OpenAI's `xhigh` effort.
pub const XHIGH_THINKING_BUDGET: u32 = 32768;

/// Anthropic's effort levels → OpenAI's (`max` has no OpenAI level; `xhigh` is OpenAI's highest).
fn effort_to_openai(effort: &str) -> String {
    match effort {
        "max" => "xhigh".to_string(),
        other => other.to_string(),
    }
}

impl MessagesRequest {
    /// Translates to the canonical model. Nothing is refused: what canonical types cannot hold rides in
    /// `extra["anthropic"]` ([`Carry`]) for the same-dialect path, and other dialects' translators list
    /// it as warnings ([`carried_fields`]).
    pub fn to_canonical(self) -> Result<c::ChatRequest, WireError> {
        let mut tc = ToCanonical {
            carry: Carry::default(),
        };
        let mut messages = Vec::with_capacity(self.messages.len() + 1);
        if let Some(system) = self.system {
            let mut parts = Vec::new();
            match system {
                System::Text(t) => {
                    if !t.is_empty() {
                        parts.push(Part::Text { text: t });
                    }
                }
                System::Blocks(blocks) => {
                    for (j, b) in blocks.into_iter().enumerate() {
                        match b {
                            ContentBlock::Text(t) => {
                                tc.note(0, parts.len(), fields_of(t.cache_control, t.extra), Vec::new());
                                parts.push(Part::Text { text: t.text });
                            }
                            other => {
                                return Err(WireError::param(
                                    format!("system[{j}].type"),
                                    format!(
                                        "system.{j}.type: Input should be 'text', not '{}'.",
                                        other.kind()
                                    ),
                                ));
                            }
                        }
                    }
                }
            }
            if !parts.is_empty() {
                messages.push(c::Message::new(Role::System, parts));
            } else {
                tc.carry.part_fields.clear();
            }
        }
        for (i, m) in self.messages.into_iter().enumerate() {
            let k = messages.len();
            let role = match m.role.as_str() {
                "user" => Role::User,
                "assistant" => Role::Assistant,
                "system" => Role::System,
                other => {
                    return Err(WireError::param(
                        format!("messages[{i}].role"),
                        format!(
                            "messages.{i}.role: Input should be 'user', 'assistant' or 'system', not '{other}'."
                        ),
                    ));
                }
            };
            if !m.extra.is_empty() {
                tc.carry.message_fields.push(MessageFields {
                    message: k,
                    fields: m.extra,
                });
            }
            let mut parts = Vec::new();
            match m.content {
                MessageContent::Text(t) => {
                    if !t.is_empty() {
                        parts.push(Part::Text { text: t });
                    }
                }
                MessageContent::Blocks(blocks) => {
                    for (j, b) in blocks.into_iter().enumerate() {
                        tc.block(b, k, j, &mut parts);
                    }
                }
            }
            messages.push(c::Message::new(role, parts));
        }

        let mut tools = Vec::new();
        for (i, t) in self.tools.unwrap_or_default().into_iter().enumerate() {
            if t.is_client_tool() {
                let mut fields = fields_of(t.cache_control, t.extra);
                if let Some(kind) = t.kind {
                    fields.insert("type".into(), Value::String(kind));
                }
                if !fields.is_empty() {
                    tc.carry.tool_fields.push(ToolFields {
                        tool: tools.len(),
                        fields,
                    });
                }
                tools.push(c::Tool {
                    name: t.name,
                    description: t.description,
                    parameters: t.input_schema.unwrap_or_else(|| json!({"type": "object"})),
                    strict: t.strict,
                });
            } else {
                let tool = serde_json::to_value(t).unwrap_or(Value::Null);
                tc.carry.opaque_tools.push(OpaqueTool { index: i, tool });
            }
        }

        let (tool_choice, no_parallel) = match self.tool_choice {
            None => (None, None),
            Some(ToolChoice::Auto {
                disable_parallel_tool_use,
            }) => (Some(c::ToolChoice::Auto), disable_parallel_tool_use),
            Some(ToolChoice::Any {
                disable_parallel_tool_use,
            }) => (Some(c::ToolChoice::Required), disable_parallel_tool_use),
            Some(ToolChoice::Tool {
                name,
                disable_parallel_tool_use,
            }) => (Some(c::ToolChoice::Tool { name }), disable_parallel_tool_use),
            Some(ToolChoice::None) => (Some(c::ToolChoice::None), None),
            Some(ToolChoice::Other(raw)) => {
                tc.carry.fields.insert("tool_choice".into(), Value::Object(raw));
                (None, None)
            }
        };

        let mut response_format = None;
        let mut effort = None;
        if let Some(oc) = self.output_config {
            effort.clone_from(&oc.effort);
            let mut rest = oc.extra;
            if let Some(e) = oc.effort {
                rest.insert("effort".into(), Value::String(e));
            }
            match oc.format {
                Some(f)
                    if f.get("type").and_then(Value::as_str) == Some("json_schema")
                        && f.get("schema").is_some_and(Value::is_object) =>
                {
                    let schema = f.get("schema").cloned().unwrap_or_default();
                    response_format = Some(c::ResponseFormat::JsonSchema {
                        name: "response".into(),
                        schema,
                        strict: None,
                    });
                }
                Some(f) => {
                    rest.insert("format".into(), f);
                }
                None => {}
            }
            if !rest.is_empty() {
                tc.carry
                    .fields
                    .insert("output_config".into(), Value::Object(rest));
            }
        }

        let reasoning = match self.thinking {
            None => None,
            Some(Thinking::Enabled {
                budget_tokens,
                display,
            }) => {
                if let Some(display) = display {
                    tc.carry.fields.insert(
                        "thinking".into(),
                        json!({"type": "enabled", "budget_tokens": budget_tokens, "display": display}),
                    );
                }
                Some(c::Reasoning {
                    budget_tokens: Some(budget_tokens),
                    ..Default::default()
                })
            }
            Some(Thinking::Disabled) => Some(c::Reasoning {
                disabled: true,
                ..Default::default()
            }),
            Some(adaptive @ Thinking::Adaptive { .. }) => {
                tc.carry.fields.insert(
                    "thinking".into(),
                    serde_json::to_value(adaptive).unwrap_or_default(),
                );
                // Adaptive thinking's effort defaults to `high`.
                let effort = effort_to_openai(effort.as_deref().unwrap_or("high"));
                Some(c::Reasoning {
                    effort: Some(effort),
                    ..Default::default()
                })
            }
            Some(Thinking::Other(raw)) => {
                tc.carry.fields.insert("thinking".into(), Value::Object(raw));
                None
            }
        };

        let user = match self.metadata {
            Some(md) => {
                if !md.extra.is_empty() {
                    tc.carry.fields.insert("metadata".into(), Value::Object(md.extra));
                }
                md.user_id
            }
            None => None,
        };
        if let Some(tier) = self.service_tier {
            tc.carry.fields.insert("service_tier".into(), Value::String(tier));
        }
        tc.carry.fields.extend(self.extra);

        let mut extra = Map::new();
        if !tc.carry.is_empty() {
            extra.insert(
                CARRY_KEY.into(),
                serde_json::to_value(&tc.carry).unwrap_or_default(),
            );
        }
        let stream = self.stream.unwrap_or(false);
        Ok(c::ChatRequest {
            model: self.model,
            messages,
            tools,
            tool_choice,
            parallel_tool_calls: (no_parallel == Some(true)).then_some(false),
            sampling: c::Sampling {
                temperature: self.temperature,
                top_p: self.top_p,
                top_k: self.top_k,
                ..Default::default()
            },
            max_tokens: Some(self.max_tokens),
            stop: self.stop_sequences.unwrap_or_default(),
            n: None,
            logprobs: None,
            top_logprobs: None,
            stream,
            include_usage: stream,
            response_format,
            reasoning,
            user,
            extra,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Canonical → request

/// Warnings without repeats.
#[derive(Default)]
struct Warnings(Vec<String>);

impl Warnings {
    fn push(&mut self, w: impl Into<String>) {
        let w = w.into();
        if !self.0.contains(&w) {
            self.0.push(w);
        }
    }
}

/// What to do with a top-level field another dialect left in canonical `extra`.
enum Foreign {
    Refuse(String),
    Warn(String),
    Ignore,
}

/// The per-field decisions of the module docs' table.
fn foreign_field(key: &str, value: &Value, has_user: bool) -> Foreign {
    match key {
        "audio" => Foreign::Refuse("Audio output ('audio') is not available from Anthropic models.".into()),
        "modalities" => {
            let audio = value
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x.as_str() == Some("audio")));
            if audio {
                Foreign::Refuse(
                    "Audio output ('modalities': ['audio']) is not available from Anthropic models.".into(),
                )
            } else {
                Foreign::Ignore
            }
        }
        "web_search_options" => Foreign::Refuse(
            "'web_search_options' cannot be sent to Anthropic; declare Anthropic's web search tool instead."
                .into(),
        ),
        "safety_identifier" if !has_user => Foreign::Ignore,
        "stream_options" => Foreign::Ignore,
        other => Foreign::Warn(format!("'{other}' has no Anthropic form and was not sent")),
    }
}

/// `arguments` text → a `tool_use` input object.
fn input_of(arguments: &str, warnings: &mut Warnings) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        Ok(other) => {
            warnings.push("tool call arguments that are not a JSON object were wrapped as {\"value\": …}");
            json!({"value": other})
        }
        Err(_) => {
            warnings.push("tool call arguments that are not valid JSON were wrapped as {\"value\": \"…\"}");
            json!({"value": arguments})
        }
    }
}

fn image_block(source: &c::ImageSource) -> ContentBlock {
    let source = match source {
        c::ImageSource::Base64 { media_type, data } => ImageSource::Base64 {
            media_type: media_type.clone(),
            data: data.clone(),
        },
        c::ImageSource::Url { url } => ImageSource::Url { url: url.clone() },
    };
    ContentBlock::Image(ImageBlock {
        source,
        cache_control: None,
        extra: Map::new(),
    })
}

fn tool_result_content(parts: &[Part], warnings: &mut Warnings) -> Option<ToolResultContent> {
    match parts {
        [] => None,
        [Part::Text { text }] => Some(ToolResultContent::Text(text.clone())),
        _ => {
            let mut blocks = Vec::with_capacity(parts.len());
            for p in parts {
                match p {
                    Part::Text { text } if !text.is_empty() => blocks.push(ContentBlock::text(text.clone())),
                    Part::Text { .. } => {}
                    Part::Image { source, .. } => blocks.push(image_block(source)),
                    _ => warnings.push("a tool result's tool call, reasoning or nested result was left out"),
                }
            }
            Some(ToolResultContent::Blocks(blocks))
        }
    }
}

/// One canonical part of a dialogue message → a block, or `None` (with a warning where it mattered).
fn part_to_block(part: &Part, role: Role, warnings: &mut Warnings) -> Option<ContentBlock> {
    let assistant = role == Role::Assistant;
    match part {
        Part::Text { text } => (!text.is_empty()).then(|| ContentBlock::text(text.clone())),
        Part::Image { source, detail } => {
            if assistant {
                warnings.push("images in assistant messages have no Anthropic form and were left out");
                return None;
            }
            if detail.as_deref().is_some_and(|d| d != "auto") {
                warnings.push("image 'detail' has no Anthropic form and was ignored");
            }
            Some(image_block(source))
        }
        Part::ToolCall { id, name, arguments } => {
            if !assistant {
                warnings.push("tool calls outside assistant messages were left out");
                return None;
            }
            Some(ContentBlock::ToolUse(ToolUseBlock {
                id: id.clone(),
                name: name.clone(),
                input: input_of(arguments, warnings),
                ..Default::default()
            }))
        }
        Part::ToolResult {
            tool_call_id,
            content,
            is_error,
        } => {
            if assistant {
                warnings.push("tool results in assistant messages were left out");
                return None;
            }
            Some(ContentBlock::ToolResult(ToolResultBlock {
                tool_use_id: tool_call_id.clone(),
                content: tool_result_content(content, warnings),
                is_error: is_error.then_some(true),
                ..Default::default()
            }))
        }
        Part::Reasoning { text, signature } => {
            if !assistant {
                warnings.push("reasoning outside assistant messages was left out");
                return None;
            }
            match signature {
                Some(signature) => Some(ContentBlock::Thinking(ThinkingBlock {
                    thinking: text.clone(),
                    signature: signature.clone(),
                    extra: Map::new(),
                })),
                None => {
                    warnings.push(
                        "reasoning without a signature cannot be sent back to Anthropic and was left out",
                    );
                    None
                }
            }
        }
        Part::RedactedReasoning { data } => {
            if !assistant {
                warnings.push("redacted reasoning outside assistant messages was left out");
                return None;
            }
            Some(ContentBlock::RedactedThinking(RedactedThinkingBlock {
                data: data.clone(),
                extra: Map::new(),
            }))
        }
    }
}

/// Puts carried fields (and nested tool-result fields) back on the block made from part `p` of `k`.
fn restore_part_fields(carry: &Carry, k: usize, p: usize, block: &mut ContentBlock) {
    let Some(pf) = carry.part_fields.iter().find(|f| f.message == k && f.part == p) else {
        return;
    };
    apply_fields(block, &pf.fields);
    if let ContentBlock::ToolResult(tr) = block
        && !pf.nested.is_empty()
    {
        if let Some(ToolResultContent::Text(t)) = &tr.content {
            tr.content = Some(ToolResultContent::Blocks(vec![ContentBlock::text(t.clone())]));
        }
        if let Some(ToolResultContent::Blocks(blocks)) = &mut tr.content {
            for (b, fields) in blocks.iter_mut().zip(&pf.nested) {
                apply_fields(b, fields);
            }
        }
    }
}

fn insert_opaque(carry: &Carry, k: usize, blocks: &mut Vec<ContentBlock>) {
    let mut opaque: Vec<&OpaqueBlock> = carry.opaque_blocks.iter().filter(|o| o.message == k).collect();
    opaque.sort_by_key(|o| o.index);
    for o in opaque {
        if let Ok(b) = serde_json::from_value::<ContentBlock>(o.block.clone()) {
            blocks.insert(o.index.min(blocks.len()), b);
        }
    }
}

fn plain_text(b: &ContentBlock) -> Option<&str> {
    match b {
        ContentBlock::Text(t) if t.cache_control.is_none() && t.extra.is_empty() => Some(&t.text),
        _ => None,
    }
}

/// `[one plain text block]` → a string; anything else stays blocks.
fn content_of(blocks: Vec<ContentBlock>) -> MessageContent {
    if let [b] = blocks.as_slice()
        && let Some(t) = plain_text(b)
    {
        return MessageContent::Text(t.to_string());
    }
    MessageContent::Blocks(blocks)
}

fn schema_of(parameters: &Value) -> Value {
    match parameters {
        Value::Object(o) => {
            let mut o = o.clone();
            if !o.contains_key("type") {
                o.insert("type".into(), Value::String("object".into()));
            }
            Value::Object(o)
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

impl MessagesRequest {
    /// Renders a canonical request for an Anthropic upstream. Refuses what would change the answer
    /// materially (`n` > 1, logprobs, logit_bias, audio output, OpenAI web search); returns what was
    /// adjusted or left out as warnings.
    pub fn from_canonical(req: &c::ChatRequest) -> Result<(MessagesRequest, Vec<String>), WireError> {
        let mut w = Warnings::default();
        if let Some(n) = req.n
            && n > 1
        {
            return Err(WireError::param(
                "n",
                "Anthropic models return one choice; 'n' must be 1.",
            ));
        }
        if req.logprobs == Some(true) || req.top_logprobs.is_some_and(|t| t > 0) {
            return Err(WireError::param(
                "logprobs",
                "Anthropic models do not return logprobs.",
            ));
        }
        if req.sampling.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            return Err(WireError::param(
                "logit_bias",
                "'logit_bias' cannot be sent to Anthropic: token ids are tokenizer-specific and Anthropic has no bias setting.",
            ));
        }
        let carry = Carry::of(&req.extra);
        let mut user = req.user.clone();
        for (k, v) in &req.extra {
            if k == CARRY_KEY {
                continue;
            }
            match foreign_field(k, v, user.is_some()) {
                Foreign::Refuse(m) => return Err(WireError::param(k.clone(), m)),
                Foreign::Warn(m) => w.push(m),
                Foreign::Ignore => {}
            }
        }
        if user.is_none() {
            user = req
                .extra
                .get("safety_identifier")
                .and_then(Value::as_str)
                .map(str::to_string);
        }

        // Messages.
        let mut system: Vec<ContentBlock> = Vec::new();
        let mut out: Vec<InputMessage> = Vec::new();
        let mut in_dialogue = false;
        for (k, m) in req.messages.iter().enumerate() {
            if m.name.is_some() {
                w.push("message 'name' has no Anthropic form and was ignored");
            }
            match m.role {
                Role::System | Role::Developer => {
                    if in_dialogue {
                        w.push("system messages after the conversation began were moved into the top-level system prompt");
                    }
                    for (p, part) in m.content.iter().enumerate() {
                        match part {
                            Part::Text { text } if !text.is_empty() => {
                                let mut b = ContentBlock::text(text.clone());
                                restore_part_fields(&carry, k, p, &mut b);
                                system.push(b);
                            }
                            Part::Text { .. } => {}
                            _ => w.push("non-text parts of system messages were left out"),
                        }
                    }
                    if carry.opaque_blocks.iter().any(|o| o.message == k) {
                        w.push("blocks of a mid-conversation system message were left out");
                    }
                }
                Role::User | Role::Tool | Role::Assistant => {
                    in_dialogue = true;
                    let role = if m.role == Role::Assistant {
                        "assistant"
                    } else {
                        "user"
                    };
                    let mut blocks = Vec::with_capacity(m.content.len());
                    for (p, part) in m.content.iter().enumerate() {
                        if let Some(mut b) = part_to_block(part, m.role, &mut w) {
                            restore_part_fields(&carry, k, p, &mut b);
                            blocks.push(b);
                        }
                    }
                    insert_opaque(&carry, k, &mut blocks);
                    let extra = carry
                        .message_fields
                        .iter()
                        .find(|f| f.message == k)
                        .map(|f| f.fields.clone())
                        .unwrap_or_default();
                    if blocks.is_empty() {
                        if !m.content.is_empty() || m.role != Role::Assistant || k + 1 != req.messages.len() {
                            w.push("messages with no content Anthropic can carry were left out");
                        }
                        continue;
                    }
                    match out.last_mut() {
                        // Consecutive same-role turns are one turn to Anthropic: merge them, which also
                        // puts each assistant turn's tool results into the one user message after it.
                        Some(last) if last.role == role && last.extra.is_empty() && extra.is_empty() => {
                            if let MessageContent::Blocks(prev) = &mut last.content {
                                prev.extend(blocks);
                            }
                        }
                        _ => out.push(InputMessage {
                            role: role.into(),
                            content: MessageContent::Blocks(blocks),
                            extra,
                        }),
                    }
                }
            }
        }
        for m in &mut out {
            if let MessageContent::Blocks(blocks) = &mut m.content {
                if m.role == "user" {
                    // Anthropic wants a user message's tool results before anything else in it.
                    let (mut results, rest): (Vec<_>, Vec<_>) = std::mem::take(blocks)
                        .into_iter()
                        .partition(|b| matches!(b, ContentBlock::ToolResult(_)));
                    results.extend(rest);
                    *blocks = results;
                }
                m.content = content_of(std::mem::take(blocks));
            }
        }
        let system = match system.as_slice() {
            [] => None,
            [b] if plain_text(b).is_some() => plain_text(b).map(|t| System::Text(t.to_string())),
            _ => Some(System::Blocks(system)),
        };

        // Tools.
        let mut tools: Vec<ToolDef> = req
            .tools
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut def = ToolDef {
                    kind: None,
                    name: t.name.clone(),
                    description: t.description.clone(),
                    input_schema: Some(schema_of(&t.parameters)),
                    strict: t.strict,
                    cache_control: None,
                    extra: Map::new(),
                };
                if let Some(tf) = carry.tool_fields.iter().find(|f| f.tool == i) {
                    for (k, v) in &tf.fields {
                        match k.as_str() {
                            "type" => def.kind = v.as_str().map(str::to_string),
                            "cache_control" => def.cache_control = serde_json::from_value(v.clone()).ok(),
                            _ => {
                                def.extra.insert(k.clone(), v.clone());
                            }
                        }
                    }
                }
                def
            })
            .collect();
        let mut opaque_tools: Vec<&OpaqueTool> = carry.opaque_tools.iter().collect();
        opaque_tools.sort_by_key(|t| t.index);
        for t in opaque_tools {
            if let Ok(def) = serde_json::from_value::<ToolDef>(t.tool.clone()) {
                tools.insert(t.index.min(tools.len()), def);
            }
        }

        // Tool choice.
        let no_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
        let mut tool_choice = match &req.tool_choice {
            None => no_parallel.map(|d| ToolChoice::Auto {
                disable_parallel_tool_use: Some(d),
            }),
            Some(c::ToolChoice::Auto) => Some(ToolChoice::Auto {
                disable_parallel_tool_use: no_parallel,
            }),
            Some(c::ToolChoice::Required) => Some(ToolChoice::Any {
                disable_parallel_tool_use: no_parallel,
            }),
            Some(c::ToolChoice::Tool { name }) => Some(ToolChoice::Tool {
                name: name.clone(),
                disable_parallel_tool_use: no_parallel,
            }),
            Some(c::ToolChoice::None) => Some(ToolChoice::None),
        };
        if tool_choice.is_none()
            && let Some(Value::Object(raw)) = carry.fields.get("tool_choice")
        {
            tool_choice = Some(ToolChoice::Other(raw.clone()));
        }
        if tools.is_empty() && tool_choice.is_some() {
            if matches!(
                req.tool_choice,
                Some(c::ToolChoice::Required | c::ToolChoice::Tool { .. })
            ) {
                w.push("tool_choice requires a tool but no tools were given; it was not sent");
            }
            tool_choice = None;
        }

        // Thinking and max_tokens.
        let mut thinking = match carry.fields.get("thinking") {
            Some(raw) => serde_json::from_value::<Thinking>(raw.clone()).ok(),
            None => req.reasoning.as_ref().and_then(|r| {
                if r.disabled {
                    Some(Thinking::Disabled)
                } else if let Some(b) = r.budget_tokens {
                    Some(Thinking::Enabled {
                        budget_tokens: b,
                        display: None,
                    })
                } else {
                    r.effort.as_deref().map(|e| match budget_for(e) {
                        Some(b) => Thinking::Enabled {
                            budget_tokens: b,
                            display: None,
                        },
                        None => Thinking::Disabled,
                    })
                }
            }),
        };
        let budget = match &thinking {
            Some(Thinking::Enabled { budget_tokens, .. }) => *budget_tokens,
            _ => 0,
        };
        let max_tokens = match req.max_tokens {
            Some(m) => m,
            None => {
                let m = DEFAULT_MAX_TOKENS.saturating_add(budget);
                w.push(format!("Anthropic requires max_tokens; {m} was used"));
                m
            }
        };
        if let Some(Thinking::Enabled { budget_tokens, .. }) = &mut thinking {
            if *budget_tokens < MIN_THINKING_BUDGET {
                w.push(format!(
                    "thinking budget raised to Anthropic's minimum of {MIN_THINKING_BUDGET}"
                ));
                *budget_tokens = MIN_THINKING_BUDGET;
            }
            if *budget_tokens >= max_tokens {
                if max_tokens > MIN_THINKING_BUDGET {
                    *budget_tokens = max_tokens - 1;
                    w.push(format!(
                        "thinking budget lowered to {} to stay below max_tokens",
                        max_tokens - 1
                    ));
                } else {
                    w.push(format!(
                        "max_tokens {max_tokens} leaves no room for Anthropic's minimum thinking budget; thinking was turned off"
                    ));
                    thinking = None;
                }
            }
        }
        let thinks = matches!(
            thinking,
            Some(Thinking::Enabled { .. } | Thinking::Adaptive { .. })
        );

        // Sampling.
        let s = &req.sampling;
        let mut temperature = s.temperature;
        let mut top_p = s.top_p;
        let mut top_k = s.top_k;
        if let Some(t) = temperature
            && t > 1.0
        {
            w.push(format!(
                "temperature {t} is above Anthropic's maximum of 1 and was lowered to 1"
            ));
            temperature = Some(1.0);
        }
        if thinks {
            if temperature.is_some_and(|t| t != 1.0) {
                w.push("temperature cannot be changed while thinking is on; it was not sent");
                temperature = None;
            }
            if top_k.is_some() {
                w.push("top_k cannot be set while thinking is on; it was not sent");
                top_k = None;
            }
            if top_p.is_some_and(|p| p < 0.95) {
                w.push("top_p below 0.95 cannot be set while thinking is on; it was not sent");
                top_p = None;
            }
        }
        if s.seed.is_some() {
            w.push("'seed' has no Anthropic form and was not sent");
        }
        for (name, value, neutral) in [
            ("presence_penalty", s.presence_penalty, 0.0),
            ("frequency_penalty", s.frequency_penalty, 0.0),
            ("repetition_penalty", s.repetition_penalty, 1.0),
            ("min_p", s.min_p, 0.0),
        ] {
            if value.is_some_and(|v| v != neutral) {
                w.push(format!("'{name}' has no Anthropic form and was not sent"));
            }
        }
        let mut stop = Vec::with_capacity(req.stop.len());
        for s in &req.stop {
            if s.chars().all(char::is_whitespace) {
                w.push("stop sequences made only of whitespace are refused by Anthropic and were not sent");
            } else {
                stop.push(s.clone());
            }
        }

        // Output format.
        let mut output_config = match carry.fields.get("output_config") {
            Some(raw) => serde_json::from_value::<OutputConfig>(raw.clone()).ok(),
            None => None,
        };
        match &req.response_format {
            None | Some(c::ResponseFormat::Text) => {}
            Some(c::ResponseFormat::JsonObject) => {
                w.push("response_format json_object has no Anthropic form (only json_schema does) and was not sent");
            }
            Some(c::ResponseFormat::JsonSchema { schema, .. }) => {
                output_config.get_or_insert_with(OutputConfig::default).format =
                    Some(json!({"type": "json_schema", "schema": schema}));
            }
        }

        // Metadata and the rest of the carried fields.
        let mut metadata = match carry.fields.get("metadata") {
            Some(Value::Object(m)) => Some(Metadata {
                user_id: None,
                extra: m.clone(),
            }),
            _ => None,
        };
        if let Some(u) = user {
            metadata.get_or_insert_with(Metadata::default).user_id = Some(u);
        }
        let mut service_tier = None;
        let mut extra = Map::new();
        for (k, v) in &carry.fields {
            match k.as_str() {
                "thinking" | "output_config" | "metadata" | "tool_choice" => {}
                "service_tier" => service_tier = v.as_str().map(str::to_string),
                _ => {
                    extra.insert(k.clone(), v.clone());
                }
            }
        }

        Ok((
            MessagesRequest {
                model: req.model.clone(),
                max_tokens,
                messages: out,
                system,
                metadata,
                stop_sequences: (!stop.is_empty()).then_some(stop),
                stream: req.stream.then_some(true),
                temperature,
                top_p,
                top_k,
                tools: (!tools.is_empty()).then_some(tools),
                tool_choice,
                thinking,
                service_tier,
                output_config,
                extra,
            },
            w.0,
        ))
    }
}

// ---------------------------------------------------------------------------------------------------
// Finish reasons and usage

/// `stop_reason` → canonical. `refusal` is a classifier stopping the answer, which is what OpenAI's
/// `content_filter` says; `model_context_window_exceeded` is a length stop.
pub fn finish_from_anthropic(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "end_turn" | "stop_sequence" => FinishReason::Stop,
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Other,
    }
}

/// Canonical → `stop_reason`. `Other` becomes `end_turn`: `pause_turn` would make a client resend the
/// turn, which only an Anthropic server tool can ask for.
pub fn stop_reason_for(reason: FinishReason, stop_sequence: Option<&str>) -> &'static str {
    match reason {
        FinishReason::Stop if stop_sequence.is_some() => "stop_sequence",
        FinishReason::Stop | FinishReason::Other => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

impl Usage {
    /// Canonical input counts cached tokens; Anthropic's `input_tokens` does not.
    pub fn to_canonical(&self) -> c::Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let created = self.cache_creation_input_tokens.unwrap_or(0);
        c::Usage {
            input_tokens: self.input_tokens.saturating_add(read).saturating_add(created),
            output_tokens: self.output_tokens,
            cache_read_tokens: read,
            cache_creation_tokens: created,
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .map_or(0, |d| d.thinking_tokens),
        }
    }

    pub fn from_canonical(u: &c::Usage) -> Usage {
        Usage {
            input_tokens: u
                .input_tokens
                .saturating_sub(u.cache_read_tokens)
                .saturating_sub(u.cache_creation_tokens),
            output_tokens: u.output_tokens,
            cache_creation_input_tokens: Some(u.cache_creation_tokens),
            cache_read_input_tokens: Some(u.cache_read_tokens),
            output_tokens_details: (u.reasoning_tokens > 0).then(|| OutputTokensDetails {
                thinking_tokens: u.reasoning_tokens,
                extra: Map::new(),
            }),
            extra: Map::new(),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Response ⇄ canonical

/// Assistant parts → response blocks; empty text is never emitted.
pub(crate) fn response_blocks(parts: &[Part]) -> Vec<ContentBlock> {
    let mut out = Vec::with_capacity(parts.len());
    for p in parts {
        match p {
            Part::Text { text } if !text.is_empty() => out.push(ContentBlock::text(text.clone())),
            Part::Reasoning { text, signature } => out.push(ContentBlock::Thinking(ThinkingBlock {
                thinking: text.clone(),
                signature: signature.clone().unwrap_or_default(),
                extra: Map::new(),
            })),
            Part::RedactedReasoning { data } => {
                out.push(ContentBlock::RedactedThinking(RedactedThinkingBlock {
                    data: data.clone(),
                    extra: Map::new(),
                }))
            }
            Part::ToolCall { id, name, arguments } => out.push(ContentBlock::ToolUse(ToolUseBlock {
                id: id.clone(),
                name: name.clone(),
                input: response_input(arguments),
                ..Default::default()
            })),
            Part::Text { .. } | Part::Image { .. } | Part::ToolResult { .. } => {}
        }
    }
    out
}

/// A response's `tool_use.input`: the arguments' object; arguments that are not a JSON object travel
/// as a JSON string so that nothing is lost (and [`arguments_of`] gives them back).
fn response_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return Value::Object(Map::new());
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::String(arguments.to_string()),
    }
}

impl MessagesResponse {
    /// Renders choice 0 (the only one Anthropic has; `n` > 1 is refused before it gets here).
    pub fn from_canonical(resp: &c::ChatResponse) -> MessagesResponse {
        let choice = resp
            .choices
            .iter()
            .find(|c| c.index == 0)
            .or(resp.choices.first());
        let parts = choice.map(|c| c.content.as_slice()).unwrap_or_default();
        let has_calls = parts.iter().any(|p| matches!(p, Part::ToolCall { .. }));
        let reason = choice.and_then(|c| c.finish_reason).unwrap_or(if has_calls {
            FinishReason::ToolCalls
        } else {
            FinishReason::Stop
        });
        let stop_reason = stop_reason_for(reason, resp.stop_sequence.as_deref());
        MessagesResponse {
            id: resp.id.clone(),
            kind: message_type(),
            role: assistant_role(),
            model: resp.model.clone(),
            content: response_blocks(parts),
            stop_reason: Some(stop_reason.to_string()),
            stop_sequence: if stop_reason == "stop_sequence" {
                resp.stop_sequence.clone()
            } else {
                None
            },
            usage: Usage::from_canonical(&resp.usage.unwrap_or_default()),
            extra: Map::new(),
        }
    }

    /// Anthropic has no `created`: it is 0 here, for the caller to fill in.
    pub fn to_canonical(self) -> c::ChatResponse {
        let mut content = Vec::with_capacity(self.content.len());
        for b in self.content {
            match b {
                ContentBlock::Text(t) if !t.text.is_empty() => content.push(Part::Text { text: t.text }),
                ContentBlock::Thinking(th) => content.push(Part::Reasoning {
                    text: th.thinking,
                    signature: (!th.signature.is_empty()).then_some(th.signature),
                }),
                ContentBlock::RedactedThinking(r) => content.push(Part::RedactedReasoning { data: r.data }),
                ContentBlock::ToolUse(tu) => content.push(Part::ToolCall {
                    arguments: arguments_of(&tu.input),
                    id: tu.id,
                    name: tu.name,
                }),
                // Server tool blocks and the like: the server already acted on them.
                _ => {}
            }
        }
        let finish_reason = self.stop_reason.as_deref().map(finish_from_anthropic);
        c::ChatResponse {
            id: self.id,
            model: self.model,
            created: 0,
            choices: vec![c::Choice {
                index: 0,
                content,
                finish_reason,
                logprobs: None,
            }],
            usage: Some(self.usage.to_canonical()),
            stop_sequence: self.stop_sequence,
        }
    }
}
