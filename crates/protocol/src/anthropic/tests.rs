//! Golden tests for each translation row, and property tests for responses and streams.

use super::*;
use crate::canonical::{
    self as c, ChatResponse, Choice, FinishReason, Part, Role, StreamAccumulator, StreamEvent,
};
use crate::openai::chat::{ChatCompletionChunk, ChatCompletionRequest, ChunkDecoder};
use crate::sse::SseDecoder;
use proptest::prelude::*;
use serde_json::{Value, json};

fn anthropic(v: Value) -> MessagesRequest {
    validate::messages_request(v.as_object().unwrap()).unwrap();
    serde_json::from_value(v).unwrap()
}

fn openai_canonical(v: Value) -> c::ChatRequest {
    let req: ChatCompletionRequest = serde_json::from_value(v).unwrap();
    req.to_canonical().unwrap()
}

fn to_anthropic(req: &c::ChatRequest) -> (Value, Vec<String>) {
    let (wire, warnings) = MessagesRequest::from_canonical(req).unwrap();
    (serde_json::to_value(wire).unwrap(), warnings)
}

// ---------------------------------------------------------------------------------------------------
// Requests

#[test]
fn anthropic_request_survives_canonical_unchanged() {
    let body = json!({
        "model": "claude-x",
        "max_tokens": 4096,
        "system": [
            {"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
            {"type": "text", "text": "Today is Monday."}
        ],
        "messages": [
            {"role": "user", "content": [
                {"type": "document", "source": {"type": "url", "url": "https://x/a.pdf"}, "title": "A"},
                {"type": "text", "text": "Weather in Paris and Rome?", "citations": []},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                {"type": "image", "source": {"type": "url", "url": "https://x/cat.png"}},
                {"type": "image", "source": {"type": "file", "file_id": "file_1"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Two cities.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Rome"}, "caller": {"type": "direct"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": [
                    {"type": "text", "text": "rain", "cache_control": {"type": "ephemeral"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/radar.png"}}
                ], "is_error": true},
                {"type": "tool_result", "tool_use_id": "toolu_3", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]},
                {"type": "text", "text": "Thanks."}
            ]},
            {"role": "assistant", "content": "Paris is"}
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather by city", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}, "cache_control": {"type": "ephemeral"}, "strict": true},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 2},
            {"type": "custom", "name": "noop", "input_schema": {"type": "object"}, "defer_loading": true}
        ],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stop_sequences": ["END"],
        "temperature": 1.0,
        "top_p": 0.97,
        "metadata": {"user_id": "user-7"},
        "service_tier": "standard_only",
        "container": "cont_1",
        "mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "m"}],
        "cache_control": {"type": "ephemeral"},
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": {"type": "object"}}},
        "stream": true
    });
    let canon = anthropic(body.clone()).to_canonical().unwrap();

    assert_eq!(canon.messages[0].role, Role::System);
    assert_eq!(canon.messages[0].text(), "You are terse.Today is Monday.");
    assert_eq!(
        canon.messages[1].content,
        vec![
            Part::text("Weather in Paris and Rome?"),
            Part::Image {
                source: c::ImageSource::Base64 {
                    media_type: "image/png".into(),
                    data: "AAAA".into()
                },
                detail: None
            },
            Part::Image {
                source: c::ImageSource::Url {
                    url: "https://x/cat.png".into()
                },
                detail: None
            },
        ]
    );
    assert_eq!(
        canon.messages[2].content,
        vec![
            Part::Reasoning {
                text: "Two cities.".into(),
                signature: Some("sig-1".into())
            },
            Part::RedactedReasoning {
                data: "opaque".into()
            },
            Part::text("Checking."),
            Part::ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Paris"}"#.into()
            },
            Part::ToolCall {
                id: "toolu_2".into(),
                name: "get_weather".into(),
                arguments: r#"{"city":"Rome"}"#.into()
            },
        ]
    );
    assert_eq!(
        canon.messages[3].content[1],
        Part::ToolResult {
            tool_call_id: "toolu_2".into(),
            content: vec![
                Part::text("rain"),
                Part::Image {
                    source: c::ImageSource::Url {
                        url: "https://x/radar.png".into()
                    },
                    detail: None
                }
            ],
            is_error: true,
        }
    );
    assert_eq!(canon.messages[4].content, vec![Part::text("Paris is")]);
    assert_eq!(canon.tools.len(), 2, "server tools are carried, not canonical");
    assert_eq!(canon.tools[0].parameters["properties"]["city"]["type"], "string");
    assert_eq!(canon.tools[0].strict, Some(true));
    assert_eq!(canon.tool_choice, Some(c::ToolChoice::Required));
    assert_eq!(canon.parallel_tool_calls, Some(false));
    assert_eq!(
        canon.reasoning,
        Some(c::Reasoning {
            budget_tokens: Some(2048),
            ..Default::default()
        })
    );
    assert_eq!(canon.stop, vec!["END".to_string()]);
    assert_eq!(canon.sampling.top_p, Some(0.97));
    assert_eq!(canon.user.as_deref(), Some("user-7"));
    assert_eq!(canon.max_tokens, Some(4096));
    assert!(canon.stream && canon.include_usage);
    assert!(matches!(
        canon.response_format,
        Some(c::ResponseFormat::JsonSchema { .. })
    ));
    let carried = carried_fields(&canon.extra);
    for field in [
        "service_tier",
        "container",
        "mcp_servers",
        "cache_control",
        "output_config",
    ] {
        assert!(
            carried.iter().any(|c| c.contains(field)),
            "{field} missing from {carried:?}"
        );
    }
    assert!(carried.iter().any(|c| c.contains("web_search_20250305")));
    assert!(carried.iter().any(|c| c.contains("'document'")));

    let (back, warnings) = to_anthropic(&canon);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(back, body);
}

#[test]
fn plain_anthropic_request_round_trips_and_strings_stay_strings() {
    let body = json!({
        "model": "m",
        "max_tokens": 100,
        "system": "Be brief.",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"}
        ],
        "temperature": 0.3,
        "top_k": 40
    });
    let canon = anthropic(body.clone()).to_canonical().unwrap();
    assert!(canon.extra.is_empty());
    let (back, warnings) = to_anthropic(&canon);
    assert!(warnings.is_empty());
    assert_eq!(back, body);
}

#[test]
fn openai_tool_loop_becomes_anthropic_turns() {
    let canon = openai_canonical(json!({
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "c2", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "rain"}]},
            {"role": "user", "content": "and tomorrow?"},
            {"role": "developer", "content": "answer in French"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"properties": {}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "user": "u-1",
        "stream": true,
        "stream_options": {"include_usage": true}
    }));
    let (wire, warnings) = to_anthropic(&canon);
    assert_eq!(
        wire,
        json!({
            "model": "gpt-x",
            "max_tokens": 4096,
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "c2", "name": "get_weather", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                    {"type": "tool_result", "tool_use_id": "c2", "content": "rain"},
                    {"type": "text", "text": "and tomorrow?"}
                ]}
            ],
            "system": [{"type": "text", "text": "be brief"}, {"type": "text", "text": "answer in French"}],
            "metadata": {"user_id": "u-1"},
            "stream": true,
            "tools": [{"name": "get_weather", "description": "d", "input_schema": {"properties": {}, "type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
        })
    );
    assert!(warnings.iter().any(|w| w.contains("max_tokens")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("detail")), "{warnings:?}");
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("moved into the top-level system")),
        "{warnings:?}"
    );
}

