//! Streams: canonical events ⇄ Anthropic server-sent events, event for event.
//!
//! # Encoding (canonical → Anthropic)
//!
//! Anthropic content blocks are strictly sequential (one open block at a time, `index` counting up),
//! while a canonical stream — from OpenAI in particular — may interleave the argument deltas of several
//! tool calls, or text after a tool call whose arguments are still arriving. [`EventEncoder`] keeps the
//! blocks in the order the canonical parts appear (exactly the order [`crate::canonical::StreamAccumulator`]
//! would give them) and streams the first unfinished one live; later blocks are **buffered** until it
//! ends, then flushed as one delta each. A block ends when nothing more can be appended to it:
//!
//! - text and thinking: when another part follows (or a thinking block gets its signature);
//! - a tool call: when its arguments form a complete JSON object (so the usual sequential calls all
//!   stream live), or when the stream finishes;
//! - redacted thinking: at once (its data rides in `content_block_start`).
//!
//! A delta for a call whose block is already closed can only follow a complete JSON object, so it is
//! whitespace (dropped without loss) or invalid JSON from the upstream (dropped).
//!
//! `Finish` may come before `Usage` (it usually does), so `message_delta` and `message_stop` wait for the
//! usage, or for [`EventEncoder::finish`] at the end of the stream.
//!
//! # Decoding (Anthropic → canonical)
//!
//! [`EventDecoder`] turns each SSE event into canonical events: `message_start` → `Start` (remembering the
//! input usage), block starts and deltas → deltas, `message_delta` → `Finish` + `Usage` (input and cache
//! counts from `message_start` unless `message_delta` repeats them), `error` → [`DecodeError`]. Pings,
//! citations, server-tool blocks and unknown events are skipped; a second `message_start` is ignored; a
//! `tool_use` block that got no `input_json_delta` yields its start `input` (`{}`), never empty
//! arguments. It never panics, whatever the input.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::messages::{finish_from_anthropic, stop_reason_for};
use super::types::*;
use crate::canonical::{self as c, FinishReason, StreamEvent};
use crate::sse::SseEvent;

// ---------------------------------------------------------------------------------------------------
// Encoder

/// Tracks whether streamed text forms one complete JSON object (strings and escapes respected).
#[derive(Debug, Default)]
struct JsonScan {
    opened: bool,
    depth: u32,
    in_string: bool,
    escape: bool,
    complete: bool,
    invalid: bool,
}

impl JsonScan {
    fn feed(&mut self, s: &str) {
        for ch in s.chars() {
            if self.invalid {
                return;
            }
            if self.complete {
                if !ch.is_whitespace() {
                    self.complete = false;
                    self.invalid = true;
                }
                continue;
            }
            if !self.opened {
                match ch {
                    '{' => {
                        self.opened = true;
                        self.depth = 1;
                    }
                    c if c.is_whitespace() => {}
                    _ => self.invalid = true,
                }
                continue;
            }
            if self.in_string {
                if self.escape {
                    self.escape = false;
                } else if ch == '\\' {
                    self.escape = true;
                } else if ch == '"' {
                    self.in_string = false;
                }
                continue;
            }
            match ch {
                '"' => self.in_string = true,
                '{' | '[' => self.depth = self.depth.saturating_add(1),
                '}' | ']' => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        self.complete = true;
                    }
                }
                _ => {}
            }
        }
    }
}

#[derive(Debug)]
enum Kind {
    Text,
    Thinking,
    Redacted(String),
    Tool {
        id: String,
        name: String,
        json: JsonScan,
    },
}

#[derive(Debug)]
struct Block {
    kind: Kind,
    /// Content not yet sent (the block is not live yet).
    pending: String,
    pending_signature: Option<String>,
    /// A thinking block got its signature.
    signed: bool,
    started: bool,
    /// Nothing more can be appended.
    sealed: bool,
}

/// Canonical events → Anthropic stream events (choice 0 only; `n` > 1 is refused before streaming).
#[derive(Debug)]
pub struct EventEncoder {
    model: String,
    input_hint: u64,
    id: String,
    started: bool,
    done: bool,
    blocks: Vec<Block>,
    /// Canonical tool-call index → position in `blocks`.
    tools: Vec<usize>,
    /// The first block not yet closed; the live one once started.
    head: usize,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<c::Usage>,
}

