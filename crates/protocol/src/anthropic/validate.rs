//! Validation of Anthropic request bodies on the raw JSON, before any typed parse, so that every refusal
//! names the exact field (`param` = `messages[2].content[0].source`) and states the rule the way
//! Anthropic's API does (`messages.2.content.0.source: Field required`).
//!
//! The rules are those the API enforces as of the SDK 0.121 (August 2026) and its documentation:
//!
//! - `model`, `max_tokens` (an integer ≥ 0; `0` pre-warms the prompt cache) and `messages` (non-empty)
//!   are required; `count_tokens` needs no `max_tokens`.
//! - Roles are `user`, `assistant` and `system` (the last one for mid-conversation system blocks).
//!   Alternation is **not** enforced: the API merges consecutive same-role turns into one, and the
//!   first message may be any role as far as the documented contract goes. An upstream that still
//!   insists says so itself.
//! - Every message has non-empty content except an optional final `assistant` message (a prefill);
//!   text blocks are non-empty.
//! - `tool_result` only in `user` messages, `tool_use` / `thinking` / `redacted_thinking` only in
//!   `assistant` messages; each known block has its required fields. Unknown block types pass.
//! - `temperature` and `top_p` in 0–1, `top_k` ≥ 0; `stop_sequences` strings with some
//!   non-whitespace (Anthropic's own wording: "each stop sequence must contain non-whitespace").
//! - Client tools: `name` of 1–128 characters of `[a-zA-Z0-9_-]`, unique, `input_schema` an object;
//!   server tools (any other `type`) need a `name`.
//! - `tool_choice`: `auto`, `any`, `tool` (with `name`) or `none`; `disable_parallel_tool_use` boolean.
//! - `thinking`: `enabled` with `budget_tokens` ≥ 1024 and < `max_tokens`, `disabled` or `adaptive`.
//! - At most four `cache_control` breakpoints in the whole request.

use serde_json::{Map, Value};

use crate::error::WireError;
use crate::openai::validate::{Path, field, type_name};

/// Renders a path the way Anthropic's messages do: `messages.0.content.1`.
fn dotted(p: &Path<'_>) -> String {
    match p {
        Path::Root => String::new(),
        Path::Key(parent, key) => {
            let d = dotted(parent);
            if d.is_empty() {
                (*key).to_string()
            } else {
                format!("{d}.{key}")
            }
        }
        Path::Index(parent, i) => {
            let d = dotted(parent);
            if d.is_empty() {
                i.to_string()
            } else {
                format!("{d}.{i}")
            }
        }
    }
}

fn err(p: &Path<'_>, message: impl std::fmt::Display) -> WireError {
    WireError::param(p.render(), format!("{}: {message}", dotted(p)))
}

fn expected(p: &Path<'_>, what: &str, got: &Value) -> WireError {
    err(
        p,
        format_args!("Input should be {what}, but got {}.", type_name(got)),
    )
}

fn missing(p: &Path<'_>) -> WireError {
    err(p, "Field required")
}

fn required<'v>(obj: &'v Map<String, Value>, parent: &Path<'_>, key: &str) -> Result<&'v Value, WireError> {
    field(obj, key).ok_or_else(|| missing(&Path::Key(parent, key)))
}

fn required_str<'v>(obj: &'v Map<String, Value>, parent: &Path<'_>, key: &str) -> Result<&'v str, WireError> {
    let v = required(obj, parent, key)?;
    v.as_str()
        .ok_or_else(|| expected(&Path::Key(parent, key), "a valid string", v))
}

fn optional_str<'v>(
    obj: &'v Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
) -> Result<Option<&'v str>, WireError> {
    match field(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(expected(&Path::Key(parent, key), "a valid string", v)),
    }
}

fn optional_bool(obj: &Map<String, Value>, parent: &Path<'_>, key: &str) -> Result<(), WireError> {
    match field(obj, key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(v) => Err(expected(&Path::Key(parent, key), "a valid boolean", v)),
    }
}

fn as_object<'v>(v: &'v Value, p: &Path<'_>) -> Result<&'v Map<String, Value>, WireError> {
    v.as_object().ok_or_else(|| expected(p, "a valid dictionary", v))
}