#[test]
fn tool_results_come_first_even_after_user_text() {
    let mut canon = c::ChatRequest {
        model: "m".into(),
        max_tokens: Some(10),
        ..Default::default()
    };
    canon.messages = vec![
        c::Message::new(Role::User, vec![Part::text("q")]),
        c::Message::new(
            Role::Assistant,
            vec![Part::ToolCall {
                id: "a".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
        ),
        c::Message::new(Role::User, vec![Part::text("also this")]),
        c::Message::new(
            Role::Tool,
            vec![Part::ToolResult {
                tool_call_id: "a".into(),
                content: vec![Part::text("1")],
                is_error: true,
            }],
        ),
    ];
    let (wire, _) = to_anthropic(&canon);
    assert_eq!(
        wire["messages"][2]["content"],
        json!([
            {"type": "tool_result", "tool_use_id": "a", "content": "1", "is_error": true},
            {"type": "text", "text": "also this"}
        ])
    );
    // And back: is_error survives.
    let back: MessagesRequest = serde_json::from_value(wire).unwrap();
    let canon2 = back.to_canonical().unwrap();
    assert!(matches!(
        &canon2.messages[2].content[0],
        Part::ToolResult { is_error: true, .. }
    ));
}

#[test]
fn tool_choice_rows() {
    let base = |tc: Option<c::ToolChoice>, parallel: Option<bool>| {
        let mut r = c::ChatRequest {
            model: "m".into(),
            max_tokens: Some(10),
            tool_choice: tc,
            parallel_tool_calls: parallel,
            ..Default::default()
        };
        r.messages = vec![c::Message::new(Role::User, vec![Part::text("x")])];
        r.tools = vec![c::Tool {
            name: "f".into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: None,
        }];
        to_anthropic(&r).0["tool_choice"].clone()
    };
    assert_eq!(base(Some(c::ToolChoice::Auto), None), json!({"type": "auto"}));
    assert_eq!(base(Some(c::ToolChoice::Required), None), json!({"type": "any"}));
    assert_eq!(
        base(Some(c::ToolChoice::Tool { name: "f".into() }), None),
        json!({"type": "tool", "name": "f"})
    );
    assert_eq!(base(Some(c::ToolChoice::None), None), json!({"type": "none"}));
    assert_eq!(
        base(None, Some(false)),
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
    assert_eq!(base(None, Some(true)), Value::Null);

    for (wire, canon, parallel) in [
        (json!({"type": "auto"}), c::ToolChoice::Auto, None),
        (
            json!({"type": "any", "disable_parallel_tool_use": false}),
            c::ToolChoice::Required,
            None,
        ),
        (
            json!({"type": "tool", "name": "f", "disable_parallel_tool_use": true}),
            c::ToolChoice::Tool { name: "f".into() },
            Some(false),
        ),
        (json!({"type": "none"}), c::ToolChoice::None, None),
    ] {
        let req = anthropic(json!({
            "model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": wire
        }));
        let canon_req = req.to_canonical().unwrap();
        assert_eq!(canon_req.tool_choice, Some(canon));
        assert_eq!(canon_req.parallel_tool_calls, parallel);
    }

    // No tools: tool_choice is not sent (Anthropic refuses it), with a warning when it mattered.
    let mut r = c::ChatRequest {
        model: "m".into(),
        max_tokens: Some(10),
        tool_choice: Some(c::ToolChoice::Required),
        ..Default::default()
    };
    r.messages = vec![c::Message::new(Role::User, vec![Part::text("x")])];
    let (wire, warnings) = to_anthropic(&r);
    assert!(wire.get("tool_choice").is_none());
    assert!(warnings.iter().any(|w| w.contains("tool_choice")));
}

fn user_req() -> c::ChatRequest {
    let mut r = c::ChatRequest {
        model: "m".into(),
        ..Default::default()
    };
    r.messages = vec![c::Message::new(Role::User, vec![Part::text("x")])];
    r
}

#[test]
fn thinking_and_max_tokens_rows() {
    let effort = |e: &str, max: Option<u32>| {
        let mut r = user_req();
        r.max_tokens = max;
        r.reasoning = Some(c::Reasoning {
            effort: Some(e.into()),
            ..Default::default()
        });
        to_anthropic(&r)
    };
    let (w, warnings) = effort("high", None);
    assert_eq!(w["thinking"], json!({"type": "enabled", "budget_tokens": 24576}));
    assert_eq!(w["max_tokens"], json!(24576 + 4096));
    assert!(warnings.iter().any(|w| w.contains("max_tokens")));
    assert_eq!(
        effort("minimal", Some(8000)).0["thinking"]["budget_tokens"],
        json!(1024)
    );
    assert_eq!(
        effort("low", Some(8000)).0["thinking"]["budget_tokens"],
        json!(2048)
    );
    assert_eq!(
        effort("medium", Some(10000)).0["thinking"]["budget_tokens"],
        json!(8192)
    );
    assert_eq!(
        effort("xhigh", Some(40000)).0["thinking"]["budget_tokens"],
        json!(32768)
    );
    assert_eq!(
        effort("none", Some(100)).0["thinking"],
        json!({"type": "disabled"})
    );
    // Budget lowered below max_tokens, or thinking off when there is no room.
    let (w, warnings) = effort("high", Some(3000));
    assert_eq!(w["thinking"]["budget_tokens"], json!(2999));
    assert!(warnings.iter().any(|w| w.contains("lowered")));
    let (w, warnings) = effort("low", Some(1000));
    assert!(w.get("thinking").is_none());
    assert!(warnings.iter().any(|w| w.contains("turned off")));

    let mut r = user_req();
    r.max_tokens = Some(5000);
    r.reasoning = Some(c::Reasoning {
        budget_tokens: Some(500),
        ..Default::default()
    });
    assert_eq!(to_anthropic(&r).0["thinking"]["budget_tokens"], json!(1024));
    r.reasoning = Some(c::Reasoning {
        disabled: true,
        ..Default::default()
    });
    assert_eq!(to_anthropic(&r).0["thinking"], json!({"type": "disabled"}));

    // Thinking on: temperature / top_k / low top_p are not sent.
    let mut r = user_req();
    r.max_tokens = Some(9000);
    r.reasoning = Some(c::Reasoning {
        effort: Some("low".into()),
        ..Default::default()
    });
    r.sampling = c::Sampling {
        temperature: Some(0.2),
        top_k: Some(5),
        top_p: Some(0.5),
        ..Default::default()
    };
    let (w, warnings) = to_anthropic(&r);
    assert!(w.get("temperature").is_none() && w.get("top_k").is_none() && w.get("top_p").is_none());
    assert_eq!(warnings.len(), 3, "{warnings:?}");

    // Anthropic → canonical → OpenAI: the budget becomes an effort.
    let req = anthropic(json!({
        "model": "m", "max_tokens": 20000, "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "enabled", "budget_tokens": 10000}
    }));
    let (oa, _) = ChatCompletionRequest::from_canonical(&req.to_canonical().unwrap());
    assert_eq!(oa.reasoning_effort.as_deref(), Some("medium"));

    // Adaptive thinking: effort for other dialects, the original block for Anthropic.
    let body = json!({
        "model": "m", "max_tokens": 20000, "messages": [{"role": "user", "content": "x"}],
        "thinking": {"type": "adaptive", "display": "omitted"}, "output_config": {"effort": "max"}
    });
    let canon = anthropic(body.clone()).to_canonical().unwrap();
    assert_eq!(
        canon.reasoning.as_ref().and_then(|r| r.effort.as_deref()),
        Some("xhigh")
    );
    assert_eq!(to_anthropic(&canon).0, body);
}

#[test]
fn refusals_and_warnings_table() {
    let refused = |f: &dyn Fn(&mut c::ChatRequest)| {
        let mut r = user_req();
        f(&mut r);
        MessagesRequest::from_canonical(&r)
            .unwrap_err()
            .param
            .unwrap_or_default()
    };
    assert_eq!(refused(&|r| r.n = Some(2)), "n");
    assert_eq!(refused(&|r| r.logprobs = Some(true)), "logprobs");
    assert_eq!(
        refused(&|r| r.sampling.logit_bias = Some(json!({"50256": -100}).as_object().unwrap().clone())),
        "logit_bias"
    );
    assert_eq!(
        refused(&|r| {
            r.extra.insert("audio".into(), json!({"voice": "x"}));
        }),
        "audio"
    );
    assert_eq!(
        refused(&|r| {
            r.extra.insert("modalities".into(), json!(["text", "audio"]));
        }),
        "modalities"
    );
    assert_eq!(
        refused(&|r| {
            r.extra.insert("web_search_options".into(), json!({}));
        }),
        "web_search_options"
    );

    let mut r = user_req();
    r.max_tokens = Some(50);
    r.n = Some(1);
    r.logprobs = Some(false);
    r.sampling = c::Sampling {
        temperature: Some(1.7),
        seed: Some(3),
        presence_penalty: Some(0.5),
        frequency_penalty: Some(0.0),
        ..Default::default()
    };
    r.stop = vec!["\n".into(), "STOP".into()];
    r.response_format = Some(c::ResponseFormat::JsonObject);
    r.messages[0].name = Some("bob".into());
    for (k, v) in [
        ("store", json!(true)),
        ("metadata", json!({"a": "b"})),
        ("stream_options", json!({})),
        ("modalities", json!(["text"])),
        ("safety_identifier", json!("sid")),
    ] {
        r.extra.insert(k.into(), v);
    }
    let (w, warnings) = to_anthropic(&r);
    assert_eq!(w["temperature"], json!(1.0));
    assert_eq!(w["stop_sequences"], json!(["STOP"]));
    assert_eq!(w["metadata"], json!({"user_id": "sid"}));
    assert!(w.get("store").is_none() && w.get("seed").is_none());
    for needle in [
        "temperature",
        "seed",
        "presence_penalty",
        "whitespace",
        "json_object",
        "'store'",
        "'metadata'",
        "name",
    ] {
        assert!(
            warnings.iter().any(|w| w.contains(needle)),
            "no warning about {needle}: {warnings:?}"
        );
    }
    assert!(!warnings.iter().any(|w| w.contains("frequency_penalty")
        || w.contains("stream_options")
        || w.contains("modalities")));

    let mut r = user_req();
    r.max_tokens = Some(50);
    r.response_format = Some(c::ResponseFormat::JsonSchema {
        name: "x".into(),
        schema: json!({"type": "object"}),
        strict: Some(true),
    });
    assert_eq!(
        to_anthropic(&r).0["output_config"],
        json!({"format": {"type": "json_schema", "schema": {"type": "object"}}})
    );
}

#[test]
fn reasoning_parts_go_back_only_when_signed() {
    let mut r = user_req();
    r.max_tokens = Some(50);
    r.messages.push(c::Message::new(
        Role::Assistant,
        vec![
            Part::Reasoning {
                text: "unsigned".into(),
                signature: None,
            },
            Part::Reasoning {
                text: "signed".into(),
                signature: Some("s".into()),
            },
            Part::RedactedReasoning { data: "d".into() },
            Part::text(""),
            Part::text("answer"),
        ],
    ));
    let (w, warnings) = to_anthropic(&r);
    assert_eq!(
        w["messages"][1]["content"],
        json!([
            {"type": "thinking", "thinking": "signed", "signature": "s"},
            {"type": "redacted_thinking", "data": "d"},
            {"type": "text", "text": "answer"}
        ])
    );
    assert!(warnings.iter().any(|w| w.contains("signature")));
}

#[test]
fn odd_tool_arguments_are_wrapped_not_lost() {
    let mut r = user_req();
    r.max_tokens = Some(50);
    r.messages.push(c::Message::new(
        Role::Assistant,
        vec![
            Part::ToolCall {
                id: "a".into(),
                name: "f".into(),
                arguments: "not json".into(),
            },
            Part::ToolCall {
                id: "b".into(),
                name: "f".into(),
                arguments: "[1]".into(),
            },
        ],
    ));
    let (w, warnings) = to_anthropic(&r);
    assert_eq!(
        w["messages"][1]["content"][0]["input"],
        json!({"value": "not json"})
    );
    assert_eq!(w["messages"][1]["content"][1]["input"], json!({"value": [1]}));
    assert_eq!(warnings.len(), 2);
}

#[test]
fn count_tokens_request_translates() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "system": "s"});
    validate::count_tokens_request(body.as_object().unwrap()).unwrap();
    let req: CountTokensRequest = serde_json::from_value(body).unwrap();
    let canon = req.into_messages_request().to_canonical().unwrap();
    assert_eq!(canon.messages.len(), 2);
}