impl EventEncoder {
    /// `model` is the public name the client asked for; it replaces whatever the provider says.
    pub fn new(model: impl Into<String>) -> EventEncoder {
        EventEncoder {
            model: model.into(),
            input_hint: 0,
            id: String::new(),
            started: false,
            done: false,
            blocks: Vec::new(),
            tools: Vec::new(),
            head: 0,
            finish: None,
            usage: None,
        }
    }

    /// The input token count to announce in `message_start` (an estimate; the real count follows in
    /// `message_delta`).
    pub fn with_input_tokens(mut self, input_tokens: u64) -> EventEncoder {
        self.input_hint = input_tokens;
        self
    }

    /// Whether `message_stop` (or an `error`) has been emitted.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn ensure_started(&mut self, out: &mut Vec<MessageStreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        out.push(MessageStreamEvent::MessageStart {
            message: MessagesResponse {
                id: self.id.clone(),
                kind: message_type(),
                role: assistant_role(),
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: Usage {
                    input_tokens: self.input_hint,
                    output_tokens: 0,
                    cache_creation_input_tokens: Some(0),
                    cache_read_input_tokens: Some(0),
                    output_tokens_details: None,
                    extra: Map::new(),
                },
                extra: Map::new(),
            },
        });
    }

    /// Appends the Anthropic events one canonical event becomes (often one, sometimes none).
    pub fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<MessageStreamEvent>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model, .. } if !self.started => {
                self.id.clone_from(id);
                if self.model.is_empty() {
                    self.model.clone_from(model);
                }
                self.ensure_started(out);
            }
            StreamEvent::TextDelta { choice: 0, text } if !text.is_empty() => {
                self.ensure_started(out);
                match self.blocks.last() {
                    Some(Block {
                        kind: Kind::Text,
                        sealed: false,
                        ..
                    }) => self.append(self.blocks.len() - 1, text, out),
                    _ => self.push(Kind::Text, text.clone(), None, out),
                }
            }
            StreamEvent::ReasoningDelta { choice: 0, text } if !text.is_empty() => {
                self.ensure_started(out);
                match self.blocks.last() {
                    Some(Block {
                        kind: Kind::Thinking,
                        sealed: false,
                        ..
                    }) => self.append(self.blocks.len() - 1, text, out),
                    _ => self.push(Kind::Thinking, text.clone(), None, out),
                }
            }
            StreamEvent::ReasoningSignature { choice: 0, signature } if !signature.is_empty() => {
                self.ensure_started(out);
                let last = self.blocks.len().wrapping_sub(1);
                match self.blocks.last_mut() {
                    Some(
                        b @ Block {
                            kind: Kind::Thinking,
                            sealed: false,
                            ..
                        },
                    ) => {
                        b.signed = true;
                        b.sealed = true;
                        if last == self.head && b.started {
                            out.push(MessageStreamEvent::ContentBlockDelta {
                                index: last as u32,
                                delta: BlockDelta::SignatureDelta {
                                    signature: signature.clone(),
                                },
                            });
                        } else {
                            b.pending_signature = Some(signature.clone());
                        }
                        self.advance(false, out);
                    }
                    _ => self.push(Kind::Thinking, String::new(), Some(signature.clone()), out),
                }
            }
            StreamEvent::RedactedReasoning { choice: 0, data } => {
                self.ensure_started(out);
                self.push(Kind::Redacted(data.clone()), String::new(), None, out);
            }
            StreamEvent::ToolCallStart {
                choice: 0, id, name, ..
            } => {
                self.ensure_started(out);
                self.tools.push(self.blocks.len());
                let kind = Kind::Tool {
                    id: id.clone(),
                    name: name.clone(),
                    json: JsonScan::default(),
                };
                self.push(kind, String::new(), None, out);
            }
            StreamEvent::ToolCallDelta {
                choice: 0,
                index,
                arguments,
            } if !arguments.is_empty() => {
                let Some(&pos) = self.tools.get(*index as usize) else {
                    return;
                };
                if pos < self.head {
                    // Closed: only whitespace or invalid JSON can follow a complete object.
                    return;
                }
                if let Some(Block {
                    kind: Kind::Tool { json, .. },
                    sealed,
                    ..
                }) = self.blocks.get_mut(pos)
                {
                    json.feed(arguments);
                    *sealed = json.complete;
                }
                self.append(pos, arguments, out);
                self.advance(false, out);
            }
            StreamEvent::Finish {
                choice: 0,
                reason,
                stop_sequence,
            } => {
                self.ensure_started(out);
                self.finish = Some((*reason, stop_sequence.clone()));
                self.advance(true, out);
                if self.usage.is_some() {
                    self.tail(out);
                }
            }
            StreamEvent::Usage { usage } => {
                self.usage = Some(*usage);
                if self.finish.is_some() {
                    self.tail(out);
                }
            }
            _ => {}
        }
    }

    /// Ends the stream: closes what is open and sends `message_delta` and `message_stop` if they have
    /// not gone yet. Without a `Finish`, the stop reason is `tool_use` if a tool was called, else
    /// `end_turn`.
    pub fn finish(&mut self, out: &mut Vec<MessageStreamEvent>) {
        if self.done {
            return;
        }
        self.ensure_started(out);
        self.tail(out);
    }

    /// Ends the stream with an `error` event instead (after what was already sent).
    pub fn error(&mut self, error_type: &str, message: &str, out: &mut Vec<MessageStreamEvent>) {
        if self.done {
            return;
        }
        self.done = true;
        out.push(error_event(error_type, message));
    }

    fn tail(&mut self, out: &mut Vec<MessageStreamEvent>) {
        self.advance(true, out);
        let (reason, stop_sequence) = self.finish.take().unwrap_or_else(|| {
            let called = self.blocks.iter().any(|b| matches!(b.kind, Kind::Tool { .. }));
            (
                if called {
                    FinishReason::ToolCalls
                } else {
                    FinishReason::Stop
                },
                None,
            )
        });
        let stop_reason = stop_reason_for(reason, stop_sequence.as_deref());
        let usage = match &self.usage {
            Some(u) => {
                let wire = Usage::from_canonical(u);
                DeltaUsage {
                    output_tokens: wire.output_tokens,
                    input_tokens: Some(wire.input_tokens),
                    cache_creation_input_tokens: wire.cache_creation_input_tokens,
                    cache_read_input_tokens: wire.cache_read_input_tokens,
                    output_tokens_details: wire.output_tokens_details,
                    extra: Map::new(),
                }
            }
            None => DeltaUsage::default(),
        };
        out.push(MessageStreamEvent::MessageDelta {
            delta: MessageDelta {
                stop_reason: Some(stop_reason.to_string()),
                stop_sequence: if stop_reason == "stop_sequence" {
                    stop_sequence
                } else {
                    None
                },
                extra: Map::new(),
            },
            usage,
        });
        out.push(MessageStreamEvent::MessageStop);
        self.done = true;
    }

    /// A new part: the previous text or thinking block can no longer grow.
    fn push(
        &mut self,
        kind: Kind,
        content: String,
        signature: Option<String>,
        out: &mut Vec<MessageStreamEvent>,
    ) {
        if let Some(last) = self.blocks.last_mut()
            && matches!(last.kind, Kind::Text | Kind::Thinking)
        {
            last.sealed = true;
        }
        let sealed = matches!(kind, Kind::Redacted(_)) || signature.is_some();
        let signed = signature.is_some();
        self.blocks.push(Block {
            kind,
            pending: content,
            pending_signature: signature,
            signed,
            started: false,
            sealed,
        });
        self.advance(false, out);
    }

    fn append(&mut self, pos: usize, text: &str, out: &mut Vec<MessageStreamEvent>) {
        let live = pos == self.head;
        let Some(b) = self.blocks.get_mut(pos) else { return };
        if live && b.started {
            let delta = match b.kind {
                Kind::Text => BlockDelta::TextDelta {
                    text: text.to_string(),
                },
                Kind::Thinking => BlockDelta::ThinkingDelta {
                    thinking: text.to_string(),
                },
                Kind::Tool { .. } => BlockDelta::InputJsonDelta {
                    partial_json: text.to_string(),
                },
                Kind::Redacted(_) => return,
            };
            out.push(MessageStreamEvent::ContentBlockDelta {
                index: pos as u32,
                delta,
            });
        } else {
            b.pending.push_str(text);
        }
    }

    /// Starts the head block (flushing what it buffered) and closes it while it is complete; `ending`
    /// closes everything.
    fn advance(&mut self, ending: bool, out: &mut Vec<MessageStreamEvent>) {
        while let Some(b) = self.blocks.get_mut(self.head) {
            let index = self.head as u32;
            if !b.started {
                b.started = true;
                let content_block = match &b.kind {
                    Kind::Text => ContentBlock::text(""),
                    Kind::Thinking => ContentBlock::Thinking(ThinkingBlock::default()),
                    Kind::Redacted(data) => ContentBlock::RedactedThinking(RedactedThinkingBlock {
                        data: data.clone(),
                        extra: Map::new(),
                    }),
                    Kind::Tool { id, name, .. } => ContentBlock::ToolUse(ToolUseBlock {
                        id: id.clone(),
                        name: name.clone(),
                        input: Value::Object(Map::new()),
                        ..Default::default()
                    }),
                };
                out.push(MessageStreamEvent::ContentBlockStart { index, content_block });
                let pending = std::mem::take(&mut b.pending);
                if !pending.is_empty() {
                    let delta = match b.kind {
                        Kind::Text => Some(BlockDelta::TextDelta { text: pending }),
                        Kind::Thinking => Some(BlockDelta::ThinkingDelta { thinking: pending }),
                        Kind::Tool { .. } => Some(BlockDelta::InputJsonDelta {
                            partial_json: pending,
                        }),
                        Kind::Redacted(_) => None,
                    };
                    if let Some(delta) = delta {
                        out.push(MessageStreamEvent::ContentBlockDelta { index, delta });
                    }
                }
                if let Some(signature) = b.pending_signature.take() {
                    out.push(MessageStreamEvent::ContentBlockDelta {
                        index,
                        delta: BlockDelta::SignatureDelta { signature },
                    });
                }
            }
            if b.sealed || ending {
                out.push(MessageStreamEvent::ContentBlockStop { index });
                self.head += 1;
            } else {
                break;
            }
        }
    }
}

