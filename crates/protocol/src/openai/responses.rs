//! The OpenAI Responses API (`/v1/responses`): its request items to the canonical model, and a
//! canonical answer to its `response` object and stream events. No I/O.

use serde_json::{Map, Value, json};

use crate::canonical::{self as c, FinishReason, ImageSource, Message, Part, Role};
use crate::error::WireError;

/// A Responses request, read into what the gateway needs.
#[derive(Debug, Clone, Default)]
pub struct ResponsesRequest {
    pub model: String,
    /// The conversation items of this request (after `instructions`), in wire form, with ids.
    pub input_items: Vec<Value>,
    pub instructions: Option<String>,
    pub tools: Vec<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
    pub text_format: Option<Value>,
    pub reasoning: Option<Value>,
    pub max_output_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub metadata: Option<Value>,
    pub store: bool,
    pub previous_response_id: Option<String>,
    pub truncation: Option<String>,
    pub stream: bool,
    pub user: Option<String>,
}

const KNOWN: &[&str] = &[
    "model",
    "input",
    "instructions",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "max_output_tokens",
    "temperature",
    "top_p",
    "metadata",
    "store",
    "previous_response_id",
    "truncation",
    "stream",
    "user",
    "include",
    "service_tier",
    "background",
    "prompt_cache_key",
    "safety_identifier",
    "stream_options",
    "top_logprobs",
    "max_tool_calls",
    "conversation",
    "prompt",
    // Hints that change nothing here.
    "context_management",
    "moderation",
    "prompt_cache_options",
    "prompt_cache_retention",
    "access_programs",
];

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let s = std::collections::hash_map::RandomState::new();
    let mut h = s.build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    let a = h.finish();
    let mut h = s.build_hasher();
    h.write_u64(a ^ 0x9e37_79b9_7f4a_7c15);
    (u128::from(a) << 64) | u128::from(h.finish())
}

