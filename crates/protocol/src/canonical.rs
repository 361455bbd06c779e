//! The canonical model every surface and provider translates to and from.
//!
//! N surfaces and M providers need N + M translators, not N × M. The canonical types carry the union of
//! what the dialects can say; each translator refuses (or reports in `warnings`) what its target cannot
//! carry, never dropping it silently.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageSource {
    Url { url: String },
    Base64 { media_type: String, data: String },
}

impl ImageSource {
    /// Parses an OpenAI `image_url.url`, which may be a `data:` URL.
    pub fn from_url(url: &str) -> ImageSource {
        if let Some(rest) = url.strip_prefix("data:")
            && let Some((meta, data)) = rest.split_once(',')
            && let Some(media_type) = meta.strip_suffix(";base64")
        {
            return ImageSource::Base64 {
                media_type: media_type.to_string(),
                data: data.to_string(),
            };
        }
        ImageSource::Url { url: url.to_string() }
    }

    /// Renders as a URL (a `data:` URL for inline images).
    pub fn to_url(&self) -> String {
        match self {
            ImageSource::Url { url } => url.clone(),
            ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        }
    }
}

/// One piece of a message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
    },
    /// A call the assistant made. `arguments` is the JSON text exactly as produced.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The result of a tool call, sent back by the caller.
    ToolResult {
        tool_call_id: String,
        content: Vec<Part>,
        #[serde(default)]
        is_error: bool,
    },
    /// Visible reasoning, with the provider's signature so it can be sent back next turn.
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Reasoning the provider encrypted; only its opaque payload travels.
    RedactedReasoning {
        data: String,
    },
}

