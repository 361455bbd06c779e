//! Chat templates: the GGUF's own Jinja template (`tokenizer.chat_template`) rendered with minijinja,
//! with the helpers Hugging Face's renderer provides (`raise_exception`, `strftime_now`, `tojson`,
//! Python string / dict methods, `bos_token` / `eos_token`), `trim_blocks` and `lstrip_blocks` on.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::{Environment, ErrorKind, Value};

use crate::EngineError;

const NAME: &str = "chat";

/// A compiled chat template.
pub(crate) struct ChatTemplate {
    source: String,
    env: Result<Environment<'static>, String>,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    pub(crate) fn new(source: String, bos_token: String, eos_token: String) -> Self {
        let env = compile(&source);
        Self {
            source,
            env,
            bos_token,
            eos_token,
        }
    }

    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    pub(crate) fn render(
        &self,
        messages: &serde_json::Value,
        tools: Option<&serde_json::Value>,
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let env = self.env.as_ref().map_err(|e| EngineError::Template(e.clone()))?;
        if !messages.is_array() {
            return Err(EngineError::invalid_param("messages", "must be an array"));
        }
        let template = env
            .get_template(NAME)
            .map_err(|e| EngineError::Template(describe(&e)))?;
        let tools = match tools {
            Some(t) if !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()) => Value::from_serialize(t),
            _ => Value::UNDEFINED,
        };
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template
            .render(ctx)
            .map_err(|e| EngineError::Template(describe(&e)))
    }
}

fn describe(e: &minijinja::Error) -> String {
    match e.kind() {
        // `raise_exception("...")` from the template: its message is the useful part.
        ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid operation").to_owned(),
        _ => {
            let mut s = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                source = inner.source();
            }
            s
        }
    }
}

fn compile(source: &str) -> Result<Environment<'static>, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_function(
        "raise_exception",
        |msg: String| -> Result<Value, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        },
    );
    env.add_function("strftime_now", |format: String| -> String {
        strftime(&format, SystemTime::now())
    });
    env.add_filter("tojson", tojson);
    env.add_template_owned(NAME, source.to_owned())
        .map_err(|e| describe(&e))?;
    Ok(env)
}

/// `tojson` as Hugging Face's renderer does it: Python `json.dumps` separators (`", "`, `": "`),
/// non-ASCII kept, optional `indent`.
fn tojson(value: Value, kwargs: minijinja::value::Kwargs) -> Result<Value, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _: Option<bool> = kwargs.get("ensure_ascii")?;
    let _: Option<bool> = kwargs.get("sort_keys")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|e| minijinja::Error::new(ErrorKind::BadSerialization, e.to_string()))?;
    let mut out = String::new();
    write_json(&json, indent, 0, &mut out);
    Ok(Value::from_safe_string(out))
}

fn write_json(v: &serde_json::Value, indent: Option<usize>, depth: usize, out: &mut String) {
    use serde_json::Value as J;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v {
        J::Array(items) if !items.is_empty() => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        J::Object(map) if !map.is_empty() => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                out.push_str(&J::String(k.clone()).to_string());
                out.push_str(": ");
                write_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        other => out.push_str(&other.to_string()),
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// A small `strftime` (UTC) covering what chat templates use: `%Y %y %m %d %e %B %b %A %a %H %M %S %j %%`.
pub(crate) fn strftime(format: &str, at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = usize::try_from((days + 3).rem_euclid(7)).unwrap_or(0);
    let yday = days - days_from_civil(year, 1, 1) + 1;
    let month_name = MONTHS[usize::try_from(month - 1).unwrap_or(0) % 12];
    let day_name = DAYS[weekday % 7];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('-') => match chars.next() {
                Some('d') => out.push_str(&day.to_string()),
                Some('m') => out.push_str(&month.to_string()),
                Some(other) => {
                    out.push_str("%-");
                    out.push(other);
                }
                None => out.push_str("%-"),
            },
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(month_name.get(..3).unwrap_or(month_name)),
            Some('A') => out.push_str(day_name),
            Some('a') => out.push_str(day_name.get(..3).unwrap_or(day_name)),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem % 3600 / 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31). Howard Hinnant's algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn strftime_formats() {
        // 2024-02-29 13:05:09 UTC, a Thursday.
        let t = UNIX_EPOCH + Duration::from_secs(1_709_211_909);
        assert_eq!(strftime("%Y-%m-%d %H:%M:%S", t), "2024-02-29 13:05:09");
        assert_eq!(strftime("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime("%A %B %-d, %j %%", t), "Thursday February 29, 060 %");
    }

    #[test]
    fn renders_chatml_with_helpers() {
        let src = "{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no bad roles') }}{% endif %}\
<|im_start|>{{ m.role }}\n{{ m.content | trim }}<|im_end|>\n{% endfor %}\
{% if tools %}{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(src.into(), "<s>".into(), "</s>".into());
        let msgs = serde_json::json!([{"role": "user", "content": " hi "}]);
        let out = t.render(&msgs, None, true).unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
        let bad = serde_json::json!([{"role": "bad", "content": "x"}]);
        match t.render(&bad, None, false) {
            Err(EngineError::Template(m)) => assert!(m.contains("no bad roles"), "{m}"),
            other => panic!("{other:?}"),
        }
        let tools = serde_json::json!([{"type": "function", "function": {"name": "f"}}]);
        let out = t.render(&msgs, Some(&tools), false).unwrap();
        assert!(
            out.contains(r#"[{"type": "function", "function": {"name": "f"}}]"#),
            "{out}"
        );
        let t = ChatTemplate::new(
            "{{ messages | tojson(indent=2) }}".into(),
            String::new(),
            String::new(),
        );
        let out = t
            .render(&serde_json::json!([{"a": [1, "é"]}]), None, false)
            .unwrap();
        assert_eq!(out, "[\n  {\n    \"a\": [\n      1,\n      \"é\"\n    ]\n  }\n]");
    }

    #[test]
    fn pycompat_methods() {
        let src =
            "{{ messages[0].content.strip().startswith('a') }}{{ messages[0].content.split('b') | length }}";
        let t = ChatTemplate::new(src.into(), String::new(), String::new());
        let msgs = serde_json::json!([{"role": "user", "content": " abc "}]);
        assert_eq!(t.render(&msgs, None, false).unwrap(), "True2");
    }
}
