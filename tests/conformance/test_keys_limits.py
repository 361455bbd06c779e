"""Issued keys, their limits and budgets, as the official SDKs see them: an `openai` client on a user key
gets `RateLimitError` past its rpm and a 402 past its budget; the `anthropic` client gets the same
refusals in Anthropic's envelope; `/admin/usage` has a row for each."""

from __future__ import annotations

import json
import urllib.request

import anthropic
import openai
import pytest

from conftest import MASTER_KEY, standard_config, wait_until

PRICED = {"gpt-priced": "mock-ok+tokens=3"}
EXTRA = """
[models."gpt-priced".price]
input = 100.0
output = 1000.0
"""


def admin(gw, method: str, path: str, body: dict | None = None) -> dict:
    req = urllib.request.Request(
        f"{gw.url}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {MASTER_KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def gw(gateway_factory, mock_upstream):
    return gateway_factory(standard_config(mock_upstream.url, models=PRICED, extra=EXTRA))


def test_rpm_refusal_is_a_rate_limit_error_in_both_sdks(gw):
    k = admin(gw, "POST", "/admin/keys", {"name": "sdk-rpm", "rpm": 2})
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=k["key"], max_retries=0)
    raw = oa.chat.completions.with_raw_response.create(
        model="gpt-mock", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-ratelimit-limit-requests"] == "2"
    assert raw.headers["x-ratelimit-remaining-requests"] == "1"
    oa.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as e:
        oa.chat.completions.create(model="gpt-mock", messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "rate_limit_requests"
    assert int(e.value.response.headers["retry-after"]) >= 1

    an = anthropic.Anthropic(base_url=gw.url, api_key=k["key"], max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as e:
        an.messages.create(model="gpt-mock", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "rate_limit_error"

    rows = []

    def have_rows():
        rows[:] = admin(gw, "GET", f"/admin/usage?key={k['id']}")["data"]
        return len(rows) == 4

    assert wait_until(have_rows, timeout=10), rows
    assert sorted(r["status"] for r in rows) == [200, 200, 429, 429]


def test_over_budget_is_402_in_both_sdks(gw):
    k = admin(gw, "POST", "/admin/keys", {"name": "sdk-budget", "budget_usd": 0.005, "budget_period": "monthly"})
    oa = openai.OpenAI(base_url=f"{gw.url}/v1", api_key=k["key"], max_retries=0)
    spent = 0.0
    refused = None
    for _ in range(10):
        try:
            raw = oa.chat.completions.with_raw_response.create(
                model="gpt-priced", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
            )
            spent += float(raw.headers["x-switchyard-cost-usd"])
        except openai.APIStatusError as e:
            refused = e
            break
    assert refused is not None, f"never refused; spent {spent}"
    assert refused.status_code == 402
    assert refused.code == "budget_exceeded"
    assert refused.response.headers["x-budget-period"] == "monthly"
    me = oa.get("/me", cast_to=object)
    assert abs(me["spend_usd"] - spent) < 1e-6

    an = anthropic.Anthropic(base_url=gw.url, api_key=k["key"], max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        an.messages.create(model="gpt-priced", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 402
    assert e.value.body["error"]["type"] == "billing_error"
