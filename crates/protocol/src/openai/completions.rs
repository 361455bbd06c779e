//! OpenAI legacy Completions (`/v1/completions`) and Embeddings (`/v1/embeddings`): validation and the
//! few typed pieces the gateway builds answers from.

use serde_json::{Map, Value, json};

use super::validate::{
    Path, boolean, field, integer_in, logit_bias, number_in, required_string, stop, stream_options, string,
    type_name,
};
use crate::error::WireError;

/// A prompt or embedding input, in the shapes OpenAI accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Tokens(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn token(v: &Value, p: &Path<'_>) -> Result<u32, WireError> {
    v.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(|| {
        p.err(format!(
            "Invalid token: expected a non-negative integer, but got {}.",
            type_name(v)
        ))
    })
}

/// Parses `prompt` / `input`: a string, an array of strings, an array of token ids, or an array of
/// token arrays. `allow_empty_string` is false for embeddings, where OpenAI refuses "".
pub(crate) fn parse_inputs(
    v: &Value,
    p: &Path<'_>,
    allow_empty_string: bool,
    max_items: usize,
) -> Result<Inputs, WireError> {
    let empty = |p: &Path<'_>| {
        p.err(format!(
            "Invalid '{}': empty string. Expected a non-empty string.",
            p.render()
        ))
    };
    match v {
        Value::String(s) => {
            if s.is_empty() && !allow_empty_string {
                return Err(empty(p));
            }
            Ok(Inputs::Texts(vec![s.clone()]))
        }
        Value::Array(items) => {
            if items.is_empty() {
                return Err(p.err(format!(
                    "Invalid '{}': empty array. Expected an array with minimum length 1.",
                    p.render()
                )));
            }
            if items.len() > max_items {
                return Err(p.err(format!(
                    "Invalid '{}': array too long. Expected at most {max_items} items, but got {}.",
                    p.render(),
                    items.len()
                )));
            }
            match &items[0] {
                Value::String(_) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, it) in items.iter().enumerate() {
                        let ip = Path::Index(p, i);
                        match it {
                            Value::String(s) if s.is_empty() && !allow_empty_string => {
                                return Err(empty(&ip));
                            }
                            Value::String(s) => out.push(s.clone()),
                            other => {
                                return Err(ip.err(format!(
                                    "Invalid type: expected a string, but got {}.",
                                    type_name(other)
                                )));
                            }
                        }
                    }
                    Ok(Inputs::Texts(out))
                }
                Value::Number(_) => {
                    let toks = items
                        .iter()
                        .enumerate()
                        .map(|(i, t)| token(t, &Path::Index(p, i)))
                        .collect::<Result<_, _>>()?;
                    Ok(Inputs::Tokens(vec![toks]))
                }
                Value::Array(_) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (i, it) in items.iter().enumerate() {
                        let ip = Path::Index(p, i);
                        let Value::Array(toks) = it else {
                            return Err(ip.err(format!(
                                "Invalid type: expected an array of token ids, but got {}.",
                                type_name(it)
                            )));
                        };
                        if toks.is_empty() {
                            return Err(ip.err("Invalid token array: empty."));
                        }
                        out.push(
                            toks.iter()
                                .enumerate()
                                .map(|(j, t)| token(t, &Path::Index(&ip, j)))
                                .collect::<Result<_, _>>()?,
                        );
                    }
                    Ok(Inputs::Tokens(out))
                }
                other => Err(Path::Index(p, 0).err(format!(
                    "Invalid type: expected a string, a token id or a token array, but got {}.",
                    type_name(other)
                ))),
            }
        }
        other => Err(p.err(format!(
            "Invalid type for '{}': expected a string or an array, but got {}.",
            p.render(),
            type_name(other)
        ))),
    }
}

/// Validates a `/v1/completions` body and returns its prompts.
pub fn completion_request(body: &Map<String, Value>) -> Result<Inputs, WireError> {
    let root = Path::Root;
    required_string(body, &root, "model")?;
    let pp = Path::Key(&root, "prompt");
    let prompts = match field(body, "prompt") {
        Some(v) => parse_inputs(v, &pp, true, 2048)?,
        None => return Err(pp.err("Missing required parameter: 'prompt'.")),
    };
    number_in(body, &root, "temperature", 0.0, 2.0)?;
    number_in(body, &root, "top_p", 0.0, 1.0)?;
    number_in(body, &root, "presence_penalty", -2.0, 2.0)?;
    number_in(body, &root, "frequency_penalty", -2.0, 2.0)?;
    integer_in(body, &root, "n", 1, 128)?;
    integer_in(body, &root, "best_of", 0, 20)?;
    integer_in(body, &root, "max_tokens", 0, i64::MAX)?;
    integer_in(body, &root, "logprobs", 0, 5)?;
    integer_in(body, &root, "seed", i64::MIN, i64::MAX)?;
    integer_in(body, &root, "top_k", -1, i64::MAX)?;
    number_in(body, &root, "min_p", 0.0, 1.0)?;
    number_in(body, &root, "repetition_penalty", 0.0, f64::MAX)?;
    boolean(body, &root, "stream")?;
    boolean(body, &root, "echo")?;
    string(body, &root, "suffix")?;
    string(body, &root, "user")?;
    stop(body, &root, 4)?;
    logit_bias(body, &root)?;
    stream_options(body, &root)?;
    Ok(prompts)
}