// ---------------------------------------------------------------------------------------------------
// Responses

fn response(content: Vec<Part>, reason: Option<FinishReason>, stop_sequence: Option<&str>) -> ChatResponse {
    ChatResponse {
        id: "msg_1".into(),
        model: "m".into(),
        created: 0,
        choices: vec![Choice {
            index: 0,
            content,
            finish_reason: reason,
            logprobs: None,
        }],
        usage: Some(c::Usage {
            input_tokens: 100,
            output_tokens: 20,
            cache_read_tokens: 60,
            cache_creation_tokens: 10,
            reasoning_tokens: 5,
        }),
        stop_sequence: stop_sequence.map(str::to_string),
    }
}

#[test]
fn response_renders_like_anthropic() {
    let resp = response(
        vec![
            Part::Reasoning {
                text: "hm".into(),
                signature: Some("sig".into()),
            },
            Part::text(""),
            Part::text("Hi"),
            Part::ToolCall {
                id: "t1".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            },
        ],
        Some(FinishReason::ToolCalls),
        None,
    );
    assert_eq!(
        serde_json::to_value(MessagesResponse::from_canonical(&resp)).unwrap(),
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "thinking", "thinking": "hm", "signature": "sig"},
                {"type": "text", "text": "Hi"},
                {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 30, "output_tokens": 20, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 60, "output_tokens_details": {"thinking_tokens": 5}}
        })
    );
}

