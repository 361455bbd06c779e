"""The official `openai` Python SDK against the real `switchyard` binary in front of `mock-upstream`."""

from __future__ import annotations

import json
import uuid

import openai
import pytest

from conftest import MASTER_KEY, standard_config


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=15)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_chat_non_streaming(client):
    text = unique("hello")
    resp = client.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": text}])
    assert resp.model == "gpt-mock"
    assert resp.id
    assert resp.object == "chat.completion"
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == f"echo: {text}"
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == 1
    assert resp.usage.completion_tokens == 2
    assert resp.usage.total_tokens == 3


def test_chat_streaming_with_include_usage(client):
    text = f"{unique('alpha')} beta gamma"
    stream = client.chat.completions.create(
        model="gpt-mock",
        messages=[{"role": "user", "content": text}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)  # the SDK consumes `data: [DONE]` itself
    assert chunks, "no chunks"
    ids = {c.id for c in chunks}
    assert len(ids) == 1, ids
    assert {c.model for c in chunks} == {"gpt-mock"}
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == f"echo: {text}"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens == 3
    assert last.usage.completion_tokens == 4
    assert last.usage.total_tokens == 7


def test_chat_streaming_without_include_usage_shows_no_usage(client):
    stream = client.chat.completions.create(
        model="gpt-mock", messages=[{"role": "user", "content": "quiet please"}], stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: quiet please"
    assert all(c.usage is None for c in chunks)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_two_turn_tool_call(client, mock_upstream):
    question = unique("weather-in-paris")
    messages = [{"role": "user", "content": question}]
    first = client.chat.completions.create(model="gpt-tools", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] == "Paris"

    messages.append(
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.function.name, "arguments": call.function.arguments},
                }
            ],
        }
    )
    messages.append({"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 21, "sky": "clear"}'})
    second = client.chat.completions.create(model="gpt-mock", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == f"echo: {question}"

    # The upstream received the assistant tool_calls and the tool result as sent.
    seen = [
        r["body"]
        for r in mock_upstream.requests()
        if isinstance(r["body"], dict) and r["body"].get("messages", [{}])[0].get("content") == question
    ]
    assert len(seen) == 2, seen
    assert seen[0]["model"] == "mock-ok+tools=1"
    assert seen[0]["tools"][0]["function"]["name"] == "get_weather"
    up = seen[1]
    assert up["model"] == "mock-ok"
    assert [m["role"] for m in up["messages"]] == ["user", "assistant", "tool"]
    assistant = up["messages"][1]
    assert assistant["tool_calls"][0]["id"] == call.id
    assert assistant["tool_calls"][0]["function"]["name"] == "get_weather"
    assert json.loads(assistant["tool_calls"][0]["function"]["arguments"]) == json.loads(call.function.arguments)
    tool = up["messages"][2]
    assert tool["tool_call_id"] == call.id
    assert tool["content"] == '{"temp_c": 21, "sky": "clear"}'


def test_streamed_tool_call(client):
    stream = client.chat.completions.create(
        model="gpt-tools",
        messages=[{"role": "user", "content": "weather?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    name, args, call_id = "", "", None
    for chunk in stream:
        for tc in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            call_id = call_id or tc.id
            if tc.function and tc.function.name:
                name += tc.function.name
            if tc.function and tc.function.arguments:
                args += tc.function.arguments
    assert call_id
    assert name == "get_weather"
    assert json.loads(args)["city"] == "Paris"


def test_response_headers_with_raw_response(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-mock", messages=[{"role": "user", "content": "headers"}]
    )
    assert raw.status_code == 200
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-switchyard-provider") == "mock"
    completion = raw.parse()
    assert completion.model == "gpt-mock"
    assert completion.choices[0].message.content == "echo: headers"


def test_request_id_is_echoed_to_the_sdk(client):
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-mock",
        messages=[{"role": "user", "content": "trace"}],
        extra_headers={"x-request-id": "conformance-trace-1"},
    )
    assert raw.headers.get("x-request-id") == "conformance-trace-1"


def test_wrong_key_raises_authentication_error(gateway):
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 401
    assert e.value.response.headers.get("x-request-id")
    assert isinstance(e.value.body, dict) and e.value.body.get("type") == "authentication_error"


def test_unknown_model_raises_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert e.value.code == "model_not_found"
    assert e.value.param == "model"


def test_temperature_3_raises_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="gpt-mock", messages=[{"role": "user", "content": "hi"}], temperature=3
        )
    assert e.value.status_code == 400
    assert e.value.param == "temperature"
    assert e.value.type == "invalid_request_error"


def test_upstream_429_raises_rate_limit_error(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model="gpt-429", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 429
    # 7 from the upstream, or the seconds left of the ban its 429 put on the deployment.
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 7
    assert "429" in e.value.message


def test_upstream_5xx_raises_internal_server_error(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model="gpt-500", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 502


@pytest.mark.parametrize("model", ["gpt-drop", "gpt-error-after"])
def test_stream_broken_upstream_raises_api_error(client, model):
    stream = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
    assert "".join(received).startswith("w1 w2")


def test_models_list_and_retrieve(client):
    ids = [m.id for m in client.models.list()]
    assert "gpt-mock" in ids and "gpt-tools" in ids
    m = client.models.retrieve("gpt-mock")
    assert m.id == "gpt-mock"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")


def test_api_openai_base_url(gateway):
    c = openai.OpenAI(base_url=f"{gateway.url}/api/openai", api_key=MASTER_KEY, max_retries=0, timeout=15)
    resp = c.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "aliased"}])
    assert resp.choices[0].message.content == "echo: aliased"
    stream = c.chat.completions.create(
        model="gpt-mock", messages=[{"role": "user", "content": "aliased stream"}], stream=True
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices) == "echo: aliased stream"
    assert "gpt-mock" in [m.id for m in c.models.list()]


@pytest.mark.parametrize("size", [70_000, 4_000_000])
def test_oversized_body_is_413(gateway_factory, mock_upstream, size):
    small = standard_config(mock_upstream.url).replace(
        'address = "127.0.0.1:0"', 'address = "127.0.0.1:0"\nmax_body_bytes = 65536'
    )
    gw = gateway_factory(small)
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=15)
    with pytest.raises(openai.APIStatusError) as e:
        c.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "x" * size}])
    assert e.value.status_code == 413
    assert e.value.code == "request_too_large"
