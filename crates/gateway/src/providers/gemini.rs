//! Google Gemini (`kind = "gemini"`), natively: `{base_url}/v1beta/models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`, the key in `x-goog-api-key`; `:batchEmbedContents` for
//! embeddings. The canonical request becomes `contents` / `parts`, `systemInstruction`,
//! `functionDeclarations` and `generationConfig`; answers come back as canonical events.

use std::collections::HashMap;

use futures::StreamExt;
use http::{HeaderMap, HeaderValue};
use protocol::canonical::{self as c, FinishReason, ImageSource, Part, Role, StreamEvent};
use serde_json::{Map, Value, json};

use super::http_client::{HttpUpstream, sse_events};
use super::{ChatOutput, EventStream, ProviderOptions, with_deadline};
use crate::error::{Error, Result};

pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

#[derive(Debug)]
pub struct GeminiProvider {
    http: HttpUpstream,
}

impl GeminiProvider {
    pub fn new(name: &str, opts: &ProviderOptions) -> Result<GeminiProvider> {
        let mut headers = HeaderMap::new();
        if let Some(key) = opts.api_key.as_deref().filter(|k| !k.is_empty()) {
            let mut v = HeaderValue::from_str(key).map_err(|_| {
                Error::internal(format!("provider {name}: api_key is not a valid header value"))
            })?;
            v.set_sensitive(true);
            headers.insert("x-goog-api-key", v);
        }
        let mut opts = opts.clone();
        if opts.base_url.is_empty() {
            opts.base_url = DEFAULT_BASE_URL.to_string();
        }
        Ok(GeminiProvider {
            http: HttpUpstream::new(name, &opts, headers)?,
        })
    }

    pub fn name(&self) -> &str {
        &self.http.name
    }

    pub(crate) fn http(&self) -> &HttpUpstream {
        &self.http
    }

    fn model_path(model: &str, method: &str) -> String {
        // Model ids are path segments (`gemini-2.5-flash`, `tunedModels/x` stays as given).
        let m = model.strip_prefix("models/").unwrap_or(model);
        format!("v1beta/models/{m}:{method}")
    }

    pub async fn chat(&self, req: &c::ChatRequest, model: &str) -> Result<(ChatOutput, Vec<String>)> {
        let (body, warnings) = request_body(req)?;
        let bytes = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        let deadline = self.http.deadline();
        let name = self.http.name.clone();
        if req.stream {
            let path = format!("{}?alt=sse", Self::model_path(model, "streamGenerateContent"));
            let resp = self.http.post(&path, bytes, None, deadline).await?;
            let mut dec = Decoder::new(model);
            let provider = name.clone();
            let events = sse_events(resp, name.clone())
                .map(move |ev| -> Vec<Result<StreamEvent>> {
                    match ev {
                        Err(e) => vec![Err(e)],
                        Ok(ev) => match serde_json::from_str::<Value>(ev.data.trim()) {
                            Ok(v) => dec.chunk(&v).into_iter().collect(),
                            Err(_) if ev.data.trim().is_empty() => vec![],
                            Err(_) => vec![Err(Error::bad_gateway(format!(
                                "upstream {provider} sent an event that is not JSON"
                            )))],
                        },
                    }
                })
                .flat_map(futures::stream::iter)
                .boxed();
            let events = finish_checked(events, name.clone());
            Ok((
                ChatOutput::Stream(with_deadline(events, deadline, name)),
                warnings,
            ))
        } else {
            let resp = self
                .http
                .post(&Self::model_path(model, "generateContent"), bytes, None, deadline)
                .await?;
            let v = self.http.read_object(resp, deadline).await?;
            let mut dec = Decoder::new(model);
            let events: Vec<Result<StreamEvent>> = dec.chunk(&v);
            if !events.iter().any(|e| matches!(e, Ok(StreamEvent::Finish { .. }))) {
                return Err(Error::bad_gateway(format!(
                    "upstream {name} answered without a candidate"
                )));
            }
            Ok((
                ChatOutput::Stream(futures::stream::iter(events).boxed()),
                warnings,
            ))
        }
    }