/// An `error` stream event.
pub fn error_event(error_type: &str, message: &str) -> MessageStreamEvent {
    MessageStreamEvent::Error {
        error: ErrorObject {
            kind: error_type.to_string(),
            message: message.to_string(),
            extra: Map::new(),
        },
    }
}

// ---------------------------------------------------------------------------------------------------
// Decoder

/// An upstream `error` event, or a stream that broke the protocol. The gateway ends the client's stream
/// with it (in the client's dialect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Anthropic's error type (`overloaded_error`, …); `api_error` for a malformed stream.
    pub error_type: String,
    pub message: String,
}

impl DecodeError {
    fn malformed(message: impl Into<String>) -> DecodeError {
        DecodeError {
            error_type: "api_error".into(),
            message: message.into(),
        }
    }

    /// The HTTP status Anthropic uses for this error type.
    pub fn status(&self) -> u16 {
        super::status_for_error_type(&self.error_type)
    }
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

impl std::error::Error for DecodeError {}

#[derive(Debug)]
enum Open {
    Text,
    Thinking,
    /// A tool call: its canonical index, whether any argument text came, and its start `input`.
    Tool {
        index: u32,
        got_json: bool,
        input: String,
    },
    /// Server tool blocks and unknown ones.
    Skipped,
}

#[derive(Deserialize)]
struct StartEvent {
    message: StartMessage,
}

#[derive(Deserialize)]
struct StartMessage {
    #[serde(default)]
    id: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    usage: Option<DeltaUsage>,
}

#[derive(Deserialize)]
struct BlockStartEvent {
    index: u32,
    content_block: ContentBlock,
}

#[derive(Deserialize)]
struct BlockDeltaEvent {
    index: u32,
    delta: BlockDelta,
}

#[derive(Deserialize)]
struct BlockStopEvent {
    index: u32,
}

#[derive(Deserialize)]
struct DeltaEvent {
    #[serde(default)]
    delta: MessageDelta,
    #[serde(default)]
    usage: Option<DeltaUsage>,
}

#[derive(Deserialize)]
struct ErrorEvent {
    error: ErrorObject,
}

const KNOWN_EVENTS: &[&str] = &[
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "error",
];

fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, DecodeError> {
    serde_json::from_value(v)
        .map_err(|e| DecodeError::malformed(format!("malformed {what} event from upstream: {e}")))
}

/// Anthropic stream events → canonical events.
#[derive(Debug, Default)]
pub struct EventDecoder {
    started: bool,
    stopped: bool,
    /// Open blocks by Anthropic index.
    open: Vec<(u32, Open)>,
    tools: u32,
    input_tokens: u64,
    cache_read: u64,
    cache_creation: u64,
}

impl EventDecoder {
    pub fn new() -> EventDecoder {
        EventDecoder::default()
    }

