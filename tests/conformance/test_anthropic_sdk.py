"""The official `anthropic` Python SDK against the real `switchyard` binary, routed to an
OpenAI-compatible upstream (translated through the canonical model) and to an Anthropic upstream (the
same-dialect fast path), both served by `mock-upstream`."""

from __future__ import annotations

import json
import uuid

import anthropic
import pytest

from conftest import MASTER_KEY, standard_config

# Per upstream kind: the public model for plain text, for one tool call, for two parallel tool calls,
# for thinking, and for an injected 529.
MODELS = {
    "openai": {
        "text": "gpt-mock",
        "tool": "gpt-tools",
        "tools2": "sdk-oa-tools2",
        "think": "sdk-oa-think",
        "429": "gpt-429",
    },
    "anthropic": {
        "text": "sdk-an-text",
        "tool": "sdk-an-tool",
        "tools2": "sdk-an-tools2",
        "think": "sdk-an-think",
        "429": "sdk-an-429",
    },
}


def anthropic_extra(upstream_url: str) -> str:
    """An Anthropic provider at the mock and the models these suites route to it."""
    lines = [
        "[providers.anthropic]",
        'kind = "anthropic"',
        f'base_url = "{upstream_url}"',
        'api_key = "sk-upstream-anthropic"',
        "",
    ]
    models = {
        "sdk-an-text": "claude-mock",
        "sdk-an-tool": "claude-mock+tools=1",
        "sdk-an-tools2": "claude-mock+tools=2",
        "sdk-an-think": "claude-mock+thinking+redacted",
        "sdk-an-429": "claude-mock+status=429+retry_after=7",
        "sdk-an-529": "claude-mock+status=529",
        "sdk-an-error-after": "claude-mock+error_after=2+tokens=10",
    }
    for public, upstream in models.items():
        lines += [f'[models."{public}"]', 'provider = "anthropic"', f'model = "{upstream}"', ""]
    return "\n".join(lines)


def anthropic_gateway_config(upstream_url: str) -> str:
    return standard_config(
        upstream_url,
        models={"sdk-oa-tools2": "mock-ok+tools=2+interleave", "sdk-oa-think": "mock-ok+thinking"},
        extra=anthropic_extra(upstream_url),
    )


@pytest.fixture(scope="session")
def anthropic_gateway(gateway_factory, mock_upstream):
    return gateway_factory(anthropic_gateway_config(mock_upstream.url))


@pytest.fixture
def client(anthropic_gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=anthropic_gateway.url, api_key=MASTER_KEY, max_retries=0, timeout=15)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def upstream_requests(mock_upstream, marker: str) -> list[dict]:
    return [r for r in mock_upstream.stats()["requests"] if marker in json.dumps(r["body"])]