/// The validated knobs of an embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: Inputs,
    pub base64: bool,
    pub dimensions: Option<u32>,
}

/// Validates a `/v1/embeddings` body.
pub fn embeddings_request(body: &Map<String, Value>) -> Result<EmbeddingsRequest, WireError> {
    let root = Path::Root;
    let model = required_string(body, &root, "model")?.to_string();
    let ip = Path::Key(&root, "input");
    let input = match field(body, "input") {
        Some(v) => parse_inputs(v, &ip, false, 2048)?,
        None => return Err(ip.err("Missing required parameter: 'input'.")),
    };
    let base64 = match field(body, "encoding_format") {
        None => false,
        Some(Value::String(s)) if s == "float" => false,
        Some(Value::String(s)) if s == "base64" => true,
        Some(_) => {
            return Err(Path::Key(&root, "encoding_format")
                .err("Invalid value for 'encoding_format': supported values are 'float' and 'base64'."));
        }
    };
    integer_in(body, &root, "dimensions", 1, i64::from(u32::MAX))?;
    string(body, &root, "user")?;
    let dimensions = field(body, "dimensions")
        .and_then(Value::as_u64)
        .and_then(|d| u32::try_from(d).ok());
    Ok(EmbeddingsRequest {
        model,
        input,
        base64,
        dimensions,
    })
}

/// One embedding as OpenAI renders it: floats, or base64 of little-endian f32s.
pub fn embedding_value(v: &[f32], base64: bool) -> Value {
    if base64 {
        use base64::Engine as _;
        let mut bytes = Vec::with_capacity(v.len() * 4);
        for x in v {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(v)
    }
}

/// Chat-style logprobs (`{"content": [{token, logprob, bytes, top_logprobs}]}`) in the legacy
/// completions shape (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`), starting at `offset`.
pub fn legacy_logprobs(chat: &Value, offset: &mut usize) -> Value {
    let mut tokens = Vec::new();
    let mut token_logprobs = Vec::new();
    let mut top = Vec::new();
    let mut text_offset = Vec::new();
    for item in chat
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let tok = item.get("token").and_then(Value::as_str).unwrap_or_default();
        tokens.push(json!(tok));
        token_logprobs.push(item.get("logprob").cloned().unwrap_or(Value::Null));
        let mut alts = Map::new();
        for alt in item
            .get("top_logprobs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = alt.get("token").and_then(Value::as_str) {
                alts.insert(t.to_string(), alt.get("logprob").cloned().unwrap_or(Value::Null));
            }
        }
        top.push(Value::Object(alts));
        text_offset.push(json!(*offset));
        *offset += tok.len();
    }
    json!({"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": text_offset})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn prompts_in_every_shape() {
        let p = |v: Value| completion_request(&obj(json!({"model": "m", "prompt": v})));
        assert_eq!(p(json!("hi")).unwrap(), Inputs::Texts(vec!["hi".into()]));
        assert_eq!(
            p(json!(["a", "b"])).unwrap(),
            Inputs::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(p(json!([1, 2])).unwrap(), Inputs::Tokens(vec![vec![1, 2]]));
        assert_eq!(
            p(json!([[1], [2, 3]])).unwrap(),
            Inputs::Tokens(vec![vec![1], vec![2, 3]])
        );
        assert_eq!(
            p(json!([1, "a"])).unwrap_err().param.as_deref(),
            Some("prompt[1]")
        );
        assert_eq!(p(json!({})).unwrap_err().param.as_deref(), Some("prompt"));
        assert_eq!(
            completion_request(&obj(json!({"model": "m"})))
                .unwrap_err()
                .param
                .as_deref(),
            Some("prompt")
        );
        assert_eq!(
            completion_request(&obj(json!({"model": "m", "prompt": "x", "logprobs": 6})))
                .unwrap_err()
                .param
                .as_deref(),
            Some("logprobs")
        );
    }

    #[test]
    fn embeddings_rules() {
        let e = |v: Value| embeddings_request(&obj(v));
        let ok = e(json!({"model": "m", "input": ["a"], "encoding_format": "base64"})).unwrap();
        assert!(ok.base64);
        assert_eq!(
            e(json!({"model": "m", "input": ""}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("input")
        );
        assert_eq!(
            e(json!({"model": "m", "input": ["a", ""]}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("input[1]")
        );
        assert_eq!(
            e(json!({"model": "m", "input": "a", "encoding_format": "hex"}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("encoding_format")
        );
        assert_eq!(
            e(json!({"model": "m", "input": "a", "dimensions": 0}))
                .unwrap_err()
                .param
                .as_deref(),
            Some("dimensions")
        );
    }

    #[test]
    fn base64_is_little_endian_f32() {
        let v = embedding_value(&[1.0, -0.5], true);
        assert_eq!(v, json!("AACAPwAAAL8="));
    }
}