#[test]
fn stop_reason_rows() {
    for (wire, canon) in [
        ("end_turn", FinishReason::Stop),
        ("stop_sequence", FinishReason::Stop),
        ("max_tokens", FinishReason::Length),
        ("model_context_window_exceeded", FinishReason::Length),
        ("tool_use", FinishReason::ToolCalls),
        ("refusal", FinishReason::ContentFilter),
        ("pause_turn", FinishReason::Other),
        ("something_new", FinishReason::Other),
    ] {
        assert_eq!(finish_from_anthropic(wire), canon, "{wire}");
    }
    let render =
        |reason, seq| MessagesResponse::from_canonical(&response(vec![Part::text("x")], reason, seq));
    assert_eq!(
        render(Some(FinishReason::Stop), None).stop_reason.as_deref(),
        Some("end_turn")
    );
    let r = render(Some(FinishReason::Stop), Some("END"));
    assert_eq!(
        (r.stop_reason.as_deref(), r.stop_sequence.as_deref()),
        (Some("stop_sequence"), Some("END"))
    );
    assert_eq!(
        render(Some(FinishReason::Length), None).stop_reason.as_deref(),
        Some("max_tokens")
    );
    assert_eq!(
        render(Some(FinishReason::ToolCalls), None).stop_reason.as_deref(),
        Some("tool_use")
    );
    assert_eq!(
        render(Some(FinishReason::ContentFilter), None)
            .stop_reason
            .as_deref(),
        Some("refusal")
    );
    assert_eq!(
        render(Some(FinishReason::Other), None).stop_reason.as_deref(),
        Some("end_turn")
    );
    assert_eq!(render(None, None).stop_reason.as_deref(), Some("end_turn"));
    // An upstream stop_sequence survives into canonical.
    let wire: MessagesResponse = serde_json::from_value(json!({
        "id": "x", "type": "message", "role": "assistant", "model": "m", "content": [{"type": "text", "text": "a"}],
        "stop_reason": "stop_sequence", "stop_sequence": "END", "usage": {"input_tokens": 1, "output_tokens": 1}
    }))
    .unwrap();
    let canon = wire.to_canonical();
    assert_eq!(canon.stop_sequence.as_deref(), Some("END"));
    assert_eq!(canon.choices[0].finish_reason, Some(FinishReason::Stop));
}

