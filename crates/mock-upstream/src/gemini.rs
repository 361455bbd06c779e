//! Google Gemini (Generative Language API, `v1beta`) handlers: generateContent,
//! streamGenerateContent (SSE with `alt=sse`, else a streamed JSON array), embedContent,
//! batchEmbedContents, countTokens.
//!
//! Field names are read in camelCase or snake_case, as Google's JSON parser accepts both.

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::{
    Dialect, Frame, Plan, PlanInput, StreamFaultFrames, error_body, json_response, pieces, prelude_checked,
    sse_response, stream_response, words,
};
use crate::openai::embedding_for_text;
use crate::sigv4::percent_decode;
use crate::state::MockState;

const GARBAGE: &str = "data: this is not json\r\n\r\n";
const THINKING_TEXT: &str = "thinking...";
const DEFAULT_EMBED_DIMS: usize = 8;

fn snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// `v[camel]`, or `v[camel_as_snake]`.
fn field<'a>(v: &'a Value, camel: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake(camel)))
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then(|| percent_decode(&v.replace('+', " ")))
    })
}

fn gemini_error(status: u16, message: &str, details: Option<Value>) -> Response {
    let mut body = error_body(Dialect::Gemini, status, message);
    if let (Some(d), Some(err)) = (details, body.get_mut("error").and_then(Value::as_object_mut)) {
        err.insert("details".into(), d);
    }
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [(header::CONTENT_TYPE, "application/json; charset=UTF-8")],
        body.to_string(),
    )
        .into_response()
}

fn invalid(message: &str) -> Response {
    gemini_error(400, message, None)
}

/// `x-goog-api-key` header or `?key=` against `require_key`: a wrong key is a 400 (as Google sends),
/// no key at all a 403.
fn check_key(st: &MockState, headers: &HeaderMap, query: Option<&str>) -> Option<Response> {
    let key = st.require_key()?;
    let got = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| query_param(query, "key"));
    match got {
        Some(k) if k == key => None,
        Some(_) => Some(gemini_error(
            400,
            "API key not valid. Please pass a valid API key.",
            Some(json!([{
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "API_KEY_INVALID",
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"}
            }])),
        )),
        None => Some(gemini_error(
            403,
            "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.",
            None,
        )),
    }
}

