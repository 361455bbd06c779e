//! Validation of OpenAI request bodies on the raw JSON, before any typed parse, so that every refusal
//! names the exact field (`messages[2].content[0].image_url`) and states the rule from OpenAI's spec.

use serde_json::{Map, Value};

use crate::error::WireError;

/// Builds `param` paths without allocating until an error is reported.
#[derive(Clone, Copy)]
pub(crate) enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    pub(crate) fn render(&self) -> String {
        match self {
            Path::Root => String::new(),
            Path::Key(parent, key) => {
                let p = parent.render();
                if p.is_empty() {
                    (*key).to_string()
                } else {
                    format!("{p}.{key}")
                }
            }
            Path::Index(parent, i) => format!("{}[{i}]", parent.render()),
        }
    }

    pub(crate) fn err(&self, message: impl Into<String>) -> WireError {
        WireError::param(self.render(), message)
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(p: &Path<'_>, what: &str, got: &Value) -> WireError {
    p.err(format!(
        "Invalid type for '{}': expected {what}, but got {}.",
        p.render(),
        type_name(got)
    ))
}

/// A present, non-null field.
pub(crate) fn field<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    member(obj, key).filter(|v| !v.is_null())
}

/// A member by name. A request's objects are small, and checking one looks up every field it may have,
/// most of them absent: comparing a few names is cheaper than hashing each one for the map's index.
pub(crate) fn member<'v>(obj: &'v Map<String, Value>, key: &str) -> Option<&'v Value> {
    if obj.len() <= 16 {
        obj.iter().find_map(|(k, v)| (k == key).then_some(v))
    } else {
        obj.get(key)
    }
}

pub(crate) fn number_in(
    obj: &Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
    min: f64,
    max: f64,
) -> Result<(), WireError> {
    let Some(v) = field(obj, key) else { return Ok(()) };
    let p = Path::Key(parent, key);
    let Some(x) = v.as_f64() else {
        return Err(expected(&p, "a number", v));
    };
    if !(min..=max).contains(&x) {
        return Err(p.err(format!(
            "Invalid value for '{key}': {x} is out of range; it must be between {min} and {max}."
        )));
    }
    Ok(())
}

pub(crate) fn integer_in(
    obj: &Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<(), WireError> {
    let Some(v) = field(obj, key) else { return Ok(()) };
    let p = Path::Key(parent, key);
    let x = match v {
        Value::Number(n) => match n.as_i64() {
            Some(x) => x,
            None if n.as_u64().is_some() => i64::MAX,
            None => return Err(expected(&p, "an integer", v)),
        },
        _ => return Err(expected(&p, "an integer", v)),
    };
    if x < min {
        return Err(p.err(format!(
            "Invalid value for '{key}': {x} is less than the minimum of {min}."
        )));
    }
    if x > max {
        return Err(p.err(format!(
            "Invalid value for '{key}': {x} is greater than the maximum of {max}."
        )));
    }
    Ok(())
}

pub(crate) fn boolean(obj: &Map<String, Value>, parent: &Path<'_>, key: &str) -> Result<(), WireError> {
    match field(obj, key) {
        None | Some(Value::Bool(_)) => Ok(()),
        Some(v) => Err(expected(&Path::Key(parent, key), "a boolean", v)),
    }
}

pub(crate) fn string(obj: &Map<String, Value>, parent: &Path<'_>, key: &str) -> Result<(), WireError> {
    match field(obj, key) {
        None | Some(Value::String(_)) => Ok(()),
        Some(v) => Err(expected(&Path::Key(parent, key), "a string", v)),
    }
}

pub(crate) fn required_string<'v>(
    obj: &'v Map<String, Value>,
    parent: &Path<'_>,
    key: &str,
) -> Result<&'v str, WireError> {
    let p = Path::Key(parent, key);
    match member(obj, key) {
        Some(Value::String(s)) => Ok(s),
        None | Some(Value::Null) => Err(p.err(format!("Missing required parameter: '{}'.", p.render()))),
        Some(v) => Err(expected(&p, "a string", v)),
    }
}

