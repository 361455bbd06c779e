//! The OpenAI dialect.

pub mod chat;
pub mod completions;
pub mod responses;
pub mod validate;

use serde_json::{Map, Value};

use crate::error::{WireError, json_syntax_error};

/// Parses a request body into a JSON object, refusing anything else with a clear message.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, WireError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(WireError::new(format!(
            "The request body must be a JSON object, but got {}.",
            validate::type_name(&other)
        ))),
        Err(e) => Err(json_syntax_error(&e)),
    }
}

/// Deserialises an already validated body into a typed request.
pub fn from_object<T: serde::de::DeserializeOwned>(body: Map<String, Value>) -> Result<T, WireError> {
    serde_json::from_value(Value::Object(body)).map_err(|e| WireError::new(format!("Invalid request: {e}")))
}