/// `POST /v1beta/models/{model}:{method}` (the model segment may carry `+opt=val` options).
pub async fn models_post(
    State(st): State<MockState>,
    Path(rest): Path<String>,
    headers: HeaderMap,
    OriginalUri(uri): OriginalUri,
    raw: Bytes,
) -> Response {
    let Some((model, method)) = rest.rsplit_once(':') else {
        st.record("POST /v1beta/models", &uri.to_string(), &headers, &raw);
        let msg = format!("models/{rest} is not found for API version v1beta: missing ':method'.");
        return gemini_error(404, &msg, None);
    };
    st.record(
        &format!("POST /v1beta/models:{method}"),
        &uri.to_string(),
        &headers,
        &raw,
    );
    if let Some(r) = check_key(&st, &headers, uri.query()) {
        return r;
    }
    let ctx = match prelude_checked(&st, Dialect::Gemini, &headers, Some(&raw), Some(model)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    match method {
        "generateContent" => generate(&st, model, ctx, None),
        "streamGenerateContent" => {
            let sse = query_param(uri.query(), "alt").as_deref() == Some("sse");
            generate(&st, model, ctx, Some(sse))
        }
        "embedContent" => embed_content(&st, ctx),
        "batchEmbedContents" => batch_embed_contents(&st, ctx),
        "countTokens" => count_tokens(&st, ctx),
        other => {
            let msg = format!(
                "models/{model} is not found for API version v1beta, or is not supported for {other}. Call ListModels to see the list of available models and their supported methods."
            );
            gemini_error(404, &msg, None)
        }
    }
}

// ---------------------------------------------------------------- request reading

/// Text of one part for prompts and echoes (`text`, or a `functionResponse` as JSON).
fn part_text(p: &Value) -> Option<String> {
    if let Some(t) = p.get("text").and_then(Value::as_str) {
        return Some(t.to_string());
    }
    field(p, "functionResponse").map(|fr| fr.get("response").unwrap_or(&Value::Null).to_string())
}

fn parts_text(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(part_text).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// The error is an INVALID_ARGUMENT message.
fn validate_contents(contents: Option<&Value>, what: &str) -> Result<Vec<Value>, String> {
    let contents = match contents.and_then(Value::as_array) {
        Some(c) if !c.is_empty() => c.clone(),
        _ => return Err(format!("* {what}.contents: contents is not specified\n")),
    };
    for (i, c) in contents.iter().enumerate() {
        if let Some(role) = c.get("role").and_then(Value::as_str)
            && !matches!(role, "user" | "model" | "function" | "")
        {
            return Err("Please use a valid role: user, model.".to_string());
        }
        if c.get("parts").and_then(Value::as_array).is_none_or(Vec::is_empty) {
            return Err(format!(
                "* {what}.contents[{i}].parts: contents.parts must not be empty.\n"
            ));
        }
    }
    Ok(contents)
}

fn prompt_tokens(body: &Value, contents: &[Value]) -> u64 {
    let system = field(body, "systemInstruction").map_or(0, |s| words(&parts_text(s)));
    system + contents.iter().map(|c| words(&parts_text(c))).sum::<u64>()
}

fn generation_config(body: &Value) -> &Value {
    field(body, "generationConfig").unwrap_or(&Value::Null)
}

// ---------------------------------------------------------------- generateContent

struct Answer {
    /// Parts in order: thought, text, function calls.
    parts: Vec<Value>,
    finish: &'static str,
    usage: Value,
}

fn answer(st: &MockState, ctx: &crate::common::Ctx, contents: &[Value]) -> (Plan, Answer, Option<String>) {
    let body = &ctx.body;
    let last_user_text = contents
        .iter()
        .rev()
        .find(|c| {
            c.get("role")
                .and_then(Value::as_str)
                .is_none_or(|r| r == "user" || r.is_empty())
        })
        .map(parts_text)
        .unwrap_or_default();
    let tool_names = body
        .get("tools")
        .and_then(Value::as_array)
        .map(|ts| {
            ts.iter()
                .filter_map(|t| field(t, "functionDeclarations").and_then(Value::as_array))
                .flatten()
                .filter_map(|d| d.get("name").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let gen_cfg = generation_config(body);
    let mut plan = Plan::build(
        st,
        PlanInput {
            opts: &ctx.opts,
            body,
            last_user_text: last_user_text.clone(),
            prompt_tokens: prompt_tokens(body, contents),
            tool_names,
            supports_tools: true,
        },
    );
    // Structured output: a JSON answer unless the options chose the text.
    let json_mime = field(gen_cfg, "responseMimeType").and_then(Value::as_str) == Some("application/json");
    if json_mime
        && plan.tools.is_empty()
        && ctx.opts.get("tokens").is_none()
        && !ctx.opts.flag("echo_request")
    {
        let new = json!({"echo": last_user_text}).to_string();
        let old = plan.text.as_deref().map_or(0, words);
        plan.completion_tokens = plan.completion_tokens - old + words(&new);
        plan.text = Some(new);
    }
    plan.cap_output(field(gen_cfg, "maxOutputTokens").and_then(Value::as_u64));
    let include_thoughts = field(gen_cfg, "thinkingConfig")
        .and_then(|t| field(t, "includeThoughts"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let thought_text = plan
        .reasoning
        .clone()
        .or_else(|| include_thoughts.then(|| THINKING_TEXT.to_string()));
    let thoughts_tokens = thought_text.as_deref().map_or(0, words);
    let candidates_tokens = plan.completion_tokens - plan.reasoning_tokens;
    let mut usage = json!({
        "promptTokenCount": plan.prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": plan.prompt_tokens + candidates_tokens + thoughts_tokens,
    });
    if let Some(u) = usage.as_object_mut() {
        if thoughts_tokens > 0 {
            u.insert("thoughtsTokenCount".into(), json!(thoughts_tokens));
        }
        if plan.cached_tokens > 0 {
            u.insert("cachedContentTokenCount".into(), json!(plan.cached_tokens));
        }
    }
    let mut parts = Vec::new();
    let shown_thought = if include_thoughts { thought_text } else { None };
    if let Some(t) = &shown_thought {
        parts.push(json!({"text": t, "thought": true}));
    }
    if let Some(t) = &plan.text {
        parts.push(json!({"text": t}));
    }
    for t in &plan.tools {
        parts.push(json!({"functionCall": {"name": t.name, "args": t.input}}));
    }
    let finish = plan.finish.gemini();
    (plan, Answer { parts, finish, usage }, shown_thought)
}

fn response_id(seq: u64) -> String {
    format!("mockresp{seq}")
}

/// `stream`: `None` for generateContent, `Some(sse)` for streamGenerateContent.
fn generate(st: &MockState, model: &str, ctx: crate::common::Ctx, stream: Option<bool>) -> Response {
    let contents = match validate_contents(ctx.body.get("contents"), "GenerateContentRequest") {
        Ok(c) => c,
        Err(msg) => return invalid(&msg),
    };
    let (plan, ans, thought) = answer(st, &ctx, &contents);
    let rid = response_id(plan.seq);
    let chunk = |parts: Vec<Value>, last: bool| -> Value {
        let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let mut v = json!({"candidates": [], "modelVersion": model, "responseId": rid});
        if last {
            if let Some(c) = cand.as_object_mut() {
                c.insert("finishReason".into(), json!(ans.finish));
            }
            if let Some(o) = v.as_object_mut() {
                o.insert("usageMetadata".into(), ans.usage.clone());
            }
        }
        v["candidates"] = json!([cand]);
        v
    };
    let Some(sse) = stream else {
        let resp = chunk(ans.parts.clone(), true);
        return json_response(
            st,
            Dialect::Gemini,
            &ctx.opts,
            plan.seq,
            resp.to_string().into_bytes(),
        );
    };
    // One part per chunk: thought words, text words, whole function calls.
    let mut stream_parts: Vec<Value> = Vec::new();
    if let Some(t) = &thought {
        stream_parts.extend(pieces(t).into_iter().map(|p| json!({"text": p, "thought": true})));
    }
    if let Some(t) = &plan.text {
        stream_parts.extend(pieces(t).into_iter().map(|p| json!({"text": p})));
    }
    stream_parts.extend(
        ans.parts
            .iter()
            .filter(|p| p.get("functionCall").is_some())
            .cloned(),
    );
    if stream_parts.is_empty() {
        stream_parts.push(json!({"text": ""}));
    }
    let n = stream_parts.len();
    let chunks: Vec<Value> = stream_parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| chunk(vec![p], i + 1 == n))
        .collect();
    let err = error_body(
        Dialect::Gemini,
        503,
        "The model is overloaded. Please try again later.",
    );
    if sse {
        let frames = chunks
            .iter()
            .map(|c| Frame::content(format!("data: {c}\r\n\r\n")))
            .collect();
        sse_response(
            st,
            Dialect::Gemini,
            &ctx.opts,
            plan.seq,
            frames,
            format!("data: {err}\r\n\r\n"),
            GARBAGE,
        )
    } else {
        // Without `alt=sse` Google streams one JSON array.
        let mut frames: Vec<Frame> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| Frame::content(format!("{}{c}", if i == 0 { "[" } else { ",\r\n" })))
            .collect();
        frames.push(Frame::meta("]".to_string()));
        stream_response(
            st,
            Dialect::Gemini,
            &ctx.opts,
            plan.seq,
            frames,
            StreamFaultFrames {
                error: Bytes::from(format!(",\r\n{err}]")),
                garbage: Bytes::from_static(b",\r\nthis is not json"),
            },
            "application/json; charset=UTF-8",
        )
    }
}

// ---------------------------------------------------------------- embeddings, countTokens

/// The error is an INVALID_ARGUMENT message.
fn embed_one(req: &Value, what: &str) -> Result<Value, String> {
    let Some(content) = req.get("content").filter(|c| c.is_object()) else {
        return Err(format!("* {what}.content: content is not specified\n"));
    };
    let dims = field(req, "outputDimensionality")
        .and_then(Value::as_u64)
        .and_then(|d| usize::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(DEFAULT_EMBED_DIMS);
    Ok(json!({"values": embedding_for_text(&parts_text(content), dims)}))
}

fn embed_content(st: &MockState, ctx: crate::common::Ctx) -> Response {
    match embed_one(&ctx.body, "EmbedContentRequest") {
        Ok(e) => {
            let resp = json!({"embedding": e});
            json_response(st, Dialect::Gemini, &ctx.opts, 0, resp.to_string().into_bytes())
        }
        Err(msg) => invalid(&msg),
    }
}

fn batch_embed_contents(st: &MockState, ctx: crate::common::Ctx) -> Response {
    let Some(reqs) = ctx.body.get("requests").and_then(Value::as_array) else {
        return invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n");
    };
    let mut out = Vec::with_capacity(reqs.len());
    for (i, r) in reqs.iter().enumerate() {
        match embed_one(r, &format!("BatchEmbedContentsRequest.requests[{i}]")) {
            Ok(e) => out.push(e),
            Err(msg) => return invalid(&msg),
        }
    }
    let resp = json!({"embeddings": out});
    json_response(st, Dialect::Gemini, &ctx.opts, 0, resp.to_string().into_bytes())
}

fn count_tokens(st: &MockState, ctx: crate::common::Ctx) -> Response {
    let inner = field(&ctx.body, "generateContentRequest").unwrap_or(&ctx.body);
    let contents = match validate_contents(inner.get("contents"), "CountTokensRequest") {
        Ok(c) => c,
        Err(msg) => return invalid(&msg),
    };
    let resp = json!({"totalTokens": prompt_tokens(inner, &contents)});
    json_response(st, Dialect::Gemini, &ctx.opts, 0, resp.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_and_query() {
        assert_eq!(snake("maxOutputTokens"), "max_output_tokens");
        assert_eq!(
            query_param(Some("alt=sse&key=a%2Bb"), "key").as_deref(),
            Some("a+b")
        );
        assert_eq!(query_param(Some("alt=sse"), "key"), None);
        assert_eq!(query_param(None, "alt"), None);
    }
}