pub(crate) fn object<'v>(v: &'v Value, p: &Path<'_>) -> Result<&'v Map<String, Value>, WireError> {
    v.as_object().ok_or_else(|| expected(p, "an object", v))
}

/// `stop`: a string or an array of up to `max` strings.
pub(crate) fn stop(obj: &Map<String, Value>, parent: &Path<'_>, max: usize) -> Result<(), WireError> {
    let Some(v) = field(obj, "stop") else {
        return Ok(());
    };
    let p = Path::Key(parent, "stop");
    match v {
        Value::String(_) => Ok(()),
        Value::Array(items) => {
            if items.len() > max {
                return Err(p.err(format!(
                    "Invalid 'stop': array too long. Expected an array with maximum length {max}, but got an array with length {} instead.",
                    items.len()
                )));
            }
            for (i, item) in items.iter().enumerate() {
                if !item.is_string() {
                    return Err(expected(&Path::Index(&p, i), "a string", item));
                }
            }
            Ok(())
        }
        _ => Err(expected(&p, "a string or an array of strings", v)),
    }
}

const ROLES: &str = "'system', 'developer', 'user', 'assistant', 'tool' and 'function'";

/// Validates a `/v1/chat/completions` body against the constraints of OpenAI's spec.
pub fn chat_request(body: &Map<String, Value>) -> Result<(), WireError> {
    let root = Path::Root;
    required_string(body, &root, "model")?;
    let messages_p = Path::Key(&root, "messages");
    let messages = match member(body, "messages") {
        Some(Value::Array(m)) => m,
        None | Some(Value::Null) => return Err(messages_p.err("Missing required parameter: 'messages'.")),
        Some(v) => return Err(expected(&messages_p, "an array", v)),
    };
    if messages.is_empty() {
        return Err(messages_p.err(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        message(m, &Path::Index(&messages_p, i))?;
    }
    number_in(body, &root, "temperature", 0.0, 2.0)?;
    number_in(body, &root, "top_p", 0.0, 1.0)?;
    number_in(body, &root, "presence_penalty", -2.0, 2.0)?;
    number_in(body, &root, "frequency_penalty", -2.0, 2.0)?;
    integer_in(body, &root, "n", 1, 128)?;
    integer_in(body, &root, "max_tokens", 1, i64::MAX)?;
    integer_in(body, &root, "max_completion_tokens", 1, i64::MAX)?;
    integer_in(body, &root, "top_logprobs", 0, 20)?;
    integer_in(body, &root, "seed", i64::MIN, i64::MAX)?;
    integer_in(body, &root, "top_k", -1, i64::MAX)?;
    number_in(body, &root, "min_p", 0.0, 1.0)?;
    number_in(body, &root, "repetition_penalty", 0.0, f64::MAX)?;
    boolean(body, &root, "stream")?;
    boolean(body, &root, "logprobs")?;
    boolean(body, &root, "parallel_tool_calls")?;
    boolean(body, &root, "store")?;
    string(body, &root, "user")?;
    string(body, &root, "reasoning_effort")?;
    stop(body, &root, 4)?;
    if field(body, "top_logprobs").is_some() && field(body, "logprobs") != Some(&Value::Bool(true)) {
        return Err(Path::Key(&root, "top_logprobs").err(
            "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is used.",
        ));
    }
    logit_bias(body, &root)?;
    stream_options(body, &root)?;
    if let Some(tools) = field(body, "tools") {
        let p = Path::Key(&root, "tools");
        let Value::Array(tools) = tools else {
            return Err(expected(&p, "an array", tools));
        };
        for (i, t) in tools.iter().enumerate() {
            tool(t, &Path::Index(&p, i))?;
        }
    }
    if let Some(tc) = field(body, "tool_choice") {
        tool_choice(tc, &Path::Key(&root, "tool_choice"))?;
    }
    if let Some(rf) = field(body, "response_format") {
        response_format(rf, &Path::Key(&root, "response_format"))?;
    }
    Ok(())
}

pub(crate) fn logit_bias(body: &Map<String, Value>, root: &Path<'_>) -> Result<(), WireError> {
    let Some(v) = field(body, "logit_bias") else {
        return Ok(());
    };
    let p = Path::Key(root, "logit_bias");
    let obj = object(v, &p)?;
    for (k, bias) in obj {
        let bp = Path::Key(&p, k);
        if k.parse::<u32>().is_err() {
            return Err(bp.err(format!("Invalid key in 'logit_bias': '{k}' is not a token id.")));
        }
        match bias.as_f64() {
            Some(b) if (-100.0..=100.0).contains(&b) => {}
            Some(b) => {
                return Err(bp.err(format!(
                    "Invalid value in 'logit_bias': {b} for token {k} is out of range; it must be between -100 and 100."
                )));
            }
            None => return Err(expected(&bp, "a number", bias)),
        }
    }
    Ok(())
}

pub(crate) fn stream_options(body: &Map<String, Value>, root: &Path<'_>) -> Result<(), WireError> {
    let Some(so) = field(body, "stream_options") else {
        return Ok(());
    };
    let p = Path::Key(root, "stream_options");
    let obj = object(so, &p)?;
    if field(body, "stream") != Some(&Value::Bool(true)) {
        return Err(p.err(
            "Invalid value for 'stream_options': 'stream_options' is only allowed when 'stream' is true.",
        ));
    }
    boolean(obj, &p, "include_usage")?;
    boolean(obj, &p, "include_obfuscation")?;
    Ok(())
}

fn message(m: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = object(m, p)?;
    let role_p = Path::Key(p, "role");
    let role = match member(obj, "role") {
        Some(Value::String(r)) => r.as_str(),
        None | Some(Value::Null) => {
            return Err(role_p.err(format!("Missing required parameter: '{}'.", role_p.render())));
        }
        Some(v) => return Err(expected(&role_p, "a string", v)),
    };
    string(obj, p, "name")?;
    let content_p = Path::Key(p, "content");
    let content = field(obj, "content");
    match role {
        "system" | "developer" => {
            let Some(c) = content else {
                return Err(content_p.err(format!("Missing required parameter: '{}'.", content_p.render())));
            };
            content_parts(c, &content_p, &["text"])?;
        }
        "user" => {
            let Some(c) = content else {
                return Err(content_p.err(format!("Missing required parameter: '{}'.", content_p.render())));
            };
            content_parts(c, &content_p, &["text", "image_url", "input_audio", "file"])?;
        }
        "assistant" => {
            if let Some(c) = content {
                content_parts(c, &content_p, &["text", "refusal"])?;
            }
            string(obj, p, "refusal")?;
            string(obj, p, "reasoning_content")?;
            let has_calls = match field(obj, "tool_calls") {
                Some(Value::Array(calls)) => {
                    let cp = Path::Key(p, "tool_calls");
                    for (i, c) in calls.iter().enumerate() {
                        tool_call(c, &Path::Index(&cp, i))?;
                    }
                    !calls.is_empty()
                }
                Some(v) => return Err(expected(&Path::Key(p, "tool_calls"), "an array", v)),
                None => false,
            };
            if content.is_none()
                && !has_calls
                && field(obj, "function_call").is_none()
                && field(obj, "audio").is_none()
            {
                return Err(content_p.err(format!(
                    "Invalid value for '{}': an assistant message needs 'content' or 'tool_calls'.",
                    content_p.render()
                )));
            }
        }
        "tool" => {
            let Some(c) = content else {
                return Err(content_p.err(format!("Missing required parameter: '{}'.", content_p.render())));
            };
            content_parts(c, &content_p, &["text"])?;
            required_string(obj, p, "tool_call_id")?;
        }
        "function" => {
            required_string(obj, p, "name")?;
            if let Some(c) = content
                && !c.is_string()
            {
                return Err(expected(&content_p, "a string", c));
            }
        }
        other => {
            return Err(role_p.err(format!(
                "Invalid value: '{other}'. Supported values are: {ROLES}."
            )));
        }
    }
    Ok(())
}

fn content_parts(c: &Value, p: &Path<'_>, allowed: &[&str]) -> Result<(), WireError> {
    let parts = match c {
        Value::String(_) => return Ok(()),
        Value::Array(parts) => parts,
        other => return Err(expected(p, "a string or an array of content parts", other)),
    };
    for (i, part) in parts.iter().enumerate() {
        let pp = Path::Index(p, i);
        let obj = object(part, &pp)?;
        let ty = required_string(obj, &pp, "type")?;
        if !allowed.contains(&ty) {
            return Err(Path::Key(&pp, "type").err(format!(
                "Invalid value: '{ty}'. Supported values are: {}.",
                allowed
                    .iter()
                    .map(|a| format!("'{a}'"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        match ty {
            "text" => {
                required_string(obj, &pp, "text")?;
            }
            "refusal" => {
                required_string(obj, &pp, "refusal")?;
            }
            "image_url" => {
                let ip = Path::Key(&pp, "image_url");
                let Some(img) = field(obj, "image_url") else {
                    return Err(ip.err(format!("Missing required parameter: '{}'.", ip.render())));
                };
                let img = object(img, &ip)?;
                required_string(img, &ip, "url")?;
                if let Some(d) = field(img, "detail") {
                    match d.as_str() {
                        Some("auto" | "low" | "high") => {}
                        _ => {
                            return Err(Path::Key(&ip, "detail").err(
                                "Invalid value for 'detail': supported values are 'auto', 'low' and 'high'.",
                            ));
                        }
                    }
                }
            }
            "input_audio" => {
                let ap = Path::Key(&pp, "input_audio");
                let Some(a) = field(obj, "input_audio") else {
                    return Err(ap.err(format!("Missing required parameter: '{}'.", ap.render())));
                };
                let a = object(a, &ap)?;
                required_string(a, &ap, "data")?;
                required_string(a, &ap, "format")?;
            }
            "file" => {
                let fp = Path::Key(&pp, "file");
                let Some(f) = field(obj, "file") else {
                    return Err(fp.err(format!("Missing required parameter: '{}'.", fp.render())));
                };
                object(f, &fp)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn tool_call(c: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = object(c, p)?;
    required_string(obj, p, "id")?;
    let ty = match field(obj, "type") {
        None => "function",
        Some(Value::String(t)) => t.as_str(),
        Some(v) => return Err(expected(&Path::Key(p, "type"), "a string", v)),
    };
    match ty {
        "function" => {
            let fp = Path::Key(p, "function");
            let Some(f) = field(obj, "function") else {
                return Err(fp.err(format!("Missing required parameter: '{}'.", fp.render())));
            };
            let f = object(f, &fp)?;
            required_string(f, &fp, "name")?;
            required_string(f, &fp, "arguments")?;
        }
        "custom" => {
            let cp = Path::Key(p, "custom");
            let Some(f) = field(obj, "custom") else {
                return Err(cp.err(format!("Missing required parameter: '{}'.", cp.render())));
            };
            let f = object(f, &cp)?;
            required_string(f, &cp, "name")?;
            required_string(f, &cp, "input")?;
        }
        other => {
            return Err(Path::Key(p, "type").err(format!(
                "Invalid value: '{other}'. Supported values are: 'function' and 'custom'."
            )));
        }
    }
    Ok(())
}

fn tool(t: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = object(t, p)?;
    let ty = required_string(obj, p, "type")?;
    match ty {
        "function" => {
            let fp = Path::Key(p, "function");
            let Some(f) = field(obj, "function") else {
                return Err(fp.err(format!("Missing required parameter: '{}'.", fp.render())));
            };
            let f = object(f, &fp)?;
            let name = required_string(f, &fp, "name")?;
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(Path::Key(&fp, "name").err(format!(
                    "Invalid 'tools' function name '{name}': it must be 1 to 64 characters of a-z, A-Z, 0-9, underscores and dashes."
                )));
            }
            string(f, &fp, "description")?;
            boolean(f, &fp, "strict")?;
            if let Some(params) = field(f, "parameters") {
                object(params, &Path::Key(&fp, "parameters"))?;
            }
        }
        "custom" => {
            let cp = Path::Key(p, "custom");
            let Some(c) = field(obj, "custom") else {
                return Err(cp.err(format!("Missing required parameter: '{}'.", cp.render())));
            };
            let c = object(c, &cp)?;
            required_string(c, &cp, "name")?;
        }
        other => {
            return Err(Path::Key(p, "type").err(format!(
                "Invalid value: '{other}'. Supported values are: 'function' and 'custom'."
            )));
        }
    }
    Ok(())
}

fn tool_choice(tc: &Value, p: &Path<'_>) -> Result<(), WireError> {
    match tc {
        Value::String(s) => match s.as_str() {
            "none" | "auto" | "required" => Ok(()),
            other => Err(p.err(format!(
                "Invalid value: '{other}'. Supported values are: 'none', 'auto' and 'required'."
            ))),
        },
        Value::Object(obj) => {
            let ty = required_string(obj, p, "type")?;
            match ty {
                "function" => {
                    let fp = Path::Key(p, "function");
                    let Some(f) = field(obj, "function") else {
                        return Err(fp.err(format!("Missing required parameter: '{}'.", fp.render())));
                    };
                    required_string(object(f, &fp)?, &fp, "name")?;
                    Ok(())
                }
                "custom" => {
                    let cp = Path::Key(p, "custom");
                    let Some(c) = field(obj, "custom") else {
                        return Err(cp.err(format!("Missing required parameter: '{}'.", cp.render())));
                    };
                    required_string(object(c, &cp)?, &cp, "name")?;
                    Ok(())
                }
                "allowed_tools" => {
                    let ap = Path::Key(p, "allowed_tools");
                    let Some(a) = field(obj, "allowed_tools") else {
                        return Err(ap.err(format!("Missing required parameter: '{}'.", ap.render())));
                    };
                    let a = object(a, &ap)?;
                    match field(a, "mode").and_then(Value::as_str) {
                        Some("auto" | "required") => {}
                        _ => {
                            return Err(Path::Key(&ap, "mode")
                                .err("Invalid value for 'mode': supported values are 'auto' and 'required'."));
                        }
                    }
                    match field(a, "tools") {
                        Some(Value::Array(_)) => Ok(()),
                        Some(v) => Err(expected(&Path::Key(&ap, "tools"), "an array", v)),
                        None => Err(Path::Key(&ap, "tools").err("Missing required parameter: 'tools'.")),
                    }
                }
                other => Err(Path::Key(p, "type").err(format!(
                    "Invalid value: '{other}'. Supported values are: 'function', 'custom' and 'allowed_tools'."
                ))),
            }
        }
        other => Err(expected(p, "a string or an object", other)),
    }
}

fn response_format(rf: &Value, p: &Path<'_>) -> Result<(), WireError> {
    let obj = object(rf, p)?;
    let ty = required_string(obj, p, "type")?;
    match ty {
        "text" | "json_object" => Ok(()),
        "json_schema" => {
            let sp = Path::Key(p, "json_schema");
            let Some(s) = field(obj, "json_schema") else {
                return Err(sp.err(format!("Missing required parameter: '{}'.", sp.render())));
            };
            let s = object(s, &sp)?;
            required_string(s, &sp, "name")?;
            boolean(s, &sp, "strict")?;
            if let Some(schema) = field(s, "schema") {
                object(schema, &Path::Key(&sp, "schema"))?;
            }
            Ok(())
        }
        other => Err(Path::Key(p, "type").err(format!(
            "Invalid value: '{other}'. Supported values are: 'text', 'json_object' and 'json_schema'."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<(), WireError> {
        chat_request(v.as_object().unwrap())
    }

    fn param_of(v: Value) -> String {
        check(v).unwrap_err().param.unwrap()
    }

    /// The scan for small objects and the index for large ones find the same members.
    #[test]
    fn member_agrees_with_the_index_at_every_size() {
        for n in 0..40 {
            let obj: Map<String, Value> = (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
            for i in 0..n + 3 {
                let k = format!("k{i}");
                assert_eq!(member(&obj, &k), obj.get(&k), "{n} members, {k}");
            }
        }
    }

    fn base() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut b = base();
        b[key] = value;
        b
    }

    #[test]
    fn accepts_a_realistic_request() {
        check(json!({
            "model": "m",
            "messages": [
                {"role": "developer", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA", "detail": "low"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "temperature": 0, "top_p": 1, "n": 2, "stop": ["a", "b"], "max_tokens": 5,
            "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
            "logprobs": true, "top_logprobs": 3, "logit_bias": {"50256": -100},
            "some_future_field": {"kept": true}
        }))
        .unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        assert_eq!(param_of(json!({"messages": []})), "model");
        assert_eq!(param_of(json!({"model": "m"})), "messages");
        assert_eq!(param_of(json!({"model": "m", "messages": []})), "messages");
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"content": "x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "user"}]})),
            "messages[0].content"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
            "messages[0].content"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]})),
            "messages[0].content[0].type"
        );
        assert_eq!(
            param_of(
                json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]})
            ),
            "messages[0].content[0].image_url.url"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "tool", "content": "x"}]})),
            "messages[0].tool_call_id"
        );
        assert_eq!(
            param_of(json!({"model": "m", "messages": [{"role": "assistant"}]})),
            "messages[0].content"
        );
        assert_eq!(param_of(with("temperature", json!(2.5))), "temperature");
        assert_eq!(param_of(with("temperature", json!("hot"))), "temperature");
        assert_eq!(param_of(with("top_p", json!(1.1))), "top_p");
        assert_eq!(param_of(with("n", json!(0))), "n");
        assert_eq!(param_of(with("n", json!(1.5))), "n");
        assert_eq!(
            param_of(with("presence_penalty", json!(-2.1))),
            "presence_penalty"
        );
        assert_eq!(param_of(with("frequency_penalty", json!(3))), "frequency_penalty");
        assert_eq!(param_of(with("max_tokens", json!(0))), "max_tokens");
        assert_eq!(
            param_of(with("max_completion_tokens", json!(-1))),
            "max_completion_tokens"
        );
        assert_eq!(param_of(with("stop", json!(["a", "b", "c", "d", "e"]))), "stop");
        assert_eq!(param_of(with("stop", json!([1]))), "stop[0]");
        assert_eq!(
            param_of(with("stream_options", json!({"include_usage": true}))),
            "stream_options"
        );
        assert_eq!(
            param_of(with("tools", json!([{"type": "function"}]))),
            "tools[0].function"
        );
        assert_eq!(
            param_of(with(
                "tools",
                json!([{"type": "function", "function": {"name": "bad name"}}])
            )),
            "tools[0].function.name"
        );
        assert_eq!(param_of(with("tool_choice", json!("sometimes"))), "tool_choice");
        assert_eq!(
            param_of(with("tool_choice", json!({"type": "function"}))),
            "tool_choice.function"
        );
        assert_eq!(
            param_of(with("response_format", json!({"type": "yaml"}))),
            "response_format.type"
        );
        assert_eq!(
            param_of(with("response_format", json!({"type": "json_schema"}))),
            "response_format.json_schema"
        );
        assert_eq!(param_of(with("top_logprobs", json!(3))), "top_logprobs");
        assert_eq!(param_of(with("logit_bias", json!({"x": 1}))), "logit_bias.x");
        assert_eq!(param_of(with("logit_bias", json!({"1": 101}))), "logit_bias.1");
    }

    #[test]
    fn nulls_mean_absent() {
        let mut b = base();
        for k in [
            "temperature",
            "top_p",
            "n",
            "stop",
            "max_tokens",
            "tools",
            "tool_choice",
            "stream_options",
        ] {
            b[k] = Value::Null;
        }
        check(b).unwrap();
    }
}