    /// Whether `message_stop` arrived (a stream that ends before it was cut short).
    pub fn is_finished(&self) -> bool {
        self.stopped
    }

    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: String::new(),
                model: String::new(),
                created: 0,
            });
        }
    }

    /// Appends the canonical events one SSE event becomes.
    pub fn decode(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), DecodeError> {
        let name = ev.event.as_deref().unwrap_or("");
        let value: Value = match serde_json::from_str(&ev.data) {
            Ok(v) => v,
            Err(_) if KNOWN_EVENTS.contains(&name) => {
                if name == "error" {
                    return Err(DecodeError {
                        error_type: "api_error".into(),
                        message: ev.data.clone(),
                    });
                }
                return Err(DecodeError::malformed(format!(
                    "{name} event from upstream is not JSON"
                )));
            }
            Err(_) => return Ok(()),
        };
        let ty = value
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(name)
            .to_string();
        match ty.as_str() {
            "message_start" => {
                let start: StartEvent = parse(value, "message_start")?;
                if self.started {
                    return Ok(());
                }
                self.started = true;
                if let Some(u) = start.message.usage {
                    self.input_tokens = u.input_tokens.unwrap_or(0);
                    self.cache_read = u.cache_read_input_tokens.unwrap_or(0);
                    self.cache_creation = u.cache_creation_input_tokens.unwrap_or(0);
                }
                out.push(StreamEvent::Start {
                    id: start.message.id,
                    model: start.message.model,
                    created: 0,
                });
            }
            "content_block_start" => {
                let start: BlockStartEvent = parse(value, "content_block_start")?;
                self.ensure_started(out);
                let open = match start.content_block {
                    ContentBlock::Text(t) => {
                        if !t.text.is_empty() {
                            out.push(StreamEvent::TextDelta {
                                choice: 0,
                                text: t.text,
                            });
                        }
                        Open::Text
                    }
                    ContentBlock::Thinking(th) => {
                        if !th.thinking.is_empty() {
                            out.push(StreamEvent::ReasoningDelta {
                                choice: 0,
                                text: th.thinking,
                            });
                        }
                        if !th.signature.is_empty() {
                            out.push(StreamEvent::ReasoningSignature {
                                choice: 0,
                                signature: th.signature,
                            });
                        }
                        Open::Thinking
                    }
                    ContentBlock::RedactedThinking(r) => {
                        out.push(StreamEvent::RedactedReasoning {
                            choice: 0,
                            data: r.data,
                        });
                        Open::Skipped
                    }
                    ContentBlock::ToolUse(tu) => {
                        let index = self.tools;
                        self.tools += 1;
                        out.push(StreamEvent::ToolCallStart {
                            choice: 0,
                            index,
                            id: tu.id,
                            name: tu.name,
                        });
                        let input = match tu.input {
                            Value::Null => "{}".to_string(),
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        Open::Tool {
                            index,
                            got_json: false,
                            input,
                        }
                    }
                    ContentBlock::Other(m) => {
                        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                        if matches!(kind, "text" | "thinking" | "redacted_thinking" | "tool_use") {
                            return Err(DecodeError::malformed(format!(
                                "malformed content_block_start event from upstream: bad '{kind}' block"
                            )));
                        }
                        Open::Skipped
                    }
                    ContentBlock::Image(_) | ContentBlock::ToolResult(_) => Open::Skipped,
                };
                if let Some(pos) = self.open.iter().position(|(i, _)| *i == start.index) {
                    // A block restarted without a stop: finish the old one first.
                    let (_, old) = self.open.remove(pos);
                    close(old, out);
                }
                self.open.push((start.index, open));
            }
            "content_block_delta" => {
                let d: BlockDeltaEvent = parse(value, "content_block_delta")?;
                let Some((_, open)) = self.open.iter_mut().find(|(i, _)| *i == d.index) else {
                    return Err(DecodeError::malformed(format!(
                        "content_block_delta for block {} that was never started",
                        d.index
                    )));
                };
                match (d.delta, open) {
                    (_, Open::Skipped) => {}
                    (BlockDelta::TextDelta { text }, _) => {
                        if !text.is_empty() {
                            out.push(StreamEvent::TextDelta { choice: 0, text });
                        }
                    }
                    (BlockDelta::ThinkingDelta { thinking }, _) => {
                        if !thinking.is_empty() {
                            out.push(StreamEvent::ReasoningDelta {
                                choice: 0,
                                text: thinking,
                            });
                        }
                    }
                    (BlockDelta::SignatureDelta { signature }, _) => {
                        if !signature.is_empty() {
                            out.push(StreamEvent::ReasoningSignature { choice: 0, signature });
                        }
                    }
                    (BlockDelta::InputJsonDelta { partial_json }, Open::Tool { index, got_json, .. }) => {
                        if !partial_json.is_empty() {
                            *got_json = true;
                            out.push(StreamEvent::ToolCallDelta {
                                choice: 0,
                                index: *index,
                                arguments: partial_json,
                            });
                        }
                    }
                    (BlockDelta::Other(m), _) => {
                        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                        if matches!(
                            kind,
                            "text_delta" | "thinking_delta" | "signature_delta" | "input_json_delta"
                        ) {
                            return Err(DecodeError::malformed(format!(
                                "malformed content_block_delta event from upstream: bad '{kind}'"
                            )));
                        }
                    }
                    (BlockDelta::InputJsonDelta { .. } | BlockDelta::CitationsDelta { .. }, _) => {}
                }
            }
            "content_block_stop" => {
                let stop: BlockStopEvent = parse(value, "content_block_stop")?;
                if let Some(pos) = self.open.iter().position(|(i, _)| *i == stop.index) {
                    let (_, open) = self.open.remove(pos);
                    close(open, out);
                }
            }
            "message_delta" => {
                let d: DeltaEvent = parse(value, "message_delta")?;
                self.ensure_started(out);
                for (_, open) in std::mem::take(&mut self.open) {
                    close(open, out);
                }
                if let Some(reason) = d.delta.stop_reason.as_deref() {
                    let stop_sequence = if reason == "stop_sequence" {
                        d.delta.stop_sequence
                    } else {
                        None
                    };
                    out.push(StreamEvent::Finish {
                        choice: 0,
                        reason: finish_from_anthropic(reason),
                        stop_sequence,
                    });
                }
                let u = d.usage.unwrap_or_default();
                let input = u.input_tokens.unwrap_or(self.input_tokens);
                let read = u.cache_read_input_tokens.unwrap_or(self.cache_read);
                let created = u.cache_creation_input_tokens.unwrap_or(self.cache_creation);
                out.push(StreamEvent::Usage {
                    usage: c::Usage {
                        input_tokens: input.saturating_add(read).saturating_add(created),
                        output_tokens: u.output_tokens,
                        cache_read_tokens: read,
                        cache_creation_tokens: created,
                        reasoning_tokens: u.output_tokens_details.map_or(0, |d| d.thinking_tokens),
                    },
                });
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let e: ErrorEvent = parse(value, "error")?;
                return Err(DecodeError {
                    error_type: e.error.kind,
                    message: e.error.message,
                });
            }
            // `ping` and anything newer.
            _ => {}
        }
        Ok(())
    }
}

/// A tool block that got no argument text yields its start `input`.
fn close(open: Open, out: &mut Vec<StreamEvent>) {
    if let Open::Tool {
        index,
        got_json: false,
        input,
    } = open
        && !input.is_empty()
    {
        out.push(StreamEvent::ToolCallDelta {
            choice: 0,
            index,
            arguments: input,
        });
    }
}
