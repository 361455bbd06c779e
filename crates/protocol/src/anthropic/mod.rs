//! The Anthropic Messages dialect: wire types ([`types`]), validation of raw bodies ([`validate`]),
//! translation to and from the canonical model ([`messages`]) and streams ([`stream`]).
//!
//! Field names, event order and error types follow `anthropic-sdk-python` 0.121 (August 2026) and
//! Anthropic's API documentation.
//!
//! # Request translation
//!
//! | Anthropic | canonical | notes |
//! | --- | --- | --- |
//! | `system` (string or text blocks) | leading `System` message | canonical `System`/`Developer` messages later in the conversation are hoisted into `system` (warning) |
//! | `role: "system"` message | `System` message in place | hoisted on the way back (warning) |
//! | `text` block | `Part::Text` | empty text is never sent |
//! | `image` base64 / url | `Part::Image` `Base64` / `Url` | `detail` has no Anthropic form (warning); `file` sources ride in the carry |
//! | `tool_use` (assistant) | `Part::ToolCall` | `input` ⇄ `arguments` text; arguments that are not a JSON object are wrapped `{"value": …}` (warning) |
//! | `tool_result` (user) | `Part::ToolResult` in a `User` message | consecutive `Tool`/`User` messages merge into **one** user message with the tool results **first**; `is_error` kept |
//! | `thinking` / `redacted_thinking` | `Part::Reasoning{text, signature}` / `Part::RedactedReasoning` | unsigned reasoning (from other providers) cannot go to Anthropic and is left out (warning) |
//! | `tools[].input_schema`, `description`, `strict` | `Tool.parameters`, `description`, `strict` | a schema without `type` gets `"type": "object"` |
//! | server tools (`web_search_…`, …) | carry | |
//! | `tool_choice` `auto`/`any`/`tool`/`none` | `Auto`/`Required`/`Tool`/`None` | `disable_parallel_tool_use: true` ⇄ `parallel_tool_calls: false`; no tools → not sent |
//! | `thinking` `enabled{budget_tokens}` / `disabled` / `adaptive` | `reasoning.budget_tokens` / `.disabled` / `.effort` (+ carry) | see the budget table below |
//! | `stop_sequences` | `stop` | whitespace-only stops are refused by Anthropic: left out (warning) |
//! | `temperature`, `top_p`, `top_k` | `sampling.*` | temperature > 1 lowered to 1 (warning); with thinking on, temperature ≠ 1, top_k and top_p < 0.95 are not sent (warning) |
//! | `metadata.user_id` | `user` | OpenAI `safety_identifier` is used when there is no `user` |
//! | `output_config.format` (json_schema) | `response_format` `JsonSchema` | `json_object` has no Anthropic form (warning) |
//! | `max_tokens` | `max_tokens` | none in canonical → [`messages::DEFAULT_MAX_TOKENS`] (4096) + the thinking budget (warning) |
//! | `stream` | `stream`, `include_usage` | Anthropic always reports usage |
//! | `cache_control` (any block, tool, top level), `citations`, `service_tier`, `container`, `mcp_servers`, `context_management`, `inference_geo`, `output_config.effort`, documents, search results, unknown fields | `extra["anthropic"]` ([`messages::Carry`]) | given back in place by `from_canonical`; [`messages::carried_fields`] lists them for other dialects' warnings |
//!
//! Canonical fields Anthropic cannot carry, decided per field:
//!
//! | canonical / OpenAI field | decision | why |
//! | --- | --- | --- |
//! | `n` > 1 | **refuse** (400, `param: n`) | one choice only: the client would miss answers |
//! | `logprobs: true`, `top_logprobs` > 0 | **refuse** (`logprobs`) | the client asked for data that would never come |
//! | `logit_bias` (non-empty) | **refuse** (`logit_bias`) | token ids are tokenizer-specific; silently ignoring a ban changes output |
//! | `audio`, `modalities` with `audio` | **refuse** | no audio output |
//! | `web_search_options` | **refuse** | a different tool contract (Anthropic's is a server tool) |
//! | `seed` | warn | best-effort determinism only |
//! | `presence_penalty`, `frequency_penalty`, `repetition_penalty`, `min_p` | warn (when not neutral) | sampling nudges |
//! | `response_format: json_object` | warn | the OpenAI contract already requires the prompt to ask for JSON |
//! | `store`, `metadata`, `service_tier`, `prediction`, `verbosity`, `prompt_cache_key`, other unknown fields | warn | bookkeeping or optimisation only |
//! | `stream_options`, `modalities: ["text"]`, `include_usage` | ignored | already Anthropic's behaviour |
//! | message `name`, image `detail` | warn | no slot |
//!
//! Turns: Anthropic's documentation says consecutive same-role turns "will be combined into a single
//! turn", so translation merges them itself (which also keeps each `tool_use`'s results in the next
//! message); it does not insert placeholder messages, and validation does not require alternation or a
//! first `user` message (see [`validate`]).
//!
//! Thinking budget ⇄ effort (`openai::chat::budget_for_effort` / `effort_for_budget`, kept; plus
//! `xhigh`, which that table would read as `medium`). Medium and high are the budgets the CAIS
//! `simple-evals` harness ships (8192 / 24576); LiteLLM's stock defaults (128 / 1024 / 2048 / 4096) are
//! below Anthropic's 1024 minimum at the low end and are commonly raised by its users for `high`. Every
//! level here is ≥ 1024:
//!
//! | effort | budget_tokens | budget → effort |
//! | --- | --- | --- |
//! | `none` | thinking `disabled` | — |
//! | `minimal` | 1024 | ≤ 1024 |
//! | `low` | 2048 | 1025 – 4096 |
//! | `medium` (and unknown) | 8192 | 4097 – 16384 |
//! | `high` | 24576 | > 16384 |
//! | `xhigh` | 32768 | (`high`) |
//!
//! The budget must stay below `max_tokens`: when it would not, it is lowered to `max_tokens - 1`, or
//! thinking is turned off when `max_tokens` ≤ 1024 (warning). Adaptive thinking becomes `reasoning.effort`
//! = `output_config.effort` (default `high`; `max` → `xhigh`).
//!
//! # Responses
//!
//! `stop_reason` ⇄ finish reason: `end_turn` → `Stop`; `stop_sequence` → `Stop` + `stop_sequence`;
//! `max_tokens` and `model_context_window_exceeded` → `Length`; `tool_use` → `ToolCalls`; `refusal` →
//! `ContentFilter` (a classifier stopped the answer, as OpenAI's `content_filter` says); `pause_turn` and
//! unknown → `Other`. Back: `Stop` → `stop_sequence` when the response names one, else `end_turn`;
//! `ContentFilter` → `refusal`; `Other` → `end_turn` (`pause_turn` would make a client resend the turn).
//! Usage: canonical `input_tokens` includes cached tokens, Anthropic's excludes both cache reads and
//! cache writes; `output_tokens_details.thinking_tokens` ⇄ `reasoning_tokens`. Empty text blocks are
//! never emitted. Anthropic has no `created`: responses decode with `created: 0`.
//!
//! Streams: see [`stream`].

