//! Anthropic Messages wire types (`POST /v1/messages`, `/v1/messages/count_tokens` and the stream events).
//!
//! Every struct keeps the fields it does not know in `extra`, and every tagged enum has an `Other` arm
//! holding the object as sent, so a block type, tool type or event Anthropic adds tomorrow passes
//! through unchanged instead of failing the parse.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------------------
// Request

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MessagesRequest {
    pub model: String,
    /// Required by Anthropic. `0` only pre-warms the prompt cache.
    pub max_tokens: u32,
    pub messages: Vec<InputMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    /// `auto` or `standard_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_tier: Option<String>,
    /// `effort` and structured-output `format`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    /// `container`, `mcp_servers`, `context_management`, top-level `cache_control`, `inference_geo`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `/v1/messages/count_tokens`: a Messages request without the generation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CountTokensRequest {
    pub model: String,
    pub messages: Vec<InputMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<System>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_config: Option<OutputConfig>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl CountTokensRequest {
    /// The equivalent Messages request (`max_tokens` is irrelevant to counting and set to 1), so that
    /// counting can reuse [`MessagesRequest::to_canonical`].
    pub fn into_messages_request(self) -> MessagesRequest {
        MessagesRequest {
            model: self.model,
            max_tokens: 1,
            messages: self.messages,
            system: self.system,
            tools: self.tools,
            tool_choice: self.tool_choice,
            thinking: self.thinking,
            output_config: self.output_config,
            extra: self.extra,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CountTokensResponse {
    pub input_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum System {
    Text(String),
    /// Text blocks, each possibly with `cache_control`.
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OutputConfig {
    /// `low`, `medium`, `high`, `xhigh`, `max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// `{"type": "json_schema", "schema": {…}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputMessage {
    /// `user`, `assistant`, or (since May 2026, with `mid_conv_system` blocks) `system`.
    pub role: String,
    pub content: MessageContent,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Blocks(Vec<ContentBlock>),
}

/// `{"type": "ephemeral", "ttl": "5m" | "1h"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct CacheControl {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A content block, in a request or a response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentBlock {
    Text(TextBlock),
    Image(ImageBlock),
    ToolUse(ToolUseBlock),
    ToolResult(ToolResultBlock),
    Thinking(ThinkingBlock),
    RedactedThinking(RedactedThinkingBlock),
    /// `document`, `search_result`, `server_tool_use`, `web_search_tool_result`, `mid_conv_system`, …
    /// kept exactly as sent (the map includes `type`).
    #[serde(untagged)]
    Other(Map<String, Value>),
}

impl ContentBlock {
    pub fn text(text: impl Into<String>) -> ContentBlock {
        ContentBlock::Text(TextBlock {
            text: text.into(),
            ..Default::default()
        })
    }

    /// The `type` this block has on the wire.
    pub fn kind(&self) -> &str {
        match self {
            ContentBlock::Text(_) => "text",
            ContentBlock::Image(_) => "image",
            ContentBlock::ToolUse(_) => "tool_use",
            ContentBlock::ToolResult(_) => "tool_result",
            ContentBlock::Thinking(_) => "thinking",
            ContentBlock::RedactedThinking(_) => "redacted_thinking",
            ContentBlock::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TextBlock {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    /// `citations`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageBlock {
    pub source: ImageSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 {
        media_type: String,
        data: String,
    },
    Url {
        url: String,
    },
    /// `{"type": "file", "file_id": …}` and anything newer.
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolUseBlock {
    pub id: String,
    pub name: String,
    /// An object. (Kept as a `Value` so that a malformed upstream answer still parses.)
    #[serde(default)]
    pub input: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    /// `caller`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolResultBlock {
    pub tool_use_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<ToolResultContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_error: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    Text(String),
    /// `text`, `image`, `search_result`, `document`, `tool_reference` blocks.
    Blocks(Vec<ContentBlock>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ThinkingBlock {
    #[serde(default)]
    pub thinking: String,
    /// Opaque; must be sent back unchanged next turn.
    #[serde(default)]
    pub signature: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct RedactedThinkingBlock {
    pub data: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A tool definition. Client tools have no `type` (or `"custom"`) and an `input_schema`; server tools
/// (`web_search_20250305`, `bash_20250124`, …) have their own `type` and travel in `extra` untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ToolDef {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_schema: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<CacheControl>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ToolDef {
    /// A client tool (the model calls it, the caller runs it), as opposed to a server tool.
    pub fn is_client_tool(&self) -> bool {
        matches!(self.kind.as_deref(), None | Some("custom"))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None,
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Thinking {
    Enabled {
        budget_tokens: u32,
        /// `summarized` or `omitted`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
    },
    Disabled,
    Adaptive {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        display: Option<String>,
    },
    #[serde(untagged)]
    Other(Map<String, Value>),
}

// ---------------------------------------------------------------------------------------------------
// Response

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MessagesResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant_role")]
    pub role: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`,
    /// `model_context_window_exceeded`; `null` only in `message_start`.
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: Usage,
    /// `container`, `stop_details`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

pub(crate) fn message_type() -> String {
    "message".to_string()
}

pub(crate) fn assistant_role() -> String {
    "assistant".to_string()
}

/// Anthropic's `input_tokens` excludes the cached tokens: the request's total input is
/// `input_tokens + cache_creation_input_tokens + cache_read_input_tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputTokensDetails>,
    /// `cache_creation` (per TTL), `server_tool_use`, `service_tier`, `inference_geo`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct OutputTokensDetails {
    /// Output tokens spent on reasoning (part of `output_tokens`).
    #[serde(default)]
    pub thinking_tokens: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

// ---------------------------------------------------------------------------------------------------
// Stream events

/// One server-sent event of a streamed Messages response. The SSE `event:` name equals `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageStreamEvent {
    MessageStart {
        message: MessagesResponse,
    },
    ContentBlockStart {
        index: u32,
        content_block: ContentBlock,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    ContentBlockStop {
        index: u32,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: DeltaUsage,
    },
    MessageStop,
    Ping,
    Error {
        error: ErrorObject,
    },
    #[serde(untagged)]
    Other(Map<String, Value>),
}

impl MessageStreamEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &str {
        match self {
            MessageStreamEvent::MessageStart { .. } => "message_start",
            MessageStreamEvent::ContentBlockStart { .. } => "content_block_start",
            MessageStreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            MessageStreamEvent::ContentBlockStop { .. } => "content_block_stop",
            MessageStreamEvent::MessageDelta { .. } => "message_delta",
            MessageStreamEvent::MessageStop => "message_stop",
            MessageStreamEvent::Ping => "ping",
            MessageStreamEvent::Error { .. } => "error",
            MessageStreamEvent::Other(m) => m.get("type").and_then(Value::as_str).unwrap_or("unknown"),
        }
    }

    /// The event as an SSE frame: `event: <name>\ndata: <json>\n\n`.
    pub fn to_frame(&self) -> bytes::Bytes {
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::sse::event_frame(self.name(), &json)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    SignatureDelta {
        signature: String,
    },
    CitationsDelta {
        citation: Value,
    },
    #[serde(untagged)]
    Other(Map<String, Value>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MessageDelta {
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    /// `stop_details`, `container`, …
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The usage of `message_delta`: cumulative counts. `input_tokens` and the cache counts are optional
/// here; when absent, the values of `message_start` stand.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeltaUsage {
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens_details: Option<OutputTokensDetails>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"type": "invalid_request_error", "message": "…"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub message: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `{"type": "error", "error": {…}, "request_id": …}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ErrorResponse {
    #[serde(rename = "type", default = "error_type")]
    pub kind: String,
    pub error: ErrorObject,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn error_type() -> String {
    "error".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_blocks_tools_and_fields_survive() {
        let body = json!({
            "model": "claude-x",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "sys", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "document", "source": {"type": "url", "url": "https://x/y.pdf"}},
                    {"type": "text", "text": "hi", "citations": [], "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "file", "file_id": "f1"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "sig"},
                    {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"q": 1}},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}, "caller": {"type": "direct"}}
                ]}
            ],
            "tools": [
                {"name": "f", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
            ],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "thinking": {"type": "adaptive", "display": "omitted"},
            "container": "c1",
            "mcp_servers": [{"type": "url", "url": "https://m"}],
            "output_config": {"effort": "high", "task_budget": 5}
        });
        let req: MessagesRequest = serde_json::from_value(body.clone()).unwrap();
        let MessageContent::Blocks(blocks) = &req.messages[0].content else {
            panic!()
        };
        assert!(matches!(&blocks[0], ContentBlock::Other(m) if m["type"] == "document"));
        assert!(matches!(
            &blocks[2],
            ContentBlock::Image(ImageBlock {
                source: ImageSource::Other(_),
                ..
            })
        ));
        assert_eq!(blocks[1].kind(), "text");
        let tools = req.tools.as_ref().unwrap();
        assert!(tools[0].is_client_tool() && !tools[1].is_client_tool());
        assert_eq!(
            req.tool_choice,
            Some(ToolChoice::Any {
                disable_parallel_tool_use: Some(true)
            })
        );
        assert_eq!(
            req.thinking,
            Some(Thinking::Adaptive {
                display: Some("omitted".into())
            })
        );
        assert_eq!(serde_json::to_value(&req).unwrap(), body);
    }

    #[test]
    fn stream_events_parse_and_name_themselves() {
        let ev: MessageStreamEvent = serde_json::from_value(json!({
            "type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a"}
        }))
        .unwrap();
        assert_eq!(ev.name(), "content_block_delta");
        assert!(matches!(
            ev,
            MessageStreamEvent::ContentBlockDelta {
                index: 1,
                delta: BlockDelta::InputJsonDelta { .. }
            }
        ));
        let other: MessageStreamEvent =
            serde_json::from_value(json!({"type": "future_event", "x": 1})).unwrap();
        assert_eq!(other.name(), "future_event");
        let frame = MessageStreamEvent::MessageStop.to_frame();
        assert_eq!(
            &frame[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
    }
}