#[test]
fn upstream_response_decodes_and_skips_server_blocks() {
    let wire: MessagesResponse = serde_json::from_value(json!({
        "id": "msg_9", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [
            {"type": "server_tool_use", "id": "s1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "s1", "content": []},
            {"type": "text", "text": ""},
            {"type": "text", "text": "Found it.", "citations": [{"type": "web_search_result_location"}]},
            {"type": "tool_use", "id": "t", "name": "f", "input": {}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 7, "cache_creation_input_tokens": null, "cache_read_input_tokens": 3, "server_tool_use": {"web_search_requests": 1}}
    }))
    .unwrap();
    let canon = wire.to_canonical();
    assert_eq!(
        canon.choices[0].content,
        vec![
            Part::text("Found it."),
            Part::ToolCall {
                id: "t".into(),
                name: "f".into(),
                arguments: "{}".into()
            }
        ]
    );
    assert_eq!(
        canon.usage,
        Some(c::Usage {
            input_tokens: 8,
            output_tokens: 7,
            cache_read_tokens: 3,
            ..Default::default()
        })
    );
}

#[test]
fn errors_have_anthropic_envelopes_and_statuses() {
    assert_eq!(
        error_body("overloaded_error", "Overloaded"),
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    for (ty, status) in [
        ("invalid_request_error", 400),
        ("authentication_error", 401),
        ("billing_error", 402),
        ("permission_error", 403),
        ("not_found_error", 404),
        ("request_too_large", 413),
        ("rate_limit_error", 429),
        ("api_error", 500),
        ("timeout_error", 504),
        ("overloaded_error", 529),
    ] {
        assert_eq!(status_for_error_type(ty), status);
        assert_eq!(error_type_for_status(status), ty);
    }
    assert_eq!(error_type_for_status(422), "invalid_request_error");
    assert_eq!(error_type_for_status(503), "overloaded_error");
    assert_eq!(error_type_for_status(502), "api_error");
    let e = WireError::param("x", "bad");
    assert_eq!(wire_error_body(&e)["error"]["type"], "invalid_request_error");
}

// ---------------------------------------------------------------------------------------------------
// Streams

/// Checks the Anthropic event grammar: one `message_start` first; blocks strictly one at a time with
/// indices 0, 1, 2…; deltas only inside the open block and of its kind; `message_delta` then
/// `message_stop` last.
fn assert_well_formed(events: &[MessageStreamEvent]) {
    assert!(
        matches!(events.first(), Some(MessageStreamEvent::MessageStart { .. })),
        "{events:?}"
    );
    let n = events.len();
    assert!(
        matches!(events[n - 2], MessageStreamEvent::MessageDelta { .. }),
        "{events:?}"
    );
    assert!(
        matches!(events[n - 1], MessageStreamEvent::MessageStop),
        "{events:?}"
    );
    let mut open: Option<(u32, String)> = None;
    let mut next = 0u32;
    for ev in &events[1..n - 2] {
        match ev {
            MessageStreamEvent::ContentBlockStart { index, content_block } => {
                assert!(open.is_none(), "block {index} opened inside another: {events:?}");
                assert_eq!(*index, next);
                open = Some((*index, content_block.kind().to_string()));
                next += 1;
            }
            MessageStreamEvent::ContentBlockDelta { index, delta } => {
                let (i, kind) = open.as_ref().expect("delta outside a block");
                assert_eq!(index, i, "delta for a closed block: {events:?}");
                let ok = match delta {
                    BlockDelta::TextDelta { text } => kind == "text" && !text.is_empty(),
                    BlockDelta::ThinkingDelta { .. } | BlockDelta::SignatureDelta { .. } => {
                        kind == "thinking"
                    }
                    BlockDelta::InputJsonDelta { .. } => kind == "tool_use",
                    _ => false,
                };
                assert!(ok, "{delta:?} in a {kind} block");
            }
            MessageStreamEvent::ContentBlockStop { index } => {
                assert_eq!(open.take().map(|o| o.0), Some(*index));
            }
            other => panic!("unexpected {other:?} inside the message"),
        }
    }
    assert!(open.is_none());
}

fn encode_all(events: &[StreamEvent]) -> Vec<MessageStreamEvent> {
    let mut enc = EventEncoder::new("m");
    let mut out = Vec::new();
    for ev in events {
        enc.encode(ev, &mut out);
    }
    enc.finish(&mut out);
    out
}

fn frames(events: &[MessageStreamEvent]) -> Vec<u8> {
    events.iter().flat_map(|e| e.to_frame().to_vec()).collect()
}

/// Bytes cut at `cuts` → SSE → canonical events → folded.
fn decode_split(bytes: &[u8], cuts: &[usize]) -> Result<ChatResponse, DecodeError> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut sse = SseDecoder::new();
    let mut dec = EventDecoder::new();
    let mut acc = StreamAccumulator::new();
    let mut last = 0;
    let mut feed = |piece: &[u8], fin: bool, acc: &mut StreamAccumulator| -> Result<(), DecodeError> {
        let mut raw = Vec::new();
        sse.push(piece, &mut raw).unwrap();
        if fin {
            sse.finish(&mut raw).unwrap();
        }
        for r in raw {
            let mut evs = Vec::new();
            dec.decode(&r, &mut evs)?;
            for e in &evs {
                acc.push(e);
            }
        }
        Ok(())
    };
    for p in points {
        feed(&bytes[last..p], false, &mut acc)?;
        last = p;
    }
    feed(&bytes[last..], true, &mut acc)?;
    assert!(dec.is_finished());
    Ok(acc.finish())
}

fn start() -> StreamEvent {
    StreamEvent::Start {
        id: "msg_1".into(),
        model: "upstream-name".into(),
        created: 0,
    }
}

fn tc_start(index: u32, id: &str) -> StreamEvent {
    StreamEvent::ToolCallStart {
        choice: 0,
        index,
        id: id.into(),
        name: format!("fn_{id}"),
    }
}

fn tc_delta(index: u32, args: &str) -> StreamEvent {
    StreamEvent::ToolCallDelta {
        choice: 0,
        index,
        arguments: args.into(),
    }
}

fn summary(events: &[MessageStreamEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| match e {
            MessageStreamEvent::ContentBlockStart { index, content_block } => {
                format!("start {index} {}", content_block.kind())
            }
            MessageStreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => format!("text {index} {text}"),
                BlockDelta::InputJsonDelta { partial_json } => format!("json {index} {partial_json}"),
                BlockDelta::ThinkingDelta { thinking } => format!("thinking {index} {thinking}"),
                BlockDelta::SignatureDelta { signature } => format!("signature {index} {signature}"),
                other => format!("{other:?}"),
            },
            MessageStreamEvent::ContentBlockStop { index } => format!("stop {index}"),
            MessageStreamEvent::MessageDelta { delta, usage } => {
                format!(
                    "message_delta {} out={}",
                    delta.stop_reason.as_deref().unwrap_or("null"),
                    usage.output_tokens
                )
            }
            other => other.name().to_string(),
        })
        .collect()
}

#[test]
fn interleaved_tool_calls_stream_one_block_at_a_time() {
    let events = encode_all(&[
        start(),
        StreamEvent::TextDelta {
            choice: 0,
            text: "Let me check.".into(),
        },
        tc_start(0, "a"),
        tc_delta(0, "{\"city\":"),
        tc_start(1, "b"),
        tc_delta(1, "{\"city\":\"Ro"),
        tc_delta(0, "\"Paris\"}"),
        tc_delta(1, "me\"}"),
        tc_start(2, "c"),
        tc_delta(2, "{}"),
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
            stop_sequence: None,
        },
        StreamEvent::Usage {
            usage: c::Usage {
                input_tokens: 10,
                output_tokens: 3,
                ..Default::default()
            },
        },
    ]);
    assert_well_formed(&events);
    assert_eq!(
        summary(&events),
        vec![
            "message_start",
            "start 0 text",
            "text 0 Let me check.",
            "stop 0",
            "start 1 tool_use",
            "json 1 {\"city\":",
            "json 1 \"Paris\"}",
            "stop 1",
            "start 2 tool_use",
            "json 2 {\"city\":\"Ro",
            "json 2 me\"}",
            "stop 2",
            "start 3 tool_use",
            "json 3 {}",
            "stop 3",
            "message_delta tool_use out=3",
            "message_stop",
        ]
    );
    // The public model name wins over the provider's.
    let MessageStreamEvent::MessageStart { message } = &events[0] else {
        panic!()
    };
    assert_eq!((message.id.as_str(), message.model.as_str()), ("msg_1", "m"));
}

