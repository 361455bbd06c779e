//! `${VAR}` and `${VAR:-default}` expansion on the raw TOML text, before parsing.
//!
//! Expansion happens inside strings and bare values, never inside comments (so a comment may mention
//! `${VAR}` freely). A value spliced into a `"…"` string is escaped so it cannot end the string; one
//! spliced into a `'…'` literal string must not contain `'` or a newline. Line numbers do not move, so
//! errors found after parsing still point at the right line of the file.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpolationError {
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Normal,
    Basic,
    Literal,
    MultiBasic,
    MultiLiteral,
    Comment,
}

/// Expands variables using `lookup` (the process environment in production).
pub fn interpolate(
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InterpolationError> {
    let mut out = String::with_capacity(text.len());
    let mut state = State::Normal;
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut line = 1;
    let mut line_start = 0;
    while i < bytes.len() {
        let rest = &text[i..];
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
            line_start = i + 1;
            if matches!(state, State::Comment | State::Basic | State::Literal) {
                state = State::Normal;
            }
            out.push('\n');
            i += 1;
            continue;
        }
        match state {
            State::Comment => {
                let ch_len = utf8_len(b);
                out.push_str(&text[i..i + ch_len]);
                i += ch_len;
                continue;
            }
            State::Normal => {
                if b == b'#' {
                    state = State::Comment;
                } else if rest.starts_with("\"\"\"") {
                    out.push_str("\"\"\"");
                    i += 3;
                    state = State::MultiBasic;
                    continue;
                } else if rest.starts_with("'''") {
                    out.push_str("'''");
                    i += 3;
                    state = State::MultiLiteral;
                    continue;
                } else if b == b'"' {
                    state = State::Basic;
                } else if b == b'\'' {
                    state = State::Literal;
                }
            }
            State::Basic | State::MultiBasic => {
                if b == b'\\' && i + 1 < bytes.len() {
                    out.push('\\');
                    let ch_len = utf8_len(bytes[i + 1]);
                    out.push_str(&text[i + 1..i + 1 + ch_len]);
                    i += 1 + ch_len;
                    continue;
                }
                if state == State::MultiBasic && rest.starts_with("\"\"\"") {
                    out.push_str("\"\"\"");
                    i += 3;
                    state = State::Normal;
                    continue;
                }
                if state == State::Basic && b == b'"' {
                    state = State::Normal;
                }
            }
            State::Literal | State::MultiLiteral => {
                if state == State::MultiLiteral && rest.starts_with("'''") {
                    out.push_str("'''");
                    i += 3;
                    state = State::Normal;
                    continue;
                }
                if state == State::Literal && b == b'\'' {
                    state = State::Normal;
                }
            }
        }
        if rest.starts_with("${") {
            let column = i - line_start + 1;
            let err = |message: String, hint: &str| InterpolationError {
                line,
                column,
                message,
                hint: hint.to_string(),
            };
            let Some(end) = rest.find('}') else {
                return Err(err(
                    "unterminated `${`".into(),
                    "close it with `}`: ${NAME} or ${NAME:-default}",
                ));
            };
            let inner = &rest[2..end];
            if inner.contains('\n') {
                return Err(err(
                    "unterminated `${`".into(),
                    "close it with `}` on the same line",
                ));
            }
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            if name.is_empty() || !name.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_') {
                return Err(err(
                    format!("`${{{inner}}}` is not a valid variable reference"),
                    "names are letters, digits and underscores: ${NAME} or ${NAME:-default}",
                ));
            }
            let value = match (lookup(name), default) {
                (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                (Some(v), _) => v,
                (None, Some(d)) => d.to_string(),
                (None, None) => {
                    return Err(err(
                        format!("environment variable `{name}` is not set"),
                        &format!("set {name}, or give a default with ${{{name}:-default}}"),
                    ));
                }
            };
            match state {
                State::Basic | State::MultiBasic => escape_basic(&value, &mut out),
                State::Literal | State::MultiLiteral => {
                    if value.contains('\'') || (state == State::Literal && value.contains('\n')) {
                        return Err(err(
                            format!("the value of `{name}` cannot go inside a '…' string"),
                            "use a \"…\" string around the variable instead",
                        ));
                    }
                    out.push_str(&value);
                }
                _ => {
                    if value.contains('\n') {
                        return Err(err(
                            format!("the value of `{name}` has a newline"),
                            "put the variable inside a \"…\" string",
                        ));
                    }
                    out.push_str(&value);
                }
            }
            i += end + 1;
            continue;
        }
        let ch_len = utf8_len(b);
        out.push_str(&text[i..i + ch_len]);
        i += ch_len;
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

fn escape_basic(value: &str, out: &mut String) {
    for ch in value.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-\"quoted\"\\".into()),
            "EMPTY" => Some(String::new()),
            "PORT" => Some("8421".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_in_strings_and_values_but_not_comments() {
        let src = "a = \"${KEY}\" # ${NOT_SET}\nb = ${PORT}\nc = \"${MISSING:-dflt}\"\nd = \"${EMPTY:-x}\"\ne = '${PORT}'\n";
        let out = interpolate(src, &env).unwrap();
        assert_eq!(
            out,
            "a = \"sk-\\\"quoted\\\"\\\\\" # ${NOT_SET}\nb = 8421\nc = \"dflt\"\nd = \"x\"\ne = '8421'\n"
        );
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("sk-\"quoted\"\\"));
    }

    #[test]
    fn an_unset_variable_without_default_names_line_and_hint() {
        let err = interpolate("[auth]\nmaster_key = \"${SWITCHYARD_TEST_UNSET}\"\n", &env).unwrap_err();
        assert_eq!(err.line, 2);
        assert_eq!(err.column, 15);
        assert!(err.message.contains("SWITCHYARD_TEST_UNSET"));
        assert!(err.hint.contains("${SWITCHYARD_TEST_UNSET:-default}"));
    }

    #[test]
    fn escaped_quotes_do_not_confuse_the_scanner() {
        let out = interpolate("a = \"x\\\"#\" # c ${NOPE}\nb = \"${PORT}\"", &env).unwrap();
        assert!(out.ends_with("b = \"8421\""));
    }
}
