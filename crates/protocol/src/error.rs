//! The one error every decoder and translator in this crate returns: a request the caller must fix.

use std::fmt;

/// A request that cannot be accepted, naming the offending field when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError {
    pub message: String,
    /// The field at fault, as a path (`messages[0].content`).
    pub param: Option<String>,
    /// A machine-readable code where the dialect has one (`model_not_found`, …).
    pub code: Option<&'static str>,
}

impl WireError {
    pub fn new(message: impl Into<String>) -> WireError {
        WireError {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn param(param: impl Into<String>, message: impl Into<String>) -> WireError {
        WireError {
            message: message.into(),
            param: Some(param.into()),
            code: None,
        }
    }

    pub fn with_code(mut self, code: &'static str) -> WireError {
        self.code = Some(code);
        self
    }
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WireError {}

/// A JSON body that did not parse, described without echoing it back.
pub fn json_syntax_error(e: &serde_json::Error) -> WireError {
    WireError::new(format!(
        "We could not parse the JSON body of your request: {} at line {} column {}.",
        match e.classify() {
            serde_json::error::Category::Eof => "unexpected end of input",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "invalid data",
            serde_json::error::Category::Io => "read error",
        },
        e.line(),
        e.column()
    ))
    .with_code("invalid_json")
}