/// Reads and checks a `/v1/responses` body.
pub fn parse_request(obj: &Map<String, Value>) -> Result<ResponsesRequest, WireError> {
    for k in obj.keys() {
        if !KNOWN.contains(&k.as_str()) {
            return Err(WireError::param(k.clone(), format!("Unknown parameter: '{k}'.")));
        }
    }
    // Parts of the API this gateway does not offer: refused when asked for, not silently dropped.
    for (k, what) in [
        (
            "conversation",
            "Conversations are not supported; use previous_response_id.",
        ),
        (
            "prompt",
            "Prompt templates are not supported; send instructions and input.",
        ),
    ] {
        if obj.get(k).is_some_and(|v| !v.is_null()) {
            return Err(WireError::param(k, what));
        }
    }
    if obj.get("background") == Some(&Value::Bool(true)) {
        return Err(WireError::param(
            "background",
            "Background responses are not supported; stream instead.",
        ));
    }
    let model = match obj.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(WireError::param("model", "'model' must be a non-empty string.")),
        None => return Err(WireError::param("model", "Missing required parameter: 'model'.")),
    };
    let opt_str = |k: &str| -> Result<Option<String>, WireError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(WireError::param(k, format!("'{k}' must be a string."))),
        }
    };
    let opt_num = |k: &str, lo: f64, hi: f64| -> Result<Option<f64>, WireError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(x) if (lo..=hi).contains(&x) => Ok(Some(x)),
                _ => Err(WireError::param(
                    k,
                    format!("'{k}' must be a number from {lo} to {hi}."),
                )),
            },
        }
    };
    let opt_bool = |k: &str| -> Result<Option<bool>, WireError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(WireError::param(k, format!("'{k}' must be a boolean."))),
        }
    };
    let input_items = match obj.get("input") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![json!({
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": s}]
        })],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, it)| normalize_item(it, i))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(WireError::param(
                "input",
                "'input' must be a string or an array of items.",
            ));
        }
    };
    let tools = match obj.get("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(t)) => {
            for (i, tool) in t.iter().enumerate() {
                match tool.get("type").and_then(Value::as_str) {
                    Some("function") => {
                        if tool.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
                            return Err(WireError::param(
                                format!("tools[{i}].name"),
                                "A function tool needs a 'name'.",
                            ));
                        }
                    }
                    // Built-in tools pass to an upstream that runs them natively; the translated
                    // path refuses them (see `check_translatable`).
                    Some(_) => {}
                    None => {
                        return Err(WireError::param(
                            format!("tools[{i}].type"),
                            "Each tool needs a 'type'.",
                        ));
                    }
                }
            }
            t.clone()
        }
        Some(_) => return Err(WireError::param("tools", "'tools' must be an array.")),
    };
    let max_output_tokens = match obj.get("max_output_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) if n >= 16 && n <= u64::from(u32::MAX) => Some(n as u32),
            _ => {
                return Err(WireError::param(
                    "max_output_tokens",
                    "'max_output_tokens' must be an integer of at least 16.",
                ));
            }
        },
    };
    let text_format = match obj.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::Object(t)) => match t.get("format") {
            None | Some(Value::Null) => None,
            Some(f) => match f.get("type").and_then(Value::as_str) {
                Some("text") | Some("json_object") => Some(f.clone()),
                Some("json_schema") => {
                    if f.get("schema").is_none_or(|s| !s.is_object()) {
                        return Err(WireError::param(
                            "text.format.schema",
                            "A json_schema format needs a 'schema' object.",
                        ));
                    }
                    if f.get("name").and_then(Value::as_str).is_none() {
                        return Err(WireError::param(
                            "text.format.name",
                            "A json_schema format needs a 'name'.",
                        ));
                    }
                    Some(f.clone())
                }
                _ => {
                    return Err(WireError::param(
                        "text.format.type",
                        "'text.format.type' must be 'text', 'json_object' or 'json_schema'.",
                    ));
                }
            },
        },
        Some(_) => return Err(WireError::param("text", "'text' must be an object.")),
    };
    let reasoning = match obj.get("reasoning") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => {
            let effort = match m.get("effort") {
                None | Some(Value::Null) => Value::Null,
                Some(Value::String(e))
                    if matches!(
                        e.as_str(),
                        "none" | "minimal" | "low" | "medium" | "high" | "xhigh" | "max"
                    ) =>
                {
                    json!(e)
                }
                Some(_) => {
                    return Err(WireError::param(
                        "reasoning.effort",
                        "'reasoning.effort' must be one of none, minimal, low, medium, high, xhigh, max.",
                    ));
                }
            };
            let summary = match m.get("summary").or_else(|| m.get("generate_summary")) {
                None | Some(Value::Null) => Value::Null,
                Some(Value::String(s)) if matches!(s.as_str(), "auto" | "concise" | "detailed") => json!(s),
                Some(_) => {
                    return Err(WireError::param(
                        "reasoning.summary",
                        "'reasoning.summary' must be one of auto, concise, detailed.",
                    ));
                }
            };
            Some(json!({"effort": effort, "summary": summary}))
        }
        Some(_) => return Err(WireError::param("reasoning", "'reasoning' must be an object.")),
    };
    let truncation = opt_str("truncation")?;
    if let Some(t) = &truncation
        && t != "auto"
        && t != "disabled"
    {
        return Err(WireError::param(
            "truncation",
            "'truncation' must be 'auto' or 'disabled'.",
        ));
    }
    if let Some(m) = obj.get("metadata").filter(|m| !m.is_null())
        && !m.is_object()
    {
        return Err(WireError::param("metadata", "'metadata' must be an object."));
    }
    let tool_choice = obj.get("tool_choice").filter(|v| !v.is_null()).cloned();
    if let Some(tc) = &tool_choice {
        let ok = match tc {
            Value::String(s) => matches!(s.as_str(), "auto" | "none" | "required"),
            Value::Object(o) => {
                o.get("type").and_then(Value::as_str) == Some("function")
                    && o.get("name").and_then(Value::as_str).is_some()
            }
            _ => false,
        };
        if !ok {
            return Err(WireError::param(
                "tool_choice",
                "'tool_choice' must be 'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
            ));
        }
    }
    Ok(ResponsesRequest {
        model,
        input_items,
        instructions: opt_str("instructions")?,
        tools,
        tool_choice,
        parallel_tool_calls: opt_bool("parallel_tool_calls")?,
        text_format,
        reasoning,
        max_output_tokens,
        temperature: opt_num("temperature", 0.0, 2.0)?,
        top_p: opt_num("top_p", 0.0, 1.0)?,
        metadata: obj.get("metadata").filter(|m| !m.is_null()).cloned(),
        store: opt_bool("store")?.unwrap_or(true),
        previous_response_id: opt_str("previous_response_id")?,
        truncation,
        stream: opt_bool("stream")?.unwrap_or(false),
        user: opt_str("user")?,
    })
}

