"""Gemini and Bedrock upstreams through the official SDKs: the gateway speaks their native APIs
(generateContent with x-goog-api-key; Converse / ConverseStream signed with SigV4, the binary event
stream decoded) to a mock that checks the key and the signature, and the SDKs see OpenAI and
Anthropic answers: text, streams and tool calls."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import MASTER_KEY, Process, binary

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def native_mock():
    exe = binary("MOCK_UPSTREAM_BIN", "mock-upstream")
    proc = Process(
        [str(exe), "--listen", "127.0.0.1:0", "--require-key", "g-key", "--aws-credentials", f"{AKID}:{SECRET}"],
        name="mock-native",
    )
    try:
        yield proc.url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def gw(gateway_factory, native_mock):
    config = f"""[server]
address = "127.0.0.1:0"
[auth]
master_key = "{MASTER_KEY}"

[providers.google]
kind = "gemini"
base_url = "{native_mock}"
api_key = "g-key"

[providers.aws]
kind = "bedrock"
base_url = "{native_mock}"
region = "us-west-2"
aws_access_key_id = "{AKID}"
aws_secret_access_key = "{SECRET}"

[models.gem]
provider = "google"
model = "mock-ok"
[models.gem-tools]
provider = "google"
model = "mock-ok+tools=1"
[models.br]
provider = "aws"
model = "anthropic.claude-3-5-haiku-20241022-v1:0"
[models.br-tools]
provider = "aws"
model = "mock-ok+tools=1"
"""
    return gateway_factory(config)


@pytest.fixture(scope="module")
def oa(gw):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture(scope="module")
def an(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["gem", "br"])
def test_openai_sdk_text_and_stream(oa, model):
    r = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hello native"}])
    text = r.choices[0].message.content
    assert "Hello native" in text
    assert r.usage.prompt_tokens > 0 and r.usage.completion_tokens > 0
    chunks = list(
        oa.chat.completions.create(
            model=model,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Hello native"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage is not None


@pytest.mark.parametrize("model", ["gem-tools", "br-tools"])
def test_openai_sdk_tool_calls(oa, model):
    r = oa.chat.completions.create(
        model=model, tools=TOOLS, messages=[{"role": "user", "content": "What is the weather in Paris?"}]
    )
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    json.loads(call.function.arguments)


@pytest.mark.parametrize("model", ["gem", "br"])
def test_anthropic_sdk_text_and_stream(an, model):
    m = an.messages.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hi from Anthropic"}]
    )
    text = "".join(b.text for b in m.content if b.type == "text")
    assert "Hi from Anthropic" in text
    assert m.stop_reason == "end_turn"
    with an.messages.stream(
        model=model, max_tokens=100, messages=[{"role": "user", "content": "Hi from Anthropic"}]
    ) as s:
        assert "".join(s.text_stream) == text


@pytest.mark.parametrize("model", ["gem-tools", "br-tools"])
def test_anthropic_sdk_tool_use(an, model):
    m = an.messages.create(
        model=model,
        max_tokens=100,
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    assert m.stop_reason == "tool_use"
    assert next(b for b in m.content if b.type == "tool_use").name == "get_weather"