UPSTREAMS = ["openai", "anthropic"]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_messages_create(client, mock_upstream, upstream):
    text = unique("hello")
    model = MODELS[upstream]["text"]
    msg = client.messages.create(
        model=model,
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": text}],
    )
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert msg.model == model
    assert msg.id
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == f"echo: {text}"
    assert msg.stop_reason == "end_turn"
    assert msg.stop_sequence is None
    assert msg.usage.input_tokens == 3  # "Be brief." + the word: the mock counts words
    assert msg.usage.output_tokens == 2
    [up] = upstream_requests(mock_upstream, text)
    assert up["route"] == ("POST /v1/messages" if upstream == "anthropic" else "POST /v1/chat/completions")


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_messages_create_with_raw_response_headers(client, upstream):
    raw = client.messages.with_raw_response.create(
        model=MODELS[upstream]["text"], max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    assert raw.request_id == raw.headers["request-id"]
    assert raw.parse().content[0].text == "echo: hi"


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_messages_stream_text_and_final_message(client, upstream):
    text = f"{unique('alpha')} beta gamma"
    model = MODELS[upstream]["text"]
    with client.messages.stream(model=model, max_tokens=64, messages=[{"role": "user", "content": text}]) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert len(pieces) > 1, "streamed in pieces"
    assert "".join(pieces) == f"echo: {text}"
    assert final.model == model
    assert [b.type for b in final.content] == ["text"]
    assert final.content[0].text == f"echo: {text}"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 4
    assert final.usage.input_tokens == 3  # message_start's count, or message_delta's on the canonical path


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_messages_stream_events_in_order(client, upstream):
    with client.messages.stream(
        model=MODELS[upstream]["text"], max_tokens=64, messages=[{"role": "user", "content": "one two"}]
    ) as stream:
        kinds = [e.type for e in stream]
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert kinds.count("message_start") == 1
    assert "content_block_start" in kinds and "content_block_stop" in kinds
    assert kinds.index("message_delta") > kinds.index("content_block_stop")


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_tool_round_trip(client, mock_upstream, upstream):
    question = unique("weather")
    first = client.messages.create(
        model=MODELS[upstream]["tool"],
        max_tokens=256,
        tools=[WEATHER_TOOL],
        tool_choice={"type": "auto"},
        messages=[{"role": "user", "content": question}],
    )
    assert first.stop_reason == "tool_use"
    uses = [b for b in first.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.name == "get_weather"
    assert use.input == {"city": "Paris", "unit": "celsius", "i": 0}
    assert use.id
    [text_block] = [b for b in first.content if b.type == "text"]
    assert text_block.text == "Let me check."

    result = unique("18C")
    second = client.messages.create(
        model=MODELS[upstream]["text"],
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": result}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    [up] = upstream_requests(mock_upstream, result)
    body = up["body"]
    if upstream == "anthropic":
        assert body["messages"][1]["content"][1] == {
            "type": "tool_use", "id": use.id, "name": "get_weather", "input": use.input
        }
        assert body["messages"][2]["content"] == [
            {"type": "tool_result", "tool_use_id": use.id, "content": result}
        ]
        assert second.content[0].text == f"echo: {result}"
    else:
        assistant = body["messages"][1]
        assert assistant["role"] == "assistant"
        assert assistant["content"] == "Let me check."
        assert assistant["tool_calls"] == [{
            "id": use.id,
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps(use.input, separators=(",", ":"))},
        }]
        assert body["messages"][2] == {"role": "tool", "tool_call_id": use.id, "content": result}
        assert body["tools"][0]["function"]["name"] == "get_weather"


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_streamed_parallel_tool_use(client, upstream):
    with client.messages.stream(
        model=MODELS[upstream]["tools2"],
        max_tokens=256,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather in two places"}],
    ) as stream:
        json_deltas = [e for e in stream if e.type == "content_block_delta" and e.delta.type == "input_json_delta"]
        final = stream.get_final_message()
    assert json_deltas, "arguments streamed as input_json_delta"
    assert final.stop_reason == "tool_use"
    uses = [b for b in final.content if b.type == "tool_use"]
    assert [u.input for u in uses] == [
        {"city": "Paris", "unit": "celsius", "i": 0},
        {"city": "Paris", "unit": "celsius", "i": 1},
    ]
    assert len({u.id for u in uses}) == 2


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_thinking(client, mock_upstream, upstream):
    text = unique("think")
    msg = client.messages.create(
        model=MODELS[upstream]["think"],
        max_tokens=4096,
        thinking={"type": "enabled", "budget_tokens": 2048},
        messages=[{"role": "user", "content": text}],
    )
    thinking = [b for b in msg.content if b.type == "thinking"]
    assert len(thinking) == 1
    assert thinking[0].thinking == "Let me think step by step about what the user asked."
    assert msg.content[-1].text == f"echo: {text}"
    [up] = upstream_requests(mock_upstream, text)
    if upstream == "anthropic":
        assert thinking[0].signature.startswith("EqMockSignature")
        assert [b.type for b in msg.content] == ["thinking", "redacted_thinking", "text"]
        assert up["body"]["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    else:
        assert up["body"]["reasoning_effort"] == "low"  # 2048 → low, the documented table


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_count_tokens(client, mock_upstream, upstream):
    raw = client.messages.with_raw_response.count_tokens(
        model=MODELS[upstream]["text"],
        system="Be brief.",
        messages=[{"role": "user", "content": "one two three four"}],
    )
    count = raw.parse()
    if upstream == "anthropic":
        assert count.input_tokens == 6  # the upstream's own count: the mock counts words
        assert raw.headers["x-switchyard-token-count"] == "exact"
    else:
        assert count.input_tokens == 18  # o200k_base + OpenAI's framing
        assert raw.headers["x-switchyard-token-count"] == "estimate"


def test_sdk_through_the_api_anthropic_alias_and_bearer(anthropic_gateway):
    # `auth_token` sends `Authorization: Bearer`; `/api/anthropic` is the alias base URL.
    c = anthropic.Anthropic(
        base_url=f"{anthropic_gateway.url}/api/anthropic", auth_token=MASTER_KEY, max_retries=0, timeout=15
    )
    msg = c.messages.create(model="sdk-an-text", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "echo: hi"
    page = c.models.list()
    ids = [m.id for m in page.data]
    assert "sdk-an-text" in ids and "gpt-mock" in ids
    assert c.models.retrieve("sdk-an-text").id == "sdk-an-text"


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_errors_are_the_sdk_exceptions(client, upstream):
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model=MODELS[upstream]["429"], max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 429
    assert e.value.body["type"] == "error"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    # The upstream's own Retry-After (3 or 7), or, once its 429 has banned the deployment, the gateway
    # answering for it with the seconds left.
    assert 1 <= int(e.value.response.headers["retry-after"]) <= 7

    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=MODELS[upstream]["text"], max_tokens=16, messages=[])
    assert e.value.body["error"]["type"] == "invalid_request_error"


def test_overloaded_is_529(client):
    with pytest.raises(anthropic.OverloadedError) as e:
        client.messages.create(model="sdk-an-529", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 529
    assert e.value.body["error"]["type"] == "overloaded_error"


def test_bad_key_is_authentication_error(anthropic_gateway):
    c = anthropic.Anthropic(base_url=anthropic_gateway.url, api_key="sk-wrong", max_retries=0, timeout=15)
    with pytest.raises(anthropic.AuthenticationError) as e:
        c.messages.create(model="gpt-mock", max_tokens=16, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["type"] == "authentication_error"


def test_error_mid_stream_raises(client):
    with pytest.raises(anthropic.APIStatusError) as e:
        with client.messages.stream(
            model="sdk-an-error-after", max_tokens=64, messages=[{"role": "user", "content": "x"}]
        ) as stream:
            for _ in stream:
                pass
    assert "overloaded_error" in str(e.value) or "Overloaded" in str(e.value)