/// What only an upstream's own Responses API can serve: built-in tools (web search, file search,
/// MCP, ...). A translated request refuses them, naming the tool.
pub fn check_translatable(req: &ResponsesRequest) -> Result<(), WireError> {
    for (i, t) in req.tools.iter().enumerate() {
        let ty = t.get("type").and_then(Value::as_str).unwrap_or("");
        if ty != "function" {
            return Err(WireError::param(
                format!("tools[{i}].type"),
                format!(
                    "The tool type '{ty}' is not supported by this model's providers; only 'function' tools are (built-in tools reach only a provider configured with responses = \"native\")."
                ),
            ));
        }
    }
    Ok(())
}

/// One input item in its full form (`type` set, string content as parts), with an id.
fn normalize_item(it: &Value, i: usize) -> Result<Value, WireError> {
    let Value::Object(m) = it else {
        return Err(WireError::param(
            format!("input[{i}]"),
            "Each input item must be an object.",
        ));
    };
    let ty = m
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or(if m.contains_key("role") { "message" } else { "" });
    let mut out = m.clone();
    match ty {
        "message" => {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("");
            if !matches!(role, "user" | "assistant" | "system" | "developer") {
                return Err(WireError::param(
                    format!("input[{i}].role"),
                    "A message's role must be user, assistant, system or developer.",
                ));
            }
            let text_type = if role == "assistant" {
                "output_text"
            } else {
                "input_text"
            };
            let content = match m.get("content") {
                Some(Value::String(s)) => vec![json!({"type": text_type, "text": s})],
                Some(Value::Array(parts)) => {
                    for (j, p) in parts.iter().enumerate() {
                        match p.get("type").and_then(Value::as_str) {
                            Some("input_text" | "output_text") => {
                                if p.get("text").and_then(Value::as_str).is_none() {
                                    return Err(WireError::param(
                                        format!("input[{i}].content[{j}].text"),
                                        "A text part needs 'text'.",
                                    ));
                                }
                            }
                            Some("input_image") => {
                                if p.get("image_url").and_then(Value::as_str).is_none() {
                                    return Err(WireError::param(
                                        format!("input[{i}].content[{j}].image_url"),
                                        "An input_image part needs an 'image_url' (a URL or a data: URL); file ids are not supported.",
                                    ));
                                }
                            }
                            Some("refusal") => {}
                            other => {
                                return Err(WireError::param(
                                    format!("input[{i}].content[{j}].type"),
                                    format!("Unsupported content part type: {}.", other.unwrap_or("(none)")),
                                ));
                            }
                        }
                    }
                    parts.clone()
                }
                _ => {
                    return Err(WireError::param(
                        format!("input[{i}].content"),
                        "A message's content must be a string or an array of parts.",
                    ));
                }
            };
            out.insert("type".into(), json!("message"));
            out.insert("content".into(), Value::Array(content));
            out.entry("id").or_insert_with(|| json!(new_id("msg")));
        }
        "function_call" => {
            for k in ["call_id", "name", "arguments"] {
                if m.get(k).and_then(Value::as_str).is_none() {
                    return Err(WireError::param(
                        format!("input[{i}].{k}"),
                        format!("A function_call item needs '{k}'."),
                    ));
                }
            }
            out.entry("id").or_insert_with(|| json!(new_id("fc")));
        }
        "function_call_output" => {
            if m.get("call_id").and_then(Value::as_str).is_none() {
                return Err(WireError::param(
                    format!("input[{i}].call_id"),
                    "A function_call_output item needs 'call_id'.",
                ));
            }
            if !m.get("output").is_some_and(|o| o.is_string() || o.is_array()) {
                return Err(WireError::param(
                    format!("input[{i}].output"),
                    "A function_call_output item needs an 'output' string.",
                ));
            }
            out.entry("id").or_insert_with(|| json!(new_id("fco")));
        }
        "reasoning" => {
            out.entry("id").or_insert_with(|| json!(new_id("rs")));
            out.entry("summary").or_insert_with(|| json!([]));
        }
        "compaction" => {
            match m
                .get("encrypted_content")
                .and_then(Value::as_str)
                .map(decode_compaction)
            {
                Some(Some(_)) => {}
                Some(None) => {
                    return Err(WireError::param(
                        format!("input[{i}].encrypted_content"),
                        "This compaction item was not made by this gateway, so it cannot be read; send the conversation instead.",
                    ));
                }
                None => {
                    return Err(WireError::param(
                        format!("input[{i}].encrypted_content"),
                        "A compaction item needs 'encrypted_content'.",
                    ));
                }
            }
            out.entry("id").or_insert_with(|| json!(new_id("cmp")));
        }
        "item_reference" => {
            return Err(WireError::param(
                format!("input[{i}].type"),
                "item_reference items are not supported; send the items, or use previous_response_id.",
            ));
        }
        "" => {
            return Err(WireError::param(
                format!("input[{i}].type"),
                "Each input item needs a 'type' (or a 'role').",
            ));
        }
        other => {
            return Err(WireError::param(
                format!("input[{i}].type"),
                format!("Unsupported input item type: '{other}'."),
            ));
        }
    }
    Ok(Value::Object(out))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// The canonical request of a conversation (`items`: the previous turns' items, then this request's).
pub fn to_canonical(req: &ResponsesRequest, items: &[Value]) -> Result<c::ChatRequest, WireError> {
    let mut messages: Vec<Message> = Vec::new();
    if let Some(i) = &req.instructions {
        messages.push(Message::new(Role::System, vec![Part::text(i)]));
    }
    for it in items {
        match it.get("type").and_then(Value::as_str) {
            Some("message") => {
                let role = match it["role"].as_str() {
                    Some("assistant") => Role::Assistant,
                    Some("system") => Role::System,
                    Some("developer") => Role::Developer,
                    _ => Role::User,
                };
                let mut parts = Vec::new();
                for p in it["content"].as_array().into_iter().flatten() {
                    match p["type"].as_str() {
                        Some("input_text" | "output_text") => {
                            parts.push(Part::text(p["text"].as_str().unwrap_or("")));
                        }
                        Some("input_image") => parts.push(Part::Image {
                            source: ImageSource::from_url(p["image_url"].as_str().unwrap_or("")),
                            detail: p["detail"].as_str().map(String::from),
                        }),
                        _ => {}
                    }
                }
                messages.push(Message::new(role, parts));
            }
            Some("function_call") => {
                let part = Part::ToolCall {
                    id: it["call_id"].as_str().unwrap_or("").to_string(),
                    name: it["name"].as_str().unwrap_or("").to_string(),
                    arguments: it["arguments"].as_str().unwrap_or("{}").to_string(),
                };
                // Calls made in one turn go in one assistant message.
                match messages.last_mut() {
                    Some(m)
                        if m.role == Role::Assistant
                            && m.content.iter().all(|p| !matches!(p, Part::Text { .. })) =>
                    {
                        m.content.push(part);
                    }
                    _ => messages.push(Message::new(Role::Assistant, vec![part])),
                }
            }
            Some("function_call_output") => messages.push(Message::new(
                Role::Tool,
                vec![Part::ToolResult {
                    tool_call_id: it["call_id"].as_str().unwrap_or("").to_string(),
                    content: vec![Part::text(text_of(&it["output"]))],
                    is_error: false,
                }],
            )),
            Some("compaction") => {
                if let Some(summary) = it["encrypted_content"].as_str().and_then(decode_compaction) {
                    messages.push(Message::new(
                        Role::System,
                        vec![Part::text(format!(
                            "Summary of the earlier conversation:\n{summary}"
                        ))],
                    ));
                }
            }
            Some("reasoning") => {
                let text: String = it["summary"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n");
                let part = match it["encrypted_content"].as_str() {
                    Some(data) if text.is_empty() => Part::RedactedReasoning {
                        data: data.to_string(),
                    },
                    _ => Part::Reasoning {
                        text,
                        signature: it["encrypted_content"].as_str().map(String::from),
                    },
                };
                match messages.last_mut() {
                    Some(m) if m.role == Role::Assistant && m.content.is_empty() => m.content.push(part),
                    _ => messages.push(Message::new(Role::Assistant, vec![part])),
                }
            }
            _ => {}
        }
    }
    if !messages.iter().any(|m| m.role != Role::System) {
        return Err(WireError::param(
            "input",
            "The request has no input: send 'input' or a previous_response_id.",
        ));
    }
    let tools = req
        .tools
        .iter()
        .map(|t| c::Tool {
            name: t["name"].as_str().unwrap_or("").to_string(),
            description: t["description"].as_str().map(String::from),
            parameters: t
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            strict: t["strict"].as_bool(),
        })
        .collect();
    let tool_choice = req.tool_choice.as_ref().map(|tc| match tc {
        Value::String(s) if s == "none" => c::ToolChoice::None,
        Value::String(s) if s == "required" => c::ToolChoice::Required,
        Value::Object(o) => c::ToolChoice::Tool {
            name: o["name"].as_str().unwrap_or("").to_string(),
        },
        _ => c::ToolChoice::Auto,
    });
    let response_format = req.text_format.as_ref().and_then(|f| match f["type"].as_str() {
        Some("json_object") => Some(c::ResponseFormat::JsonObject),
        Some("json_schema") => Some(c::ResponseFormat::JsonSchema {
            name: f["name"].as_str().unwrap_or("response").to_string(),
            schema: f["schema"].clone(),
            strict: f["strict"].as_bool(),
        }),
        _ => None,
    });
    let reasoning = req.reasoning.as_ref().and_then(|r| {
        let effort = r["effort"].as_str().map(|e| match e {
            // The canonical scale tops out at high.
            "xhigh" | "max" => "high".to_string(),
            other => other.to_string(),
        });
        effort.map(|e| c::Reasoning {
            disabled: e == "none",
            effort: Some(e),
            budget_tokens: None,
        })
    });
    Ok(c::ChatRequest {
        model: req.model.clone(),
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls,
        sampling: c::Sampling {
            temperature: req.temperature,
            top_p: req.top_p,
            ..c::Sampling::default()
        },
        max_tokens: req.max_output_tokens,
        stream: req.stream,
        include_usage: true,
        response_format,
        reasoning,
        user: req.user.clone(),
        ..c::ChatRequest::default()
    })
}

/// The output items of a canonical answer (reasoning, message, function calls, in order).
pub fn output_items(resp: &c::ChatResponse) -> Vec<Value> {
    let mut out = Vec::new();
    let Some(choice) = resp.choices.first() else {
        return out;
    };
    let mut text = String::new();
    for p in &choice.content {
        match p {
            Part::Reasoning { text: t, signature } => {
                let mut item = json!({"type": "reasoning", "id": new_id("rs"),
                    "summary": [{"type": "summary_text", "text": t}]});
                if let Some(s) = signature {
                    item["encrypted_content"] = json!(s);
                }
                out.push(item);
            }
            Part::RedactedReasoning { data } => out.push(json!({"type": "reasoning", "id": new_id("rs"),
                "summary": [], "encrypted_content": data})),
            Part::Text { text: t } => text.push_str(t),
            _ => {}
        }
    }
    if !text.is_empty() {
        out.push(message_item(&new_id("msg"), &text, "completed"));
    }
    for p in &choice.content {
        if let Part::ToolCall { id, name, arguments } = p {
            out.push(json!({"type": "function_call", "id": new_id("fc"), "call_id": id,
                "name": name, "arguments": arguments, "status": "completed"}));
        }
    }
    out
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": id, "status": status, "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]})
}