#[test]
fn text_after_an_unfinished_call_waits_for_it() {
    let events = encode_all(&[
        start(),
        tc_start(0, "a"),
        tc_delta(0, "{\"q\":"),
        StreamEvent::TextDelta {
            choice: 0,
            text: "meanwhile".into(),
        },
        tc_delta(0, "\"}{\"}"),
        StreamEvent::TextDelta {
            choice: 0,
            text: " more".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::ToolCalls,
            stop_sequence: None,
        },
    ]);
    assert_well_formed(&events);
    assert_eq!(
        summary(&events),
        vec![
            "message_start",
            "start 0 tool_use",
            "json 0 {\"q\":",
            "json 0 \"}{\"}",
            "stop 0",
            "start 1 text",
            "text 1 meanwhile",
            "text 1  more",
            "stop 1",
            "message_delta tool_use out=0",
            "message_stop",
        ]
    );
}

#[test]
fn finish_waits_for_usage_and_thinking_streams_with_its_signature() {
    let mut enc = EventEncoder::new("m").with_input_tokens(42);
    let mut out = Vec::new();
    for ev in [
        start(),
        StreamEvent::ReasoningDelta {
            choice: 0,
            text: "hmm".into(),
        },
        StreamEvent::ReasoningSignature {
            choice: 0,
            signature: "sig".into(),
        },
        StreamEvent::RedactedReasoning {
            choice: 0,
            data: "zz".into(),
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: "".into(),
        },
        StreamEvent::TextDelta {
            choice: 0,
            text: "ok".into(),
        },
        StreamEvent::TextDelta {
            choice: 1,
            text: "other choice".into(),
        },
        StreamEvent::Finish {
            choice: 0,
            reason: FinishReason::Stop,
            stop_sequence: Some("END".into()),
        },
    ] {
        enc.encode(&ev, &mut out);
    }
    assert!(
        !out.iter()
            .any(|e| matches!(e, MessageStreamEvent::MessageDelta { .. })),
        "message_delta must wait for usage"
    );
    assert!(
        matches!(
            out.last(),
            Some(MessageStreamEvent::ContentBlockStop { index: 2 })
        ),
        "blocks close at Finish"
    );
    enc.encode(
        &StreamEvent::Usage {
            usage: c::Usage {
                input_tokens: 50,
                output_tokens: 9,
                cache_read_tokens: 8,
                ..Default::default()
            },
        },
        &mut out,
    );
    enc.finish(&mut out);
    assert_well_formed(&out);
    assert_eq!(
        summary(&out),
        vec![
            "message_start",
            "start 0 thinking",
            "thinking 0 hmm",
            "signature 0 sig",
            "stop 0",
            "start 1 redacted_thinking",
            "stop 1",
            "start 2 text",
            "text 2 ok",
            "stop 2",
            "message_delta stop_sequence out=9",
            "message_stop",
        ]
    );
    let MessageStreamEvent::MessageStart { message } = &out[0] else {
        panic!()
    };
    assert_eq!(message.usage.input_tokens, 42);
    let MessageStreamEvent::MessageDelta { delta, usage } = &out[out.len() - 2] else {
        panic!()
    };
    assert_eq!(delta.stop_sequence.as_deref(), Some("END"));
    assert_eq!(
        (usage.input_tokens, usage.cache_read_input_tokens),
        (Some(42), Some(8))
    );
}

#[test]
fn a_stream_without_finish_or_start_still_ends_properly() {
    let events = encode_all(&[tc_start(0, "a"), tc_delta(0, "{\"x\":1")]);
    assert_well_formed(&events);
    assert_eq!(summary(&events)[events.len() - 2], "message_delta tool_use out=0");
    let mut enc = EventEncoder::new("m");
    let mut out = Vec::new();
    enc.encode(&start(), &mut out);
    enc.error("overloaded_error", "Overloaded", &mut out);
    enc.finish(&mut out);
    assert_eq!(summary(&out), vec!["message_start", "error"]);
    assert!(enc.is_done());
}

const UPSTREAM: &str = "event: message_start
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":100,\"output_tokens\":2}}}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\",\"signature\":\"\"}}

event: ping
data: {\"type\": \"ping\"}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Let me think.\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":0}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"citations_delta\",\"citation\":{\"type\":\"char_location\"}}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":1}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"server_tool_use\",\"id\":\"srv\",\"name\":\"web_search\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":1}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":2}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":3,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"location\\\": \\\"San\"}}

event: content_block_delta
data: {\"type\":\"content_block_delta\",\"index\":3,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\" Francisco\\\"}\"}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":3}