pub mod messages;
pub mod stream;
pub mod types;
pub mod validate;

use serde_json::{Value, json};

pub use messages::{Carry, DEFAULT_MAX_TOKENS, carried_fields, finish_from_anthropic, stop_reason_for};
pub use stream::{DecodeError, EventDecoder, EventEncoder, error_event};
pub use types::*;

use crate::error::WireError;

/// Parses a request body into a JSON object (the same rules as the OpenAI surface).
pub fn parse_object(body: &[u8]) -> Result<serde_json::Map<String, Value>, WireError> {
    crate::openai::parse_object(body)
}

/// Deserialises an already validated body into a typed request.
pub fn from_object<T: serde::de::DeserializeOwned>(
    body: serde_json::Map<String, Value>,
) -> Result<T, WireError> {
    crate::openai::from_object(body)
}

/// Anthropic's error envelope: `{"type": "error", "error": {"type": …, "message": …}}`.
pub fn error_body(error_type: &str, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type, "message": message}})
}

/// A request refused by validation or translation, in Anthropic's envelope (status 400).
pub fn wire_error_body(e: &WireError) -> Value {
    error_body("invalid_request_error", &e.message)
}

/// The HTTP status of each Anthropic error type (500 for unknown ones).
///
/// | type | status |
/// | --- | --- |
/// | `invalid_request_error` | 400 |
/// | `authentication_error` | 401 |
/// | `billing_error` | 402 |
/// | `permission_error` | 403 |
/// | `not_found_error` | 404 |
/// | `request_too_large` | 413 |
/// | `rate_limit_error` | 429 |
/// | `api_error` | 500 |
/// | `timeout_error` | 504 |
/// | `overloaded_error` | 529 |
pub fn status_for_error_type(error_type: &str) -> u16 {
    match error_type {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

/// The Anthropic error type for an HTTP status (the inverse of [`status_for_error_type`]; other 4xx are
/// `invalid_request_error`, 503 is `overloaded_error`, other 5xx `api_error`).
pub fn error_type_for_status(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        503 | 529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests;