    /// `batchEmbedContents`: one vector per input text.
    pub async fn embed(
        &self,
        texts: &[String],
        model: &str,
        dimensions: Option<u32>,
    ) -> Result<Vec<Vec<f32>>> {
        let m = model.strip_prefix("models/").unwrap_or(model);
        let requests: Vec<Value> = texts
            .iter()
            .map(|t| {
                let mut r = json!({"model": format!("models/{m}"), "content": {"parts": [{"text": t}]}});
                if let Some(d) = dimensions {
                    r["outputDimensionality"] = json!(d);
                }
                r
            })
            .collect();
        let body =
            serde_json::to_vec(&json!({"requests": requests})).map_err(|e| Error::internal(e.to_string()))?;
        let deadline = self.http.deadline();
        let resp = self
            .http
            .post(
                &Self::model_path(model, "batchEmbedContents"),
                body,
                None,
                deadline,
            )
            .await?;
        let v = self.http.read_object(resp, deadline).await?;
        let out: Option<Vec<Vec<f32>>> = v["embeddings"].as_array().map(|es| {
            es.iter()
                .map(|e| {
                    e["values"]
                        .as_array()
                        .map(|vs| vs.iter().filter_map(Value::as_f64).map(|x| x as f32).collect())
                        .unwrap_or_default()
                })
                .collect()
        });
        match out {
            Some(o) if o.len() == texts.len() => Ok(o),
            _ => Err(Error::bad_gateway(format!(
                "upstream {} answered without one embedding per input",
                self.http.name
            ))),
        }
    }
}

/// A stream that ends without a finish is an upstream that broke off.
fn finish_checked(inner: EventStream, provider: String) -> EventStream {
    futures::stream::unfold((inner, false, false), move |(mut s, seen_finish, done)| {
        let provider = provider.clone();
        async move {
            if done {
                return None;
            }
            match s.next().await {
                Some(Ok(ev)) => {
                    let f = seen_finish || matches!(ev, StreamEvent::Finish { .. });
                    Some((Ok(ev), (s, f, false)))
                }
                Some(Err(e)) => Some((Err(e), (s, seen_finish, true))),
                None if seen_finish => None,
                None => Some((
                    Err(Error::bad_gateway(format!(
                        "upstream {provider} closed the stream before it finished"
                    ))),
                    (s, seen_finish, true),
                )),
            }
        }
    })
    .boxed()
}

/// Turns Gemini answers (whole, or stream chunks) into canonical events.
pub(crate) struct Decoder {
    model: String,
    started: bool,
    tool_calls: u32,
    finished: bool,
    usage: Option<c::Usage>,
}

impl Decoder {
    pub(crate) fn new(model: &str) -> Decoder {
        Decoder {
            model: model.to_string(),
            started: false,
            tool_calls: 0,
            finished: false,
            usage: None,
        }
    }