/// `usage` in Responses form.
pub fn usage_value(u: Option<&c::Usage>) -> Value {
    match u {
        None => Value::Null,
        Some(u) => json!({
            "input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cache_read_tokens, "cache_write_tokens": u.cache_creation_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens + u.output_tokens,
        }),
    }
}

/// The concatenated `output_text` of some output items.
pub fn output_text(items: &[Value]) -> String {
    items
        .iter()
        .filter(|i| i["type"] == "message")
        .flat_map(|i| i["content"].as_array().cloned().unwrap_or_default())
        .filter(|p| p["type"] == "output_text")
        .filter_map(|p| p["text"].as_str().map(String::from))
        .collect()
}

/// A `response` object.
#[allow(clippy::too_many_arguments)]
pub fn response_object(
    id: &str,
    created_at: u64,
    status: &str,
    model: &str,
    req: &ResponsesRequest,
    output: &[Value],
    usage: Option<&c::Usage>,
    finish: Option<FinishReason>,
    error: Option<Value>,
) -> Value {
    let incomplete = (finish == Some(FinishReason::Length))
        .then(|| json!({"reason": "max_output_tokens"}))
        .or_else(|| {
            (finish == Some(FinishReason::ContentFilter)).then(|| json!({"reason": "content_filter"}))
        });
    let mut v = json!({
        "id": id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": if status == "incomplete" { incomplete.unwrap_or(Value::Null) } else { Value::Null },
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "max_tool_calls": Value::Null,
        "model": model,
        "output": output,
        "output_text": output_text(output),
        "parallel_tool_calls": req.parallel_tool_calls.unwrap_or(true),
        "previous_response_id": req.previous_response_id,
        "reasoning": {
            "effort": req.reasoning.as_ref().and_then(|r| r.get("effort")).cloned().unwrap_or(Value::Null),
            "summary": req.reasoning.as_ref().and_then(|r| r.get("summary")).cloned().unwrap_or(Value::Null),
        },
        "service_tier": "default",
        "store": req.store,
        "temperature": req.temperature.unwrap_or(1.0),
        "text": {"format": req.text_format.clone().unwrap_or_else(|| json!({"type": "text"}))},
        "tool_choice": req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        "tools": req.tools,
        "top_p": req.top_p.unwrap_or(1.0),
        "truncation": req.truncation.clone().unwrap_or_else(|| "disabled".into()),
        "usage": usage_value(usage),
        "metadata": req.metadata.clone().unwrap_or_else(|| json!({})),
    });
    if let Some(u) = &req.user {
        v["user"] = json!(u);
    }
    v
}