impl Part {
    pub fn text(text: impl Into<String>) -> Part {
        Part::Text { text: text.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Message {
    pub fn new(role: Role, content: Vec<Part>) -> Message {
        Message {
            role,
            content,
            name: None,
        }
    }

    /// The concatenated text parts.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.content {
            if let Part::Text { text } = part {
                out.push_str(text);
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    pub parameters: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool (OpenAI `required`, Anthropic `any`).
    Required,
    Tool {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

/// How much the model should think before answering.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Reasoning {
    /// OpenAI's `reasoning_effort`: minimal, low, medium, high.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effort: Option<String>,
    /// Anthropic's `thinking.budget_tokens`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_tokens: Option<u32>,
    /// Thinking was explicitly turned off.
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Sampling {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f64>,
    /// Token id (as a string, OpenAI style) → bias.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<Map<String, Value>>,
}

/// A chat request in the canonical model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub sampling: Sampling,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default)]
    pub stream: bool,
    /// The caller wants usage reported in the stream.
    #[serde(default)]
    pub include_usage: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<Reasoning>,
    /// End-user identifier (OpenAI `user`, Anthropic `metadata.user_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Fields of the inbound dialect the canonical model has no slot for. Translators to the same
    /// dialect pass them on; translators to another dialect refuse them or report them as warnings.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    /// Anthropic `pause_turn` / `refusal` and friends.
    Other,
}

impl FinishReason {
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Other => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// All input tokens, cached ones included.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Input tokens read from a prompt cache (part of `input_tokens`).
    #[serde(default)]
    pub cache_read_tokens: u64,
    /// Input tokens written to a prompt cache (part of `input_tokens`).
    #[serde(default)]
    pub cache_creation_tokens: u64,
    /// Output tokens spent on reasoning (part of `output_tokens`).
    #[serde(default)]
    pub reasoning_tokens: u64,
}

impl Usage {
    pub fn total(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub index: u32,
    /// Assistant content: text, reasoning and tool calls, in order.
    pub content: Vec<Part>,
    pub finish_reason: Option<FinishReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Value>,
}

/// A complete (non-streaming) chat response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub choices: Vec<Choice>,
    pub usage: Option<Usage>,
    /// Anthropic `stop_sequence`: which stop string ended the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequence: Option<String>,
}

/// One event of a streamed chat response. A stream is:
/// `Start`, then any interleaving of deltas per choice, `Finish` per choice, `Usage` at most once, and
/// it ends when the producer ends (or with `Error`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StreamEvent {
    Start {
        id: String,
        model: String,
        created: u64,
    },
    TextDelta {
        choice: u32,
        text: String,
    },
    ReasoningDelta {
        choice: u32,
        text: String,
    },
    ReasoningSignature {
        choice: u32,
        signature: String,
    },
    RedactedReasoning {
        choice: u32,
        data: String,
    },
    /// A tool call begins. `index` counts the calls of this choice from 0.
    ToolCallStart {
        choice: u32,
        index: u32,
        id: String,
        name: String,
    },
    ToolCallDelta {
        choice: u32,
        index: u32,
        arguments: String,
    },
    Logprobs {
        choice: u32,
        logprobs: Value,
    },
    Finish {
        choice: u32,
        reason: FinishReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_sequence: Option<String>,
    },
    Usage {
        usage: Usage,
    },
}

/// Folds a stream of events into a complete response: the reference semantics of a stream, used by
/// property tests and by providers that must answer a non-streaming call from a streaming source.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    id: String,
    model: String,
    created: u64,
    choices: Vec<Choice>,
    usage: Option<Usage>,
    stop_sequence: Option<String>,
}

impl StreamAccumulator {
    pub fn new() -> StreamAccumulator {
        StreamAccumulator::default()
    }

    fn choice(&mut self, index: u32) -> &mut Choice {
        let pos = match self.choices.iter().position(|c| c.index == index) {
            Some(pos) => pos,
            None => {
                self.choices.push(Choice {
                    index,
                    content: Vec::new(),
                    finish_reason: None,
                    logprobs: None,
                });
                self.choices.len() - 1
            }
        };
        &mut self.choices[pos]
    }

    pub fn push(&mut self, event: &StreamEvent) {
        match event {
            StreamEvent::Start { id, model, created } => {
                self.id.clone_from(id);
                self.model.clone_from(model);
                self.created = *created;
            }
            StreamEvent::TextDelta { choice, text } => {
                let c = self.choice(*choice);
                if let Some(Part::Text { text: last }) = c.content.last_mut() {
                    last.push_str(text);
                } else {
                    c.content.push(Part::Text { text: text.clone() });
                }
            }
            StreamEvent::ReasoningDelta { choice, text } => {
                let c = self.choice(*choice);
                if let Some(Part::Reasoning {
                    text: last,
                    signature: None,
                }) = c.content.last_mut()
                {
                    last.push_str(text);
                } else {
                    c.content.push(Part::Reasoning {
                        text: text.clone(),
                        signature: None,
                    });
                }
            }
            StreamEvent::ReasoningSignature { choice, signature } => {
                let c = self.choice(*choice);
                if let Some(Part::Reasoning {
                    signature: sig @ None,
                    ..
                }) = c.content.last_mut()
                {
                    *sig = Some(signature.clone());
                } else {
                    c.content.push(Part::Reasoning {
                        text: String::new(),
                        signature: Some(signature.clone()),
                    });
                }
            }
            StreamEvent::RedactedReasoning { choice, data } => {
                self.choice(*choice)
                    .content
                    .push(Part::RedactedReasoning { data: data.clone() });
            }
            StreamEvent::ToolCallStart {
                choice,
                index: _,
                id,
                name,
            } => {
                self.choice(*choice).content.push(Part::ToolCall {
                    id: id.clone(),
                    name: name.clone(),
                    arguments: String::new(),
                });
            }
            StreamEvent::ToolCallDelta {
                choice,
                index,
                arguments,
            } => {
                let c = self.choice(*choice);
                if let Some(Part::ToolCall { arguments: args, .. }) = c
                    .content
                    .iter_mut()
                    .filter(|p| matches!(p, Part::ToolCall { .. }))
                    .nth(*index as usize)
                {
                    args.push_str(arguments);
                }
            }
            StreamEvent::Logprobs { choice, logprobs } => {
                let c = self.choice(*choice);
                merge_logprobs(&mut c.logprobs, logprobs);
            }
            StreamEvent::Finish {
                choice,
                reason,
                stop_sequence,
            } => {
                self.choice(*choice).finish_reason = Some(*reason);
                if stop_sequence.is_some() {
                    self.stop_sequence.clone_from(stop_sequence);
                }
            }
            StreamEvent::Usage { usage } => self.usage = Some(*usage),
        }
    }

    pub fn finish(mut self) -> ChatResponse {
        self.choices.sort_by_key(|c| c.index);
        ChatResponse {
            id: self.id,
            model: self.model,
            created: self.created,
            choices: self.choices,
            usage: self.usage,
            stop_sequence: self.stop_sequence,
        }
    }
}

/// Appends the `content` entries of an OpenAI-style logprobs object to another.
fn merge_logprobs(into: &mut Option<Value>, more: &Value) {
    match into {
        None => *into = Some(more.clone()),
        Some(existing) => {
            if let (Some(dst), Some(src)) = (
                existing.get_mut("content").and_then(Value::as_array_mut),
                more.get("content").and_then(Value::as_array),
            ) {
                dst.extend(src.iter().cloned());
            }
        }
    }
}

/// Turns a complete response into the events a stream of it would carry (one event per part).
pub fn response_to_events(resp: &ChatResponse) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::Start {
        id: resp.id.clone(),
        model: resp.model.clone(),
        created: resp.created,
    }];
    for c in &resp.choices {
        let mut tool_index = 0u32;
        for part in &c.content {
            match part {
                Part::Text { text } => {
                    events.push(StreamEvent::TextDelta {
                        choice: c.index,
                        text: text.clone(),
                    });
                }
                Part::Reasoning { text, signature } => {
                    events.push(StreamEvent::ReasoningDelta {
                        choice: c.index,
                        text: text.clone(),
                    });
                    if let Some(sig) = signature {
                        events.push(StreamEvent::ReasoningSignature {
                            choice: c.index,
                            signature: sig.clone(),
                        });
                    }
                }
                Part::RedactedReasoning { data } => {
                    events.push(StreamEvent::RedactedReasoning {
                        choice: c.index,
                        data: data.clone(),
                    });
                }
                Part::ToolCall { id, name, arguments } => {
                    events.push(StreamEvent::ToolCallStart {
                        choice: c.index,
                        index: tool_index,
                        id: id.clone(),
                        name: name.clone(),
                    });
                    events.push(StreamEvent::ToolCallDelta {
                        choice: c.index,
                        index: tool_index,
                        arguments: arguments.clone(),
                    });
                    tool_index += 1;
                }
                Part::Image { .. } | Part::ToolResult { .. } => {}
            }
        }
        if let Some(lp) = &c.logprobs {
            events.push(StreamEvent::Logprobs {
                choice: c.index,
                logprobs: lp.clone(),
            });
        }
        if let Some(reason) = c.finish_reason {
            events.push(StreamEvent::Finish {
                choice: c.index,
                reason,
                stop_sequence: resp.stop_sequence.clone(),
            });
        }
    }
    if let Some(usage) = resp.usage {
        events.push(StreamEvent::Usage { usage });
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_round_trip() {
        let src = ImageSource::from_url("data:image/png;base64,AAAA");
        assert_eq!(
            src,
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "AAAA".into()
            }
        );
        assert_eq!(src.to_url(), "data:image/png;base64,AAAA");
        let url = ImageSource::from_url("https://example.com/cat.png");
        assert_eq!(
            url,
            ImageSource::Url {
                url: "https://example.com/cat.png".into()
            }
        );
    }

    #[test]
    fn accumulator_joins_deltas_and_tool_arguments() {
        let mut acc = StreamAccumulator::new();
        for ev in [
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
                created: 1,
            },
            StreamEvent::TextDelta {
                choice: 0,
                text: "He".into(),
            },
            StreamEvent::TextDelta {
                choice: 0,
                text: "llo".into(),
            },
            StreamEvent::ToolCallStart {
                choice: 0,
                index: 0,
                id: "a".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallStart {
                choice: 0,
                index: 1,
                id: "b".into(),
                name: "g".into(),
            },
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: 1,
                arguments: "{}".into(),
            },
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: 0,
                arguments: "{\"x\":".into(),
            },
            StreamEvent::ToolCallDelta {
                choice: 0,
                index: 0,
                arguments: "1}".into(),
            },
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
        ] {
            acc.push(&ev);
        }
        let resp = acc.finish();
        assert_eq!(
            resp.choices[0].content,
            vec![
                Part::text("Hello"),
                Part::ToolCall {
                    id: "a".into(),
                    name: "f".into(),
                    arguments: "{\"x\":1}".into()
                },
                Part::ToolCall {
                    id: "b".into(),
                    name: "g".into(),
                    arguments: "{}".into()
                },
            ]
        );
        assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    }
}