fn as_array<'v>(v: &'v Value, p: &Path<'_>) -> Result<&'v Vec<Value>, WireError> {
    v.as_array().ok_or_else(|| expected(p, "a valid list", v))
}

fn number_in(
    obj: &Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<(), WireError> {
    let Some(v) = field(obj, key) else { return Ok(()) };
    let p = Path::Key(parent, key);
    let Some(x) = v.as_f64() else {
        return Err(expected(&p, "a valid number", v));
    };
    if x < min {
        return Err(err(
            &p,
            format_args!("Input should be greater than or equal to {min}"),
        ));
    }
    if x > max {
        return Err(err(
            &p,
            format_args!("Input should be less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// An integer in `min..=max` (`None` when absent).
fn integer_in(
    obj: &Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, WireError> {
    let Some(v) = field(obj, key) else { return Ok(None) };
    let p = Path::Key(parent, key);
    let x = match v {
        Value::Number(n) => match n.as_i64() {
            Some(x) => x,
            None if n.as_u64().is_some() => i64::MAX,
            None => return Err(expected(&p, "a valid integer", v)),
        },
        _ => return Err(expected(&p, "a valid integer", v)),
    };
    if x < min {
        return Err(err(
            &p,
            format_args!("Input should be greater than or equal to {min}"),
        ));
    }
    if x > max {
        return Err(err(
            &p,
            format_args!("Input should be less than or equal to {max}"),
        ));
    }
    Ok(Some(x))
}

fn one_of(v: &str, p: &Path<'_>, allowed: &[&str]) -> Result<(), WireError> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(err(
        p,
        format_args!(
            "Input should be {}",
            allowed
                .iter()
                .map(|a| format!("'{a}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// Counts `cache_control` breakpoints and checks their shape.
#[derive(Default)]
struct Breakpoints(usize);

impl Breakpoints {
    fn check(&mut self, obj: &Map<String, Value>, parent: &Path<'_>) -> Result<(), WireError> {
        let Some(cc) = field(obj, "cache_control") else {
            return Ok(());
        };
        let p = Path::Key(parent, "cache_control");
        let cc = as_object(cc, &p)?;
        let ty = required_str(cc, &p, "type")?;
        one_of(ty, &Path::Key(&p, "type"), &["ephemeral"])?;
        if let Some(ttl) = optional_str(cc, &p, "ttl")? {
            one_of(ttl, &Path::Key(&p, "ttl"), &["5m", "1h"])?;
        }
        self.0 += 1;
        Ok(())
    }
}

const MAX_BREAKPOINTS: usize = 4;

/// Validates a `POST /v1/messages` body.
pub fn messages_request(body: &Map<String, Value>) -> Result<(), WireError> {
    let root = Path::Root;
    let max_tokens = integer_in(body, &root, "max_tokens", 0, i64::from(u32::MAX))?;
    let Some(max_tokens) = max_tokens else {
        return Err(missing(&Path::Key(&root, "max_tokens")));
    };
    common(body, Some(max_tokens))?;
    number_in(body, &root, "temperature", 0.0, 1.0)?;
    number_in(body, &root, "top_p", 0.0, 1.0)?;
    integer_in(body, &root, "top_k", 0, i64::from(u32::MAX))?;
    optional_bool(body, &root, "stream")?;
    if let Some(stops) = field(body, "stop_sequences") {
        let p = Path::Key(&root, "stop_sequences");
        for (i, s) in as_array(stops, &p)?.iter().enumerate() {
            let sp = Path::Index(&p, i);
            let Some(s) = s.as_str() else {
                return Err(expected(&sp, "a valid string", s));
            };
            if s.chars().all(char::is_whitespace) {
                return Err(WireError::param(
                    sp.render(),
                    "stop_sequences: each stop sequence must contain non-whitespace",
                ));
            }
        }
    }
    if let Some(md) = field(body, "metadata") {
        let p = Path::Key(&root, "metadata");
        optional_str(as_object(md, &p)?, &p, "user_id")?;
    }
    if let Some(tier) = optional_str(body, &root, "service_tier")? {
        one_of(
            tier,
            &Path::Key(&root, "service_tier"),
            &["auto", "standard_only"],
        )?;
    }
    optional_str(body, &root, "container")?;
    Ok(())
}

/// Validates a `POST /v1/messages/count_tokens` body.
pub fn count_tokens_request(body: &Map<String, Value>) -> Result<(), WireError> {
    common(body, None)
}

/// The rules both endpoints share.
fn common(body: &Map<String, Value>, max_tokens: Option<i64>) -> Result<(), WireError> {
    let root = Path::Root;
    required_str(body, &root, "model")?;
    let mut breakpoints = Breakpoints::default();
    breakpoints.check(body, &root)?;
    let messages_p = Path::Key(&root, "messages");
    let messages = as_array(required(body, &root, "messages")?, &messages_p)?;
    if messages.is_empty() {
        return Err(err(
            &messages_p,
            "List should have at least 1 item after validation, not 0",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        message(
            m,
            &Path::Index(&messages_p, i),
            i + 1 == messages.len(),
            &mut breakpoints,
        )?;
    }
    if let Some(system) = field(body, "system") {
        let p = Path::Key(&root, "system");
        match system {
            Value::String(_) => {}
            Value::Array(blocks) => {
                for (i, b) in blocks.iter().enumerate() {
                    let bp = Path::Index(&p, i);
                    let obj = as_object(b, &bp)?;
                    let ty = required_str(obj, &bp, "type")?;
                    one_of(ty, &Path::Key(&bp, "type"), &["text"])?;
                    block(obj, ty, &bp, &mut breakpoints)?;
                }
            }
            other => return Err(expected(&p, "a valid string or a list of text blocks", other)),
        }
    }
    if let Some(tools) = field(body, "tools") {
        let p = Path::Key(&root, "tools");
        let tools = as_array(tools, &p)?;
        let mut names: Vec<&str> = Vec::with_capacity(tools.len());
        for (i, t) in tools.iter().enumerate() {
            let name = tool(t, &Path::Index(&p, i), &mut breakpoints)?;
            if names.contains(&name) {
                return Err(err(
                    &Path::Index(&p, i),
                    format_args!("Tool names must be unique; '{name}' repeats."),
                ));
            }
            names.push(name);
        }
    }
    if let Some(tc) = field(body, "tool_choice") {
        tool_choice(tc, &Path::Key(&root, "tool_choice"))?;
    }
    if let Some(th) = field(body, "thinking") {
        thinking(th, &Path::Key(&root, "thinking"), max_tokens)?;
    }
    if let Some(oc) = field(body, "output_config") {
        output_config(oc, &Path::Key(&root, "output_config"))?;
    }
    if breakpoints.0 > MAX_BREAKPOINTS {
        return Err(WireError::new(format!(
            "A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. Found {}.",
            breakpoints.0
        )));
    }
    Ok(())
}

fn message(m: &Value, p: &Path<'_>, last: bool, breakpoints: &mut Breakpoints) -> Result<(), WireError> {
    let obj = as_object(m, p)?;
    let role = required_str(obj, p, "role")?;
    one_of(role, &Path::Key(p, "role"), &["user", "assistant", "system"])?;
    let content_p = Path::Key(p, "content");
    let content = required(obj, p, "content")?;
    let non_empty_rule = || {
        err(
            p,
            "all messages must have non-empty content except for the optional final assistant message",
        )
    };
    match content {
        Value::String(s) => {
            if s.is_empty() && !(last && role == "assistant") {
                return Err(non_empty_rule());
            }
        }
        Value::Array(blocks) => {
            if blocks.is_empty() && !(last && role == "assistant") {
                return Err(non_empty_rule());
            }
            for (j, b) in blocks.iter().enumerate() {
                let bp = Path::Index(&content_p, j);
                let bobj = as_object(b, &bp)?;
                let ty = required_str(bobj, &bp, "type")?;
                let allowed = match ty {
                    "tool_result" => role == "user",
                    "tool_use" | "thinking" | "redacted_thinking" => role == "assistant",
                    _ => true,
                };
                if !allowed {
                    return Err(err(
                        &Path::Key(&bp, "type"),
                        format_args!("'{ty}' blocks are not allowed in '{role}' messages."),
                    ));
                }
                block(bobj, ty, &bp, breakpoints)?;
            }
        }
        other => {
            return Err(expected(
                &content_p,
                "a valid string or a list of content blocks",
                other,
            ));
        }
    }
    Ok(())
}

/// Checks one content block of a known type; unknown types pass untouched (they are kept opaque).
fn block(
    obj: &Map<String, Value>,
    ty: &str,
    p: &Path<'_>,
    breakpoints: &mut Breakpoints,
) -> Result<(), WireError> {
    breakpoints.check(obj, p)?;
    match ty {
        "text" => {
            let text = required_str(obj, p, "text")?;
            if text.is_empty() {
                return Err(err(
                    &Path::Key(p, "text"),
                    "text content blocks must be non-empty",
                ));
            }
        }
        "image" => {
            let sp = Path::Key(p, "source");
            let src = as_object(required(obj, p, "source")?, &sp)?;
            let kind = required_str(src, &sp, "type")?;
            match kind {
                "base64" => {
                    let mt = required_str(src, &sp, "media_type")?;
                    one_of(
                        mt,
                        &Path::Key(&sp, "media_type"),
                        &["image/jpeg", "image/png", "image/gif", "image/webp"],
                    )?;
                    required_str(src, &sp, "data")?;
                }
                "url" => {
                    required_str(src, &sp, "url")?;
                }
                "file" => {
                    required_str(src, &sp, "file_id")?;
                }
                _ => one_of(kind, &Path::Key(&sp, "type"), &["base64", "url", "file"])?,
            }
        }
        "document" => {
            let sp = Path::Key(p, "source");
            let src = as_object(required(obj, p, "source")?, &sp)?;
            required_str(src, &sp, "type")?;
        }
        "tool_use" | "server_tool_use" => {
            required_str(obj, p, "id")?;
            required_str(obj, p, "name")?;
            as_object(required(obj, p, "input")?, &Path::Key(p, "input"))?;
        }
        "tool_result" => {
            required_str(obj, p, "tool_use_id")?;
            optional_bool(obj, p, "is_error")?;
            if let Some(c) = field(obj, "content") {
                let cp = Path::Key(p, "content");
                match c {
                    Value::String(_) => {}
                    Value::Array(items) => {
                        for (k, item) in items.iter().enumerate() {
                            let ip = Path::Index(&cp, k);
                            let iobj = as_object(item, &ip)?;
                            let ity = required_str(iobj, &ip, "type")?;
                            one_of(
                                ity,
                                &Path::Key(&ip, "type"),
                                &["text", "image", "search_result", "document", "tool_reference"],
                            )?;
                            block(iobj, ity, &ip, breakpoints)?;
                        }
                    }
                    other => return Err(expected(&cp, "a valid string or a list of content blocks", other)),
                }
            }
        }
        "thinking" => {
            required_str(obj, p, "thinking")?;
            required_str(obj, p, "signature")?;
        }
        "redacted_thinking" => {
            required_str(obj, p, "data")?;
        }
        _ => {}
    }
    Ok(())
}

/// Returns the tool's name.
fn tool<'v>(t: &'v Value, p: &Path<'_>, breakpoints: &mut Breakpoints) -> Result<&'v str, WireError> {
    let obj = as_object(t, p)?;
    breakpoints.check(obj, p)?;
    let kind = optional_str(obj, p, "type")?;
    let name = required_str(obj, p, "name")?;
    if matches!(kind, None | Some("custom")) {
        if name.is_empty()
            || name.len() > 128
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err(
                &Path::Key(p, "name"),
                format_args!("String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$' (got '{name}')"),
            ));
        }
        optional_str(obj, p, "description")?;
        optional_bool(obj, p, "strict")?;
        as_object(required(obj, p, "input_schema")?, &Path::Key(p, "input_schema"))?;
    }
    Ok(name)
}

fn tool_choice(tc: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = as_object(tc, p)?;
    let ty = required_str(obj, p, "type")?;
    one_of(ty, &Path::Key(p, "type"), &["auto", "any", "tool", "none"])?;
    if ty == "tool" {
        required_str(obj, p, "name")?;
    }
    optional_bool(obj, p, "disable_parallel_tool_use")
}

fn thinking(th: &Value, p: &Path<'_>, max_tokens: Option<i64>) -> Result<(), WireError> {
    let obj = as_object(th, p)?;
    let ty = required_str(obj, p, "type")?;
    one_of(ty, &Path::Key(p, "type"), &["enabled", "disabled", "adaptive"])?;
    if let Some(d) = optional_str(obj, p, "display")? {
        one_of(d, &Path::Key(p, "display"), &["summarized", "omitted"])?;
    }
    if ty == "enabled" {
        let bp = Path::Key(p, "budget_tokens");
        let Some(budget) = integer_in(obj, p, "budget_tokens", 1024, i64::from(u32::MAX))? else {
            return Err(missing(&bp));
        };
        if let Some(max) = max_tokens
            && budget >= max
        {
            return Err(err(
                &bp,
                format_args!(
                    "`max_tokens` must be greater than `thinking.budget_tokens` ({budget} >= {max})."
                ),
            ));
        }
    }
    Ok(())
}

fn output_config(oc: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = as_object(oc, p)?;
    if let Some(e) = optional_str(obj, p, "effort")? {
        one_of(
            e,
            &Path::Key(p, "effort"),
            &["low", "medium", "high", "xhigh", "max"],
        )?;
    }
    if let Some(f) = field(obj, "format") {
        let fp = Path::Key(p, "format");
        let fobj = as_object(f, &fp)?;
        let ty = required_str(fobj, &fp, "type")?;
        one_of(ty, &Path::Key(&fp, "type"), &["json_schema"])?;
        as_object(required(fobj, &fp, "schema")?, &Path::Key(&fp, "schema"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), WireError> {
        messages_request(v.as_object().unwrap())
    }

    fn param_of(v: Value) -> String {
        check(v).unwrap_err().param.unwrap_or_default()
    }

    fn base() -> Value {
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = base();
        b[key] = value;
        b
    }

    fn msgs(m: Value) -> Value {
        with("messages", m)
    }

    #[test]
    fn accepts_a_realistic_request() {
        check(json!({
            "model": "claude-x",
            "max_tokens": 4096,
            "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral", "ttl": "1h"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/a.png"}},
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "redacted_thinking", "data": "xx"},
                    {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": [{"type": "text", "text": "42"}], "is_error": false},
                    {"type": "text", "text": "go on"}
                ]},
                {"role": "user", "content": "consecutive user turns are merged by the API"},
                {"role": "assistant", "content": ""}
            ],
            "temperature": 1, "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"],
            "stream": true, "metadata": {"user_id": "u1"},
            "tools": [
                {"name": "f", "description": "d", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}},
                {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}
            ],
            "tool_choice": {"type": "tool", "name": "f", "disable_parallel_tool_use": true},
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "service_tier": "auto",
            "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
            "some_future_field": {"kept": true}
        }))
        .unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(param_of(json!({"max_tokens": 1, "messages": []})), "model");
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "user", "content": "x"}]})),
            "max_tokens"
        );
        assert_eq!(param_of(json!({"model": "m", "max_tokens": 1})), "messages");
        assert_eq!(
            param_of(json!({"model": "m", "max_tokens": 1, "messages": []})),
            "messages"
        );
        assert_eq!(param_of(with("max_tokens", json!(-1))), "max_tokens");
        assert_eq!(param_of(with("max_tokens", json!(1.5))), "max_tokens");
        assert_eq!(
            param_of(msgs(json!([{"role": "tool", "content": "x"}]))),
            "messages[0].role"
        );
        assert_eq!(param_of(msgs(json!([{"role": "user"}]))), "messages[0].content");
        assert_eq!(
            param_of(msgs(json!([{"role": "user", "content": ""}]))),
            "messages[0]"
        );
        assert_eq!(
            param_of(msgs(json!([{"role": "user", "content": []}]))),
            "messages[0]"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "user", "content": [{"type": "text", "text": ""}]}])
            )),
            "messages[0].content[0].text"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "x"}}]}])
            )),
            "messages[0].content[0].source.media_type"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "user", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": {}}]}])
            )),
            "messages[0].content[0].type"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "assistant", "content": [{"type": "tool_use", "id": "a", "name": "f", "input": "{}"}]}])
            )),
            "messages[0].content[0].input"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "assistant", "content": [{"type": "thinking", "thinking": "x"}]}])
            )),
            "messages[0].content[0].signature"
        );
        assert_eq!(
            param_of(msgs(
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a", "content": [{"type": "video"}]}]}])
            )),
            "messages[0].content[0].content[0].type"
        );
        assert_eq!(param_of(with("temperature", json!(1.5))), "temperature");
        assert_eq!(param_of(with("top_p", json!(-0.1))), "top_p");
        assert_eq!(param_of(with("top_k", json!(-1))), "top_k");
        assert_eq!(param_of(with("stop_sequences", json!("END"))), "stop_sequences");
        assert_eq!(
            param_of(with("stop_sequences", json!(["ok", "\n"]))),
            "stop_sequences[1]"
        );
        assert_eq!(
            param_of(with("system", json!([{"type": "image"}]))),
            "system[0].type"
        );
        assert_eq!(
            param_of(with("tools", json!([{"name": "bad name", "input_schema": {}}]))),
            "tools[0].name"
        );
        assert_eq!(
            param_of(with("tools", json!([{"name": "f"}]))),
            "tools[0].input_schema"
        );
        assert_eq!(
            param_of(with(
                "tools",
                json!([{"name": "f", "input_schema": {}}, {"name": "f", "input_schema": {}}])
            )),
            "tools[1]"
        );
        assert_eq!(
            param_of(with("tools", json!([{"type": "bash_20250124"}]))),
            "tools[0].name"
        );
        assert_eq!(
            param_of(with("tool_choice", json!({"type": "required"}))),
            "tool_choice.type"
        );
        assert_eq!(
            param_of(with("tool_choice", json!({"type": "tool"}))),
            "tool_choice.name"
        );
        assert_eq!(param_of(with("tool_choice", json!("auto"))), "tool_choice");
        assert_eq!(
            param_of(with("thinking", json!({"type": "enabled", "budget_tokens": 512}))),
            "thinking.budget_tokens"
        );
        assert_eq!(
            param_of(with(
                "thinking",
                json!({"type": "enabled", "budget_tokens": 2048})
            )),
            "thinking.budget_tokens"
        );
        assert_eq!(
            param_of(with("thinking", json!({"type": "enabled"}))),
            "thinking.budget_tokens"
        );
        assert_eq!(param_of(with("thinking", json!({"type": "on"}))), "thinking.type");
        assert_eq!(param_of(with("service_tier", json!("priority"))), "service_tier");
        assert_eq!(
            param_of(with("metadata", json!({"user_id": 5}))),
            "metadata.user_id"
        );
        assert_eq!(
            param_of(with("output_config", json!({"effort": "extreme"}))),
            "output_config.effort"
        );
        assert_eq!(
            param_of(with("cache_control", json!({"type": "permanent"}))),
            "cache_control.type"
        );
    }

    #[test]
    fn messages_read_like_anthropic_errors() {
        let e = check(with("stop_sequences", json!([" "]))).unwrap_err();
        assert_eq!(
            e.message,
            "stop_sequences: each stop sequence must contain non-whitespace"
        );
        let e = check(msgs(json!([{"role": "user"}]))).unwrap_err();
        assert_eq!(e.message, "messages.0.content: Field required");
        let e = check(with("temperature", json!(2))).unwrap_err();
        assert_eq!(e.message, "temperature: Input should be less than or equal to 1");
    }

    #[test]
    fn counts_cache_breakpoints() {
        let cc = json!({"type": "ephemeral"});
        let block = json!({"type": "text", "text": "x", "cache_control": cc});
        let mut b = with("system", json!([block, block, block]));
        b["cache_control"] = cc.clone();
        check(b.clone()).unwrap();
        b["tools"] = json!([{"name": "f", "input_schema": {}, "cache_control": cc}]);
        let e = check(b).unwrap_err();
        assert!(e.message.contains("maximum of 4"), "{}", e.message);
    }

    #[test]
    fn nulls_mean_absent_and_count_tokens_needs_no_max_tokens() {
        let mut b = base();
        for k in [
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "tools",
            "tool_choice",
            "thinking",
            "system",
            "metadata",
        ] {
            b[k] = Value::Null;
        }
        check(b).unwrap();
        count_tokens_request(json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "thinking": {"type": "enabled", "budget_tokens": 5000}}).as_object().unwrap()).unwrap();
        assert!(count_tokens_request(json!({"model": "m"}).as_object().unwrap()).is_err());
    }
}