/// The status a finished answer has.
pub fn status_of(finish: Option<FinishReason>) -> &'static str {
    match finish {
        Some(FinishReason::Length | FinishReason::ContentFilter) => "incomplete",
        _ => "completed",
    }
}

const COMPACTION_MARK: &str = "swy1.";

/// The `encrypted_content` of a compaction item made here: the summary, marked and hex-encoded
/// (opaque to clients, readable by any replica; it is not a secret, only the caller's own text).
pub fn encode_compaction(summary: &str) -> String {
    let mut s = String::with_capacity(COMPACTION_MARK.len() + summary.len() * 2);
    s.push_str(COMPACTION_MARK);
    for b in summary.bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The summary inside a compaction item made here; `None` for anything else.
pub fn decode_compaction(content: &str) -> Option<String> {
    let hex = content.strip_prefix(COMPACTION_MARK)?;
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The conversation as a transcript, for a model asked to summarise it.
pub fn transcript(req: &c::ChatRequest) -> String {
    let mut out = String::new();
    for m in &req.messages {
        let who = match m.role {
            Role::User => "User",
            Role::Assistant => "Assistant",
            Role::Tool => "Tool result",
            Role::System | Role::Developer => "Instructions",
        };
        let mut text = String::new();
        for p in &m.content {
            match p {
                Part::Text { text: t } => text.push_str(t),
                Part::ToolCall { name, arguments, .. } => {
                    text.push_str(&format!("[called {name}({arguments})]"));
                }
                Part::ToolResult { content, .. } => {
                    for c in content {
                        if let Part::Text { text: t } = c {
                            text.push_str(t);
                        }
                    }
                }
                Part::Image { .. } => text.push_str("[image]"),
                _ => {}
            }
        }
        out.push_str(&format!("{who}: {text}\n\n"));
    }
    out
}

/// A fresh response id.
pub fn response_id() -> String {
    new_id("resp")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn items_become_a_conversation() {
        let req = parse_request(&obj(json!({
            "model": "m", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": "Weather?"},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"}
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}]
        })))
        .unwrap();
        let c = to_canonical(&req, &req.input_items).unwrap();
        assert_eq!(c.messages.len(), 4);
        assert_eq!(c.messages[0].role, Role::System);
        assert!(matches!(&c.messages[2].content[0], Part::ToolCall { name, .. } if name == "w"));
        assert!(
            matches!(&c.messages[3].content[0], Part::ToolResult { tool_call_id, .. } if tool_call_id == "c1")
        );
        assert!(req.input_items.iter().all(|i| i["id"].is_string()));
    }

    #[test]
    fn compaction_items_round_trip() {
        let enc = encode_compaction("We talked about Paris. Ünïcode too.");
        assert_eq!(
            decode_compaction(&enc).as_deref(),
            Some("We talked about Paris. Ünïcode too.")
        );
        assert!(decode_compaction("gAAAA-openai-encrypted").is_none());
        let req = parse_request(&obj(json!({"model": "m", "input": [
            {"type": "compaction", "encrypted_content": enc},
            {"role": "user", "content": "And now?"}]})))
        .unwrap();
        let c = to_canonical(&req, &req.input_items).unwrap();
        assert!(matches!(&c.messages[0].content[0], Part::Text { text } if text.contains("Paris")));
        let e = parse_request(&obj(
            json!({"model": "m", "input": [{"type": "compaction", "encrypted_content": "foreign"}]}),
        ))
        .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].encrypted_content"));
    }

    #[test]
    fn bad_input_is_named() {
        let e = parse_request(&obj(json!({"model": "m", "input": [{"type": "computer_call"}]}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("input[0].type"));
        let r = parse_request(&obj(
            json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}),
        ))
        .unwrap();
        assert_eq!(
            check_translatable(&r).unwrap_err().param.as_deref(),
            Some("tools[0].type")
        );
        let e = parse_request(&obj(json!({"model": "m", "input": "x", "max_output_tokens": 3}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("max_output_tokens"));
        let e = parse_request(&obj(json!({"model": "m", "input": "x", "bogus": 1}))).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("bogus"));
    }
}