event: content_block_start
data: {\"type\":\"content_block_start\",\"index\":4,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"noop\",\"input\":{}}}

event: content_block_stop
data: {\"type\":\"content_block_stop\",\"index\":4}

event: future_event
data: {\"type\":\"future_event\"}

event: message_delta
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}

event: message_stop
data: {\"type\":\"message_stop\"}

";

#[test]
fn decodes_a_real_anthropic_stream() {
    let resp = decode_split(UPSTREAM.as_bytes(), &[7, 300, 301, 900]).unwrap();
    assert_eq!((resp.id.as_str(), resp.model.as_str()), ("msg_01", "claude-x"));
    assert_eq!(
        resp.choices[0].content,
        vec![
            Part::Reasoning {
                text: "Let me think.".into(),
                signature: Some("EqQB".into())
            },
            Part::text("Okay"),
            Part::ToolCall {
                id: "toolu_1".into(),
                name: "get_weather".into(),
                arguments: "{\"location\": \"San Francisco\"}".into()
            },
            Part::ToolCall {
                id: "toolu_2".into(),
                name: "noop".into(),
                arguments: "{}".into()
            },
        ]
    );
    assert_eq!(resp.choices[0].finish_reason, Some(FinishReason::ToolCalls));
    assert_eq!(
        resp.usage,
        Some(c::Usage {
            input_tokens: 582,
            output_tokens: 89,
            cache_read_tokens: 100,
            cache_creation_tokens: 10,
            reasoning_tokens: 0
        })
    );
}

fn sse(event: &str, data: Value) -> crate::sse::SseEvent {
    crate::sse::SseEvent {
        event: Some(event.into()),
        data: data.to_string(),
        id: None,
    }
}

#[test]
fn decoder_reports_errors_and_ignores_duplicates() {
    let mut dec = EventDecoder::new();
    let mut out = Vec::new();
    let start =
        json!({"type": "message_start", "message": {"id": "a", "model": "m", "usage": {"input_tokens": 3}}});
    dec.decode(&sse("message_start", start.clone()), &mut out)
        .unwrap();
    dec.decode(
        &sse(
            "message_start",
            json!({"type": "message_start", "message": {"id": "b"}}),
        ),
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), 1, "a second message_start is ignored");
    let err = dec
        .decode(
            &sse(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        (err.error_type.as_str(), err.message.as_str(), err.status()),
        ("overloaded_error", "Overloaded", 529)
    );
    let err = dec
        .decode(&sse("content_block_delta", json!({"type": "content_block_delta", "index": 9, "delta": {"type": "text_delta", "text": "x"}})), &mut out)
        .unwrap_err();
    assert_eq!(err.error_type, "api_error");
    let err = dec
        .decode(&sse("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "name": "f"}})), &mut out)
        .unwrap_err();
    assert!(err.message.contains("tool_use"), "{err}");
    let bad = crate::sse::SseEvent {
        event: Some("message_delta".into()),
        data: "{oops".into(),
        id: None,
    };
    assert!(dec.decode(&bad, &mut out).is_err());
    let junk = crate::sse::SseEvent {
        event: Some("keepalive".into()),
        data: "not json".into(),
        id: None,
    };
    dec.decode(&junk, &mut out).unwrap();
    // message_delta without a message_start-level input count repeats it from message_start.
    out.clear();
    dec.decode(&sse("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 4}})), &mut out).unwrap();
    assert_eq!(
        out,
        vec![
            StreamEvent::Finish {
                choice: 0,
                reason: FinishReason::Length,
                stop_sequence: None
            },
            StreamEvent::Usage {
                usage: c::Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                    ..Default::default()
                }
            },
        ]
    );
}

// ---------------------------------------------------------------------------------------------------
// Property tests

fn arb_args() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        (
            "[a-z]{1,5}",
            prop_oneof![
                any::<i32>().prop_map(Value::from),
                "[a-z{}\\[\\]\"\\\\ ,:]{0,8}".prop_map(Value::from),
                any::<bool>().prop_map(Value::from),
            ],
        ),
        0..4,
    )
    .prop_map(|kv| Value::Object(kv.into_iter().collect()).to_string())
}

fn arb_part() -> impl Strategy<Value = Part> {
    prop_oneof![
        "[a-zA-Z ]{1,12}".prop_map(|t| Part::Text { text: t }),
        ("[a-z]{1,6}", "[a-z_]{1,6}", arb_args()).prop_map(|(id, name, arguments)| Part::ToolCall {
            id,
            name,
            arguments
        }),
        ("[a-z ]{1,12}", proptest::option::of("[A-Za-z0-9]{4,12}"))
            .prop_map(|(text, signature)| Part::Reasoning { text, signature }),
        "[A-Za-z0-9]{4,12}".prop_map(|s| Part::Reasoning {
            text: String::new(),
            signature: Some(s)
        }),
        "[A-Za-z0-9]{4,12}".prop_map(|data| Part::RedactedReasoning { data }),
    ]
}

/// Canonical responses as an Anthropic stream can carry them: adjacent text merges, and reasoning
/// continues an unsigned reasoning part (both are what the accumulator does with any stream).
fn arb_response() -> impl Strategy<Value = ChatResponse> {
    (
        proptest::collection::vec(arb_part(), 0..8),
        prop_oneof![
            Just((FinishReason::Stop, None)),
            Just((FinishReason::Stop, Some("END".to_string()))),
            Just((FinishReason::Length, None)),
            Just((FinishReason::ToolCalls, None)),
            Just((FinishReason::ContentFilter, None)),
        ],
        (0u64..1000, 0u64..1000, 0u64..1000, 0u64..1000, 0u64..1000),
    )
        .prop_map(
            |(parts, (reason, stop_sequence), (extra_in, read, created, output, reasoning))| {
                let mut content: Vec<Part> = Vec::new();
                for p in parts {
                    match (content.last_mut(), p) {
                        (Some(Part::Text { text: last }), Part::Text { text }) => last.push_str(&text),
                        (
                            Some(Part::Reasoning {
                                text: last,
                                signature: last_sig @ None,
                            }),
                            Part::Reasoning { text, signature },
                        ) => {
                            last.push_str(&text);
                            *last_sig = signature;
                        }
                        (_, p) => content.push(p),
                    }
                }
                ChatResponse {
                    id: "msg_1".into(),
                    model: "m".into(),
                    created: 0,
                    choices: vec![Choice {
                        index: 0,
                        content,
                        finish_reason: Some(reason),
                        logprobs: None,
                    }],
                    usage: Some(c::Usage {
                        input_tokens: extra_in + read + created,
                        output_tokens: output + reasoning,
                        cache_read_tokens: read,
                        cache_creation_tokens: created,
                        reasoning_tokens: reasoning,
                    }),
                    stop_sequence,
                }
            },
        )
}

/// One OpenAI stream: text, reasoning and several tool calls whose argument pieces interleave.
fn arb_openai_chunks() -> impl Strategy<Value = Vec<ChatCompletionChunk>> {
    let call = (
        "[a-z]{1,6}",
        "[a-z_]{1,6}",
        arb_args(),
        proptest::collection::vec(0usize..40, 0..4),
    );
    (
        proptest::collection::vec(call, 0..4),
        proptest::collection::vec(("[a-zA-Z ]{1,8}", any::<bool>()), 0..5),
        proptest::collection::vec(any::<u16>(), 64),
        prop_oneof![Just("stop"), Just("length"), Just("tool_calls")],
        (0u64..500, 0u64..500, 0u64..500),
    )
        .prop_map(|(calls, texts, keys, finish, (prompt, cached, completion))| {
            // Each call is [start, piece, piece…]; texts are single items. Order items by random keys,
            // keeping every call's own order.
            let mut items: Vec<(u16, Value)> = Vec::new();
            let mut k = keys.into_iter().cycle();
            for (i, (id, name, args, cuts)) in calls.iter().enumerate() {
                let mut points: Vec<usize> = cuts.iter().map(|c| c % (args.len() + 1)).collect();
                points.push(args.len());
                points.sort_unstable();
                let mut own: Vec<u16> = (0..=points.len()).map(|_| k.next().unwrap_or(0)).collect();
                own.sort_unstable();
                let mut own = own.into_iter();
                items.push((own.next().unwrap_or(0), json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]})));
                let mut last = 0;
                for p in points {
                    if p > last && args.is_char_boundary(p) && args.is_char_boundary(last) {
                        items.push((own.next().unwrap_or(0), json!({"tool_calls": [{"index": i, "function": {"arguments": &args[last..p]}}]})));
                        last = p;
                    }
                }
                if last < args.len() {
                    items.push((u16::MAX, json!({"tool_calls": [{"index": i, "function": {"arguments": &args[last..]}}]})));
                }
            }
            for (t, reasoning) in texts {
                let delta = if reasoning { json!({"reasoning_content": t}) } else { json!({"content": t}) };
                items.push((k.next().unwrap_or(0), delta));
            }
            items.sort_by_key(|(key, _)| *key);
            let chunk = |choices: Value, usage: Value| -> ChatCompletionChunk {
                serde_json::from_value(json!({"id": "c1", "object": "chat.completion.chunk", "created": 0, "model": "m", "choices": choices, "usage": usage})).unwrap()
            };
            let mut chunks = vec![chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}}]), Value::Null)];
            for (_, delta) in items {
                chunks.push(chunk(json!([{"index": 0, "delta": delta}]), Value::Null));
            }
            chunks.push(chunk(json!([{"index": 0, "delta": {}, "finish_reason": finish}]), Value::Null));
            chunks.push(chunk(
                json!([]),
                json!({"prompt_tokens": prompt + cached, "completion_tokens": completion, "total_tokens": prompt + cached + completion, "prompt_tokens_details": {"cached_tokens": cached}}),
            ));
            chunks
        })
}

