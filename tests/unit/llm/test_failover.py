"""Failover, retries, circuit breakers and latency routing against misbehaving upstreams."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.llm_fakes import FakeUpstream
from tests.unit.llm.conftest import GatewayThread

MESSAGES = [{"role": "user", "content": "hi"}]


def _states(gateway: GatewayThread, model: str) -> dict[str, object]:
    return {s.name: s for s in gateway.service.models[model].states}


def test_500_and_slow_fail_over_to_the_healthy_one(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    served = []
    for _ in range(8):
        raw = client.chat.completions.with_raw_response.create(model="trio", messages=MESSAGES)  # type: ignore[arg-type]
        served.append(raw.headers["x-zeroserve-deployment"])
    assert served == ["trio-good"] * 8
    states = _states(gateway, "trio")
    assert states["trio-500"].breaker == "open"  # type: ignore[attr-defined]
    assert states["trio-slow"].breaker == "open"  # type: ignore[attr-defined]
    # with both breakers open, the bad deployments see no traffic
    bad = upstream.hits["gpt-500"], upstream.hits["gpt-slow"]
    client.chat.completions.create(model="trio", messages=MESSAGES)  # type: ignore[arg-type]
    assert (upstream.hits["gpt-500"], upstream.hits["gpt-slow"]) == bad


def test_breaker_opens_then_closes_after_cooldown(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    upstream.fail_500 = True
    state = _states(gateway, "flaky")["flaky-1"]
    for _ in range(3):
        client.chat.completions.create(model="flaky", messages=MESSAGES)  # type: ignore[arg-type]
    assert state.breaker == "open"  # type: ignore[attr-defined]
    hits = upstream.hits["gpt-flaky"]
    client.chat.completions.create(model="flaky", messages=MESSAGES)  # type: ignore[arg-type]
    assert upstream.hits["gpt-flaky"] == hits  # open: not tried
    upstream.fail_500 = False
    deadline = time.monotonic() + 5
    served = ""
    while time.monotonic() < deadline and served != "flaky-1":
        time.sleep(0.1)
        raw = client.chat.completions.with_raw_response.create(model="flaky", messages=MESSAGES)  # type: ignore[arg-type]
        served = raw.headers["x-zeroserve-deployment"]
    assert served == "flaky-1"
    assert state.breaker == "closed"  # type: ignore[attr-defined]
    text = httpx.get(f"{gateway.url}/v1/models").status_code
    assert text == 200


def test_latency_routing_moves_traffic_off_the_slow_one(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    before_slow, before_fast = upstream.hits["gpt-slow"], upstream.hits["gpt-fake"]
    served = [
        client.chat.completions.with_raw_response.create(
            model="latency", messages=MESSAGES
        ).headers["x-zeroserve-deployment"]  # type: ignore[arg-type]
        for _ in range(20)
    ]
    slow = upstream.hits["gpt-slow"] - before_slow
    assert served.count("lat-fast") >= 17
    assert slow <= 3
    assert upstream.hits["gpt-fake"] - before_fast == served.count("lat-fast")


def test_429_everywhere_is_429_with_retry_after(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    before = upstream.hits["gpt-429"]
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "limited", "messages": MESSAGES},
        timeout=10,
    )
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert (
        upstream.hits["gpt-429"] - before == 3
    )  # first try + 2 retries, backing off per Retry-After


def test_context_window_error_falls_back_to_a_larger_model(gateway: GatewayThread) -> None:
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "small", "messages": MESSAGES},
        timeout=10,
    )
    assert r.status_code == 200
    assert r.headers["x-zeroserve-deployment"] == "oa-main"


def test_prompt_over_every_window_is_400(gateway: GatewayThread) -> None:
    huge = [{"role": "user", "content": "x" * 400_000}]
    r = httpx.post(
        f"{gateway.url}/v1/chat/completions", json={"model": "tiny", "messages": huge}, timeout=10
    )
    assert r.status_code == 400
    assert "context window" in r.json()["error"]["message"]


def test_client_disconnect_cancels_the_upstream(
    gateway: GatewayThread, upstream: FakeUpstream
) -> None:
    upstream.chunks, upstream.chunk_delay_s = 200, 0.02
    try:
        before = upstream.cancelled
        with httpx.stream(
            "POST",
            f"{gateway.url}/v1/chat/completions",
            json={"model": "chat", "messages": MESSAGES, "stream": True},
            timeout=10,
        ) as r:
            lines = r.iter_lines()
            for line in lines:
                if line.startswith("data: ") and "tok1" in line:
                    break
        deadline = time.monotonic() + 3
        while upstream.cancelled == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert upstream.cancelled == before + 1
        row = [r for r in gateway.rows() if r["model"] == "chat"][-1]
        assert row["status"] == "cut" and row["estimated"]
    finally:
        upstream.chunks, upstream.chunk_delay_s = 3, 0.0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_malformed_json_is_400_in_the_callers_format(gateway: GatewayThread, path: str) -> None:
    r = httpx.post(
        f"{gateway.url}{path}", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 400
    body = r.json()
    if path == "/v1/messages":
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert "not valid JSON" in body["error"]["message"]
