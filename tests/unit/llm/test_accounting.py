"""Recorded tokens and spend equal what each upstream reported, exactly, across the matrix."""

from __future__ import annotations

import math
from decimal import Decimal

import anthropic
import openai
import pytest

from tests.llm_fakes import (
    ANTHROPIC_FINAL_OUTPUT,
    ANTHROPIC_START_USAGE,
    BEDROCK_USAGE,
    OPENAI_USAGE,
    FakeUpstream,
)
from tests.unit.llm.conftest import GatewayThread

OA_PRICES = (Decimal("1.0"), Decimal("2.0"), Decimal("0.5"), Decimal("1.25"))
AN_PRICES = (Decimal("3"), Decimal("15"), Decimal("0.3"), Decimal("3.75"))
# (uncached input, output, cache read, cache write) as each upstream reported them
REPORTED = {
    "openai": (OPENAI_USAGE["prompt_tokens"] - 4, OPENAI_USAGE["completion_tokens"], 4, 0),
    "anthropic": (
        ANTHROPIC_START_USAGE["input_tokens"],
        ANTHROPIC_FINAL_OUTPUT,
        ANTHROPIC_START_USAGE["cache_read_input_tokens"],
        ANTHROPIC_START_USAGE["cache_creation_input_tokens"],
    ),
    "bedrock": (
        BEDROCK_USAGE["inputTokens"],
        BEDROCK_USAGE["outputTokens"],
        BEDROCK_USAGE["cacheReadInputTokens"],
        BEDROCK_USAGE["cacheWriteInputTokens"],
    ),
}
MODELS = {
    "chat": "openai",
    "chat-null": "openai",
    "chat-last": "openai",
    "claude": "anthropic",
    "bedrock": "bedrock",
}


def expected_cost(kind: str) -> int:
    prices = OA_PRICES if kind == "openai" else AN_PRICES
    tokens = REPORTED[kind]
    usd = sum(
        (
            Decimal(t) * p / Decimal(1_000_000)
            for t, p in zip(
                (tokens[0], tokens[1], tokens[2], tokens[3]),
                (prices[0], prices[1], prices[2], prices[3]),
                strict=True,
            )
        ),
        Decimal(0),
    )
    return math.ceil(usd * 1_000_000)


def test_expected_costs_by_hand() -> None:
    # 8*1 + 5*2 + 4*0.5 = 20; 10*3 + 7*15 + 30*0.3 + 20*3.75 = 219;
    # 11*3 + 6*15 + 3*0.3 + 2*3.75 = 131.4 -> 132
    assert [expected_cost(k) for k in ("openai", "anthropic", "bedrock")] == [20, 219, 132]


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("surface", ["openai", "anthropic"])
def test_ledger_equals_reported_usage(
    gateway: GatewayThread, model: str, stream: bool, surface: str
) -> None:
    messages = [{"role": "user", "content": "count"}]
    if surface == "openai":
        client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
        if stream:
            for _ in client.chat.completions.create(model=model, messages=messages, stream=True):  # type: ignore[arg-type]
                pass
        else:
            client.chat.completions.create(model=model, messages=messages, temperature=0.7)  # type: ignore[arg-type]
    else:
        ac = anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0)
        if stream:
            with ac.messages.stream(model=model, max_tokens=64, messages=messages) as s:  # type: ignore[arg-type]
                s.get_final_message()
        else:
            ac.messages.create(model=model, max_tokens=64, messages=messages)  # type: ignore[arg-type]
    row = [r for r in gateway.rows() if r["model"] == model][-1]
    kind = MODELS[model]
    got = (
        row["input_tokens"],
        row["output_tokens"],
        row["cache_read_tokens"],
        row["cache_write_tokens"],
    )
    assert got == REPORTED[kind]
    assert row["cost_micros"] == expected_cost(kind)
    assert not row["estimated"]
    assert row["status"] == "ok"


def test_stream_asks_upstream_for_usage(gateway: GatewayThread, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    chunks = list(
        client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "u"}], stream=True
        )
    )  # type: ignore[arg-type]
    assert all(c.usage is None for c in chunks)  # the client did not ask for it
    sent = [r for r in upstream.requests if r["body"].get("stream")][-1]["body"]
    assert sent["stream_options"] == {"include_usage": True}


def test_cut_stream_settles_on_delivered_marked_estimated(gateway: GatewayThread) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    text = ""
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="cut", messages=[{"role": "user", "content": "u"}], stream=True
        ):  # type: ignore[arg-type]
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == "tok0 "
    row = [r for r in gateway.rows() if r["model"] == "cut"][-1]
    assert row["estimated"] and row["status"] == "cut"
    assert row["output_tokens"] == 2  # ceil(len("tok0 ") / 4)
    assert row["input_tokens"] > 0 and row["cost_micros"] > 0


def test_cache_hit_is_free_and_recorded(gateway: GatewayThread, upstream: FakeUpstream) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    messages = [{"role": "user", "content": "cache me"}]
    before = upstream.hits["gpt-fake"]
    first = client.chat.completions.with_raw_response.create(
        model="chat", messages=messages, temperature=0
    )  # type: ignore[arg-type]
    second = client.chat.completions.with_raw_response.create(
        model="chat", messages=messages, temperature=0
    )  # type: ignore[arg-type]
    assert upstream.hits["gpt-fake"] == before + 1
    assert second.headers.get("x-zeroserve-cache") == "hit"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    rows = [r for r in gateway.rows() if r["model"] == "chat"][-2:]
    assert [bool(r["cache_hit"]) for r in rows] == [False, True]
    assert rows[1]["cost_micros"] == 0
    # sampled requests are not cached
    client.chat.completions.create(model="chat", messages=messages, temperature=0.9)  # type: ignore[arg-type]
    assert upstream.hits["gpt-fake"] == before + 2