    pub(crate) fn chunk(&mut self, v: &Value) -> Vec<Result<StreamEvent>> {
        let mut out = Vec::new();
        if let Some(e) = v.get("error") {
            out.push(Err(Error::bad_gateway(format!(
                "upstream: {}",
                e["message"].as_str().unwrap_or("error")
            ))));
            return out;
        }
        if !self.started {
            self.started = true;
            out.push(Ok(StreamEvent::Start {
                id: v["responseId"]
                    .as_str()
                    .map_or_else(|| format!("gemini-{:016x}", rand::random::<u64>()), String::from),
                model: v["modelVersion"].as_str().unwrap_or(&self.model).to_string(),
                created: crate::store::now_secs(),
            }));
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(usage(u));
        }
        // A prompt refused before any candidate.
        if v["candidates"].as_array().is_none_or(|c| c.is_empty())
            && let Some(reason) = v["promptFeedback"]["blockReason"].as_str()
        {
            tracing::debug!("gemini blocked the prompt: {reason}");
            out.push(Ok(StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::ContentFilter,
                stop_sequence: None,
            }));
            self.finished = true;
        }
        for cand in v["candidates"].as_array().into_iter().flatten() {
            let choice = cand["index"].as_u64().unwrap_or(0) as u32;
            for p in cand["content"]["parts"].as_array().into_iter().flatten() {
                if let Some(t) = p["text"].as_str() {
                    if p["thought"].as_bool() == Some(true) {
                        out.push(Ok(StreamEvent::ReasoningDelta {
                            choice,
                            text: t.to_string(),
                        }));
                    } else if !t.is_empty() {
                        out.push(Ok(StreamEvent::TextDelta {
                            choice,
                            text: t.to_string(),
                        }));
                    }
                }
                if let Some(fc) = p.get("functionCall") {
                    let index = self.tool_calls;
                    self.tool_calls += 1;
                    out.push(Ok(StreamEvent::ToolCallStart {
                        choice,
                        index,
                        id: fc["id"]
                            .as_str()
                            .map_or_else(|| format!("call_{:016x}", rand::random::<u64>()), String::from),
                        name: fc["name"].as_str().unwrap_or("").to_string(),
                    }));
                    out.push(Ok(StreamEvent::ToolCallDelta {
                        choice,
                        index,
                        arguments: fc.get("args").map_or_else(|| "{}".to_string(), Value::to_string),
                    }));
                }
                if let Some(sig) = p["thoughtSignature"].as_str() {
                    out.push(Ok(StreamEvent::ReasoningSignature {
                        choice,
                        signature: sig.to_string(),
                    }));
                }
            }
            if let Some(fr) = cand["finishReason"].as_str() {
                let reason = match fr {
                    "STOP" if self.tool_calls > 0 => FinishReason::ToolCalls,
                    "STOP" => FinishReason::Stop,
                    "MAX_TOKENS" => FinishReason::Length,
                    "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
                    | "IMAGE_SAFETY" => FinishReason::ContentFilter,
                    _ => FinishReason::Other,
                };
                out.push(Ok(StreamEvent::Finish {
                    choice,
                    reason,
                    stop_sequence: None,
                }));
                self.finished = true;
            }
        }
        if self.finished
            && let Some(u) = self.usage.take()
        {
            out.push(Ok(StreamEvent::Usage { usage: u }));
        }
        out
    }
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// `usageMetadata` → usage. Thinking tokens count as output, as OpenAI counts reasoning.
fn usage(u: &Value) -> c::Usage {
    let thoughts = num(u, "thoughtsTokenCount");
    c::Usage {
        input_tokens: num(u, "promptTokenCount") + num(u, "toolUsePromptTokenCount"),
        output_tokens: num(u, "candidatesTokenCount") + thoughts,
        cache_read_tokens: num(u, "cachedContentTokenCount"),
        reasoning_tokens: thoughts,
        ..c::Usage::default()
    }
}

/// JSON Schema as Gemini's `parameters` / `responseSchema` take it (an OpenAPI subset): keys it
/// refuses are left out, recursively.
fn schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "$schema" | "additionalProperties" | "strict" | "$id" | "$defs" | "definitions"
                    )
                })
                .map(|(k, v)| (k.clone(), schema(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema).collect()),
        other => other.clone(),
    }
}