proptest! {
    #[test]
    fn response_survives_anthropic_json(resp in arb_response()) {
        let wire = MessagesResponse::from_canonical(&resp);
        let json = serde_json::to_vec(&wire).unwrap();
        let parsed: MessagesResponse = serde_json::from_slice(&json).unwrap();
        prop_assert_eq!(parsed.to_canonical(), resp);
    }

    #[test]
    fn response_survives_anthropic_stream_cut_anywhere(
        resp in arb_response(),
        cuts in proptest::collection::vec(0usize..100_000, 0..12),
    ) {
        let events = encode_all(&c::response_to_events(&resp));
        assert_well_formed(&events);
        let bytes = frames(&events);
        prop_assert_eq!(decode_split(&bytes, &cuts).unwrap(), resp);
    }

    #[test]
    fn openai_stream_survives_anthropic_stream(
        chunks in arb_openai_chunks(),
        cuts in proptest::collection::vec(0usize..100_000, 0..12),
    ) {
        let mut dec = ChunkDecoder::new();
        let mut canonical = Vec::new();
        for ch in chunks {
            dec.decode(ch, &mut canonical);
        }
        let mut direct = StreamAccumulator::new();
        for e in &canonical {
            direct.push(e);
        }
        let direct = direct.finish();
        let events = encode_all(&canonical);
        assert_well_formed(&events);
        prop_assert_eq!(decode_split(&frames(&events), &cuts).unwrap(), direct);
    }

    #[test]
    fn decoder_never_panics(data in "(event: [a-z_]{0,20}\ndata: [ -~]{0,80}\n\n){0,6}") {
        let mut sse = SseDecoder::new();
        let mut raw = Vec::new();
        sse.push(data.as_bytes(), &mut raw).unwrap();
        sse.finish(&mut raw).unwrap();
        let mut dec = EventDecoder::new();
        let mut out = Vec::new();
        for r in raw {
            let _ = dec.decode(&r, &mut out);
        }
    }

    #[test]
    fn request_round_trip_is_stable(resp in arb_response()) {
        // Any canonical assistant turn, sent back to Anthropic and read again, keeps its signed parts.
        let mut req = user_req();
        req.max_tokens = Some(100);
        let parts = resp.choices[0].content.clone();
        req.messages.push(c::Message::new(Role::Assistant, parts.clone()));
        let (wire, _) = MessagesRequest::from_canonical(&req).unwrap();
        let back = serde_json::from_value::<MessagesRequest>(serde_json::to_value(&wire).unwrap()).unwrap().to_canonical().unwrap();
        let kept: Vec<Part> = parts.into_iter().filter(|p| !matches!(p, Part::Reasoning { signature: None, .. })).collect();
        let got = back.messages.get(1).map(|m| m.content.clone()).unwrap_or_default();
        prop_assert_eq!(got, kept);
    }
}
