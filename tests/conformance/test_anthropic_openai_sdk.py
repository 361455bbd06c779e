"""The official `openai` Python SDK routed to an Anthropic upstream (`mock-upstream`'s Anthropic routes):
the gateway translates OpenAI chat completions to Anthropic Messages and back — text, streaming,
parallel tool calls in a stream, reasoning (`reasoning_effort` → a thinking budget; `reasoning_content`
and signed `thinking_blocks` back), images."""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from conftest import MASTER_KEY
from test_anthropic_sdk import anthropic_gateway  # noqa: F401  (the session fixture)

REASONING = "Let me think step by step about what the user asked."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture
def client(anthropic_gateway) -> openai.OpenAI:  # noqa: F811
    return openai.OpenAI(base_url=f"{anthropic_gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=15)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def upstream_body(mock_upstream, marker: str) -> dict:
    found = [r for r in mock_upstream.requests("POST /v1/messages") if marker in json.dumps(r["body"])]
    assert len(found) == 1, found
    return found[0]["body"]


def test_text(client, mock_upstream):
    text = unique("hello")
    resp = client.chat.completions.create(
        model="sdk-an-text",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        max_tokens=50,
        stop=["###"],
        user="user-7",
    )
    assert resp.object == "chat.completion"
    assert resp.model == "sdk-an-text"
    assert resp.id.startswith("msg_")
    assert resp.choices[0].message.role == "assistant"
    assert resp.choices[0].message.content == f"echo: {text}"
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 3
    assert resp.usage.completion_tokens == 2
    assert resp.usage.total_tokens == 5
    body = upstream_body(mock_upstream, text)
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": text}]
    assert body["max_tokens"] == 50
    assert body["stop_sequences"] == ["###"]
    assert body["metadata"] == {"user_id": "user-7"}
    assert body["model"] == "claude-mock"


def test_streaming(client):
    text = f"{unique('alpha')} beta gamma"
    stream = client.chat.completions.create(
        model="sdk-an-text",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len({c.id for c in chunks}) == 1
    assert {c.model for c in chunks} == {"sdk-an-text"}
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == f"echo: {text}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 4


def test_streaming_without_usage_has_no_usage_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="sdk-an-text", messages=[{"role": "user", "content": "x"}], stream=True
        )
    )
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_parallel_tool_calls_in_a_stream(client, mock_upstream):
    marker = unique("tools")
    stream = client.chat.completions.create(
        model="sdk-an-tools2",
        messages=[{"role": "user", "content": marker}],
        tools=TOOLS,
        tool_choice="auto",
        parallel_tool_calls=True,
        stream=True,
    )
    calls: dict[int, dict] = {}
    text = ""
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                # id and name come first, then the argument pieces.
                assert tc.id and tc.function.name, tc
                calls[tc.index] = {"id": tc.id, "name": tc.function.name, "arguments": ""}
            calls[tc.index]["arguments"] += tc.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert text == "Let me check."
    assert finish == "tool_calls"
    assert sorted(calls) == [0, 1]
    for i, call in calls.items():
        assert call["id"].startswith("toolu_")
        assert call["name"] == "get_weather"
        assert json.loads(call["arguments"]) == {"city": "Paris", "unit": "celsius", "i": i}
    body = upstream_body(mock_upstream, marker)
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    assert body["tool_choice"] == {"type": "auto"}


def test_tool_results_go_back_as_tool_result_blocks(client, mock_upstream):
    result = unique("sunny")
    resp = client.chat.completions.create(
        model="sdk-an-text",
        messages=[
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "toolu_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                    {"id": "toolu_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_a", "content": result},
            {"role": "tool", "tool_call_id": "toolu_b", "content": "rain"},
        ],
        tools=TOOLS,
    )
    assert resp.choices[0].finish_reason == "stop"
    body = upstream_body(mock_upstream, result)
    assert body["messages"][1] == {
        "role": "assistant",
        "content": [
            {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"city": "Rome"}},
        ],
    }
    # Both results in one user message, in order.
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_a", "content": result},
            {"type": "tool_result", "tool_use_id": "toolu_b", "content": "rain"},
        ],
    }


def test_reasoning(client, mock_upstream):
    marker = unique("reason")
    resp = client.chat.completions.create(
        model="sdk-an-think",
        messages=[{"role": "user", "content": marker}],
        reasoning_effort="medium",
        max_completion_tokens=16000,
    )
    msg = resp.choices[0].message
    extra = msg.model_extra or {}
    assert extra["reasoning_content"] == REASONING
    blocks = extra["thinking_blocks"]
    assert [b["type"] for b in blocks] == ["thinking", "redacted_thinking"]
    assert blocks[0]["signature"].startswith("EqMockSignature")
    assert msg.content == f"echo: {marker}"
    body = upstream_body(mock_upstream, marker)
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 8192}  # medium → 8192
    assert body["max_tokens"] == 16000

    # The signed blocks go back unchanged next turn.
    follow = unique("next")
    client.chat.completions.create(
        model="sdk-an-think",
        messages=[
            {"role": "user", "content": marker},
            {"role": "assistant", "content": msg.content, "reasoning_content": REASONING, "thinking_blocks": blocks},
            {"role": "user", "content": follow},
        ],
        reasoning_effort="low",
    )
    body = upstream_body(mock_upstream, follow)
    assert body["messages"][1]["content"][:2] == [
        {"type": "thinking", "thinking": REASONING, "signature": blocks[0]["signature"]},
        {"type": "redacted_thinking", "data": blocks[1]["data"]},
    ]
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 2048}  # low → 2048


def test_reasoning_streamed(client):
    stream = client.chat.completions.create(
        model="sdk-an-think",
        messages=[{"role": "user", "content": "x"}],
        reasoning_effort="high",
        max_completion_tokens=30000,
        stream=True,
    )
    reasoning = ""
    signatures = []
    content = ""
    for chunk in stream:
        if not chunk.choices:
            continue
        extra = chunk.choices[0].delta.model_extra or {}
        reasoning += extra.get("reasoning_content") or ""
        signatures += [b.get("signature") for b in extra.get("thinking_blocks") or [] if b["type"] == "thinking"]
        content += chunk.choices[0].delta.content or ""
    assert reasoning == REASONING
    assert len(signatures) == 1 and signatures[0].startswith("EqMockSignature")
    assert content == "echo: x"


def test_images(client, mock_upstream):
    marker = unique("img")
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    resp = client.chat.completions.create(
        model="sdk-an-text",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": marker},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            }
        ],
    )
    assert resp.choices[0].message.content == f"echo: {marker}"
    body = upstream_body(mock_upstream, marker)
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
    ]


def test_refusals_and_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="sdk-an-text", messages=[{"role": "user", "content": "x"}], n=2)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="sdk-an-429", messages=[{"role": "user", "content": "x"}])
    # 7 from the upstream, or the seconds left of the ban its 429 put on the deployment.
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 7
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="sdk-an-529", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503