/// The `generateContent` body of a canonical request, and what could not be carried.
pub fn request_body(req: &c::ChatRequest) -> Result<(Value, Vec<String>)> {
    let mut warnings = Vec::new();
    let mut system = Vec::new();
    let mut contents: Vec<Value> = Vec::new();
    // Function responses name the function; the canonical result names only the call.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for m in &req.messages {
        for p in &m.content {
            if let Part::ToolCall { id, name, .. } = p {
                call_names.insert(id, name);
            }
        }
    }
    for m in &req.messages {
        let mut parts = Vec::new();
        for p in &m.content {
            match p {
                Part::Text { text } => parts.push(json!({"text": text})),
                Part::Image { source, .. } => match source {
                    ImageSource::Base64 { media_type, data } => {
                        parts.push(json!({"inlineData": {"mimeType": media_type, "data": data}}));
                    }
                    ImageSource::Url { url } => {
                        return Err(Error::invalid_param(
                            "messages",
                            format!(
                                "Gemini takes images inline (data: URLs) or as Google file URIs, not `{url}`."
                            ),
                        ));
                    }
                },
                Part::ToolCall { name, arguments, .. } => {
                    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                Part::ToolResult {
                    tool_call_id,
                    content,
                    is_error,
                } => {
                    let text: String = content
                        .iter()
                        .filter_map(|p| match p {
                            Part::Text { text } => Some(text.as_str()),
                            _ => None,
                        })
                        .collect();
                    let name = call_names
                        .get(tool_call_id.as_str())
                        .copied()
                        .unwrap_or(tool_call_id);
                    let key = if *is_error { "error" } else { "content" };
                    parts.push(json!({"functionResponse": {"name": name, "response": {key: text}}}));
                }
                Part::Reasoning { .. } | Part::RedactedReasoning { .. } => {}
            }
        }
        match m.role {
            Role::System | Role::Developer => system.extend(parts),
            Role::Assistant => contents.push(json!({"role": "model", "parts": parts})),
            Role::User | Role::Tool => {
                // Consecutive user turns (a tool result then a question) merge into one.
                match contents.last_mut() {
                    Some(last) if last["role"] == "user" => {
                        if let Some(a) = last["parts"].as_array_mut() {
                            a.extend(parts);
                        }
                    }
                    _ => contents.push(json!({"role": "user", "parts": parts})),
                }
            }
        }
    }
    let mut body = Map::new();
    body.insert("contents".into(), Value::Array(contents));
    if !system.is_empty() {
        body.insert("systemInstruction".into(), json!({"parts": system}));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": schema(&t.parameters)});
                if let Some(desc) = &t.description {
                    d["description"] = json!(desc);
                }
                d
            })
            .collect();
        body.insert("tools".into(), json!([{"functionDeclarations": decls}]));
        if let Some(tc) = &req.tool_choice {
            let cfg = match tc {
                c::ToolChoice::Auto => json!({"mode": "AUTO"}),
                c::ToolChoice::None => json!({"mode": "NONE"}),
                c::ToolChoice::Required => json!({"mode": "ANY"}),
                c::ToolChoice::Tool { name } => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            };
            body.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
        }
    }
    let mut g = Map::new();
    let s = &req.sampling;
    if let Some(t) = s.temperature {
        g.insert("temperature".into(), json!(t));
    }
    if let Some(p) = s.top_p {
        g.insert("topP".into(), json!(p));
    }
    if let Some(k) = s.top_k {
        g.insert("topK".into(), json!(k));
    }
    if let Some(seed) = s.seed {
        g.insert("seed".into(), json!(seed));
    }
    if let Some(p) = s.presence_penalty {
        g.insert("presencePenalty".into(), json!(p));
    }
    if let Some(p) = s.frequency_penalty {
        g.insert("frequencyPenalty".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        g.insert("maxOutputTokens".into(), json!(m));
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    if let Some(n) = req.n.filter(|n| *n > 1) {
        g.insert("candidateCount".into(), json!(n));
    }
    match &req.response_format {
        Some(c::ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), json!("application/json"));
        }
        Some(c::ResponseFormat::JsonSchema { schema: sc, .. }) => {
            g.insert("responseMimeType".into(), json!("application/json"));
            g.insert("responseSchema".into(), schema(sc));
        }
        _ => {}
    }
    if let Some(r) = &req.reasoning {
        let budget = if r.disabled {
            Some(0)
        } else {
            r.budget_tokens.or(match r.effort.as_deref() {
                Some("minimal") => Some(512),
                Some("low") => Some(1024),
                Some("medium") => Some(8192),
                Some("high") => Some(24576),
                _ => None,
            })
        };
        let mut tc = Map::new();
        if let Some(b) = budget {
            tc.insert("thinkingBudget".into(), json!(b));
        }
        tc.insert("includeThoughts".into(), json!(!r.disabled));
        g.insert("thinkingConfig".into(), Value::Object(tc));
    }
    if s.min_p.is_some() {
        warnings.push("min_p is not supported by Gemini and was not sent".into());
    }
    if req.logprobs == Some(true) {
        warnings.push("logprobs are not returned by this Gemini provider".into());
    }
    if !g.is_empty() {
        body.insert("generationConfig".into(), Value::Object(g));
    }
    Ok((Value::Object(body), warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_with_tools_becomes_contents() {
        let req: c::ChatRequest = serde_json::from_value(json!({
            "model": "g",
            "messages": [
                {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}]},
                {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny"}]}]}
            ],
            "tools": [{"name": "get_weather", "parameters": {"type": "object", "additionalProperties": false, "properties": {"city": {"type": "string"}}}}],
            "max_tokens": 50,
            "sampling": {"temperature": 0.2}
        }))
        .unwrap();
        let (b, _) = request_body(&req).unwrap();
        assert_eq!(b["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(b["contents"][1]["role"], "model");
        assert_eq!(
            b["contents"][1]["parts"][0]["functionCall"]["args"]["city"],
            "Paris"
        );
        assert_eq!(
            b["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        let params = &b["tools"][0]["functionDeclarations"][0]["parameters"];
        assert!(params.get("additionalProperties").is_none());
        assert_eq!(b["generationConfig"]["maxOutputTokens"], 50);
    }

    #[test]
    fn odd_answers_are_handled_without_panics() {
        let mut d = Decoder::new("g");
        // Unknown part types are skipped; a call without args gets `{}`; odd names stay strings.
        let evs: Vec<StreamEvent> = d
            .chunk(&json!({"candidates": [{"content": {"parts": [{"executableCode": {"code": "x"}}, {"functionCall": {"name": 5}}, {"inlineData": {}}]}, "finishReason": "WEIRD"}]}))
            .into_iter()
            .map(|e| e.unwrap())
            .collect();
        assert!(matches!(&evs[2], StreamEvent::ToolCallDelta { arguments, .. } if arguments == "{}"));
        assert!(matches!(
            evs.last(),
            Some(StreamEvent::Finish {
                reason: FinishReason::Other,
                ..
            })
        ));
        // An error object in a stream chunk is an error, not a crash.
        let mut d = Decoder::new("g");
        assert!(d.chunk(&json!({"error": {"code": 500, "message": "boom"}}))[0].is_err());
        // A blocked prompt finishes as a content filter.
        let mut d = Decoder::new("g");
        let evs = d.chunk(&json!({"promptFeedback": {"blockReason": "SAFETY"}}));
        assert!(evs.iter().any(|e| matches!(
            e,
            Ok(StreamEvent::Finish {
                reason: FinishReason::ContentFilter,
                ..
            })
        )));
        // A request with an image by URL is a clear 400, not a malformed upstream call.
        let req: c::ChatRequest = serde_json::from_value(json!({"model": "g", "messages": [
            {"role": "user", "content": [{"type": "image", "source": {"kind": "url", "url": "https://x/y.png"}}]}]}))
        .unwrap();
        assert_eq!(request_body(&req).unwrap_err().status().as_u16(), 400);
    }

    #[test]
    fn answers_decode_to_events() {
        let mut d = Decoder::new("g");
        let evs = d.chunk(&json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hm", "thought": true}, {"functionCall": {"name": "f", "args": {"a": 1}}}]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 3, "thoughtsTokenCount": 2}}));
        let evs: Vec<StreamEvent> = evs.into_iter().map(|e| e.unwrap()).collect();
        assert!(matches!(&evs[1], StreamEvent::ReasoningDelta { text, .. } if text == "hm"));
        assert!(matches!(&evs[2], StreamEvent::ToolCallStart { name, .. } if name == "f"));
        assert!(matches!(
            &evs[4],
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                ..
            }
        ));
        assert!(
            matches!(&evs[5], StreamEvent::Usage { usage } if usage.output_tokens == 5 && usage.reasoning_tokens == 2)
        );
    }
}
