"""CLI agents as providers, through the official SDKs: text, streams and tool calls from Claude Code,
Codex and Gemini CLI (fake programs in tests/fixtures/fake-cli that print each one's real output
format) and from a plain command, on the OpenAI and the Anthropic surface."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from conftest import MASTER_KEY, ROOT

FAKE = ROOT / "tests" / "fixtures" / "fake-cli"
MODELS = {"cc": "claude", "cx": "codex", "gm": "gemini", "cmd": "command"}
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


def config() -> str:
    lines = ["[server]", 'address = "127.0.0.1:0"', "", "[auth]", f'master_key = "{MASTER_KEY}"', ""]
    for model, preset in MODELS.items():
        lines += [
            f"[providers.{preset}]",
            'kind = "cli"',
            f'preset = "{preset}"',
            f'command = "{FAKE / preset}"',
            "max_parallel = 2",
        ]
        if preset == "command":
            lines.append('args = ["{prompt}"]')
        lines += ["", f"[models.{model}]", f'provider = "{preset}"', 'model = "default"', ""]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def gw(gateway_factory):
    return gateway_factory(config())


@pytest.fixture(scope="module")
def oa(gw):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0)


@pytest.fixture(scope="module")
def an(gw):
    return anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", list(MODELS))
def test_openai_sdk_text_and_stream(oa, model):
    preset = MODELS[model]
    r = oa.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a colour."}])
    assert r.choices[0].message.content == f"Hello from {preset}. You said: Name a colour."
    assert r.choices[0].finish_reason == "stop"
    chunks = list(
        oa.chat.completions.create(
            model=model,
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "Stream please."}],
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == f"Hello from {preset}. You said: Stream please."
    # Codex prints whole messages (`item.completed`); the others stream word by word.
    pieces = sum(1 for c in chunks if c.choices and c.choices[0].delta.content)
    assert pieces == 1 if preset == "codex" else pieces > 1
    if preset != "command":
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


@pytest.mark.parametrize("model", ["cc", "cx", "gm"])
def test_openai_sdk_tool_calls(oa, model):
    r = oa.chat.completions.create(
        model=model,
        tools=TOOLS,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls"
    assert msg.tool_calls[0].function.name == "get_weather"
    assert json.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    # The round trip: the result goes back, and the CLI sees the earlier turns as context.
    r2 = oa.chat.completions.create(
        model=model,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "tool_calls": [tc.model_dump() for tc in msg.tool_calls]},
            {"role": "tool", "tool_call_id": msg.tool_calls[0].id, "content": "sunny"},
            {"role": "user", "content": "Thanks, summarise."},
        ],
    )
    assert r2.choices[0].message.content.endswith("You said: Thanks, summarise.")


@pytest.mark.parametrize("model", list(MODELS))
def test_anthropic_sdk_text_and_stream(an, model):
    preset = MODELS[model]
    m = an.messages.create(
        model=model, max_tokens=100, system="Be brief.", messages=[{"role": "user", "content": "Hi there."}]
    )
    text_blocks = [b for b in m.content if b.type == "text"]
    assert text_blocks[0].text == f"Hello from {preset}. You said: Hi there."
    if preset == "codex":
        # Codex's reasoning items come through as a thinking block.
        assert m.content[0].type == "thinking" and m.content[0].thinking == "**Answering**"
    assert m.stop_reason == "end_turn"
    with an.messages.stream(model=model, max_tokens=100, messages=[{"role": "user", "content": "Go."}]) as s:
        text = "".join(s.text_stream)
    assert text == f"Hello from {preset}. You said: Go."


def test_anthropic_sdk_tool_use(an):
    m = an.messages.create(
        model="cc",
        max_tokens=100,
        tools=[{"name": "get_weather", "description": "Weather", "input_schema": TOOLS[0]["function"]["parameters"]}],
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
    )
    assert m.stop_reason == "tool_use"
    block = next(b for b in m.content if b.type == "tool_use")
    assert block.name == "get_weather" and block.input == {"city": "Paris"}
