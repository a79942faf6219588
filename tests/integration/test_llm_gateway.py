"""The LLM gateway in a real server with two gateway processes, a real SQLite ledger,
the CLI, and a fake upstream on loopback speaking OpenAI's wire format."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.llm_fakes import FakeUpstream
from zeroserve.process import ServerProcess

PRICES = {"input": "1.0", "output": "2.0", "cache_read": "0.5", "cache_write": "1.25"}
MESSAGES = [{"role": "user", "content": "hello there"}]


def _config(upstream: str, extra_models: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    dep = {
        "name": "fake-1",
        "provider": "openai",
        "model": "gpt-fake",
        "base_url": f"{upstream}/v1",
        "prices": PRICES,
    }
    return {"models": [{"name": "chat", "deployments": [dep]}, *(extra_models or [])]}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory, upstream: FakeUpstream) -> Path:
    path = tmp_path_factory.mktemp("llmcfg") / "llm.yaml"
    path.write_text(yaml.safe_dump(_config(upstream.url)))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, config_file: Path) -> Iterator[ServerProcess]:
    env = {"ZEROSERVE_GATEWAY_PROCESSES": "2", "ZEROSERVE_LLM_CONFIG": str(config_file)}
    with ServerProcess(tmp_path_factory.mktemp("llmserver"), env=env) as proc:
        yield proc


def cli(server: ServerProcess, *args: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "zeroserve.cli.main", "llm", *args],
        env={**os.environ, "ZEROSERVE_URL": server.url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_two_processes_serve_llm_routes(server: ServerProcess) -> None:
    listed = httpx.get(f"{server.url}/api/gateways", timeout=10).json()
    assert len(listed) == 2
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    for _ in range(6):  # fresh connections land on either process
        with httpx.Client(base_url=server.url, timeout=10) as h:
            r = h.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES})
            assert r.status_code == 200 and r.headers["x-zeroserve-deployment"] == "fake-1"
            assert "via" not in r.headers  # answered by the process that accepted it
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="chat", messages=MESSAGES, stream=True)
        if c.choices
    )  # type: ignore[arg-type]
    assert text == "tok0 tok1 tok2 "


def test_budget_holds_across_processes_under_200_concurrent_calls(server: ServerProcess) -> None:
    # worst case per call: prompt bytes at the dearest input price + max_tokens at the output price
    prompt_bytes = len(b'[{"role":"user","content":"hello there"}]')
    worst = -(-(prompt_bytes * 1_250_000 + 5 * 2_000_000) // 1_000_000)
    budget = 20 * worst
    out = cli(server, "keys", "create", "racer", "--budget", f"{budget / 1e6:.6f}")
    secret = next(w for w in out.split() if w.startswith("zsk-"))
    actual = 8 * 1 + 4 * 0.5 + 5 * 2  # the fake's usage at these prices: 20 micro-dollars

    async def burst() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, timeout=60, limits=limits) as h:

            async def one() -> int:
                r = await h.post(
                    "/v1/chat/completions",
                    json={"model": "chat", "messages": MESSAGES, "max_tokens": 5},
                    headers={"authorization": f"Bearer {secret}"},
                )
                if r.status_code == 429:
                    assert r.json()["error"]["code"] == "budget_exceeded"
                return r.status_code

            return await asyncio.gather(*(one() for _ in range(200)))

    statuses = asyncio.run(burst())
    assert set(statuses) <= {200, 429}
    ok = statuses.count(200)
    assert ok >= 20  # the budget is worth 20 worst cases

    def key() -> dict[str, Any]:
        return next(
            k for k in httpx.get(f"{server.url}/api/llm/keys").json() if k["name"] == "racer"
        )

    deadline = time.monotonic() + 10
    while key()["reserved_micros"] and time.monotonic() < deadline:
        time.sleep(0.1)
    k = key()
    rows = httpx.get(
        f"{server.url}/api/llm/usage/rows", params={"key": k["id"], "limit": 1000}
    ).json()
    assert len(rows) == ok  # every answered call is on the key: none passed as anonymous
    assert k["reserved_micros"] == 0
    assert k["spent_micros"] == ok * actual  # exact: every answered call, at reported usage
    assert (
        k["spent_micros"] <= budget
    )  # never over (at most one worst case is the bound we promise)
    usage = httpx.get(f"{server.url}/api/llm/usage", params={"by": "key", "key": k["id"]}).json()
    assert usage[0]["requests"] == ok and usage[0]["cost_micros"] == k["spent_micros"]


def test_cli_keys_usage_and_revoke(server: ServerProcess) -> None:
    out = cli(server, "keys", "create", "temp", "--model", "chat", "--rpm", "100")
    secret = next(w for w in out.split() if w.startswith("zsk-"))
    r = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "chat", "messages": MESSAGES},
        headers={"authorization": f"Bearer {secret}"},
    )
    assert r.status_code == 200
    listing = cli(server, "keys", "list")
    assert "temp" in listing and secret not in listing
    assert "chat" in cli(server, "usage", "--by", "model")
    assert "fake-1" in cli(server, "models")
    cli(server, "keys", "revoke", "temp")
    deadline = time.monotonic() + 5
    status = 200
    while (
        status == 200 and time.monotonic() < deadline
    ):  # every process refreshes its keys each second
        with httpx.Client(timeout=10) as h:
            status = h.post(
                f"{server.url}/v1/chat/completions",
                json={"model": "chat", "messages": MESSAGES},
                headers={"authorization": f"Bearer {secret}"},
            ).status_code
        time.sleep(0.05)
    assert status == 403
    no_key = httpx.post(
        f"{server.url}/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}
    )
    assert no_key.status_code == 401  # live keys exist now: anonymous calls are refused


def test_reload_adds_a_model_in_every_process(
    server: ServerProcess, config_file: Path, upstream: FakeUpstream
) -> None:
    extra = {
        "name": "chat-2",
        "deployments": [
            {
                "name": "fake-2",
                "provider": "openai",
                "model": "gpt-fake",
                "base_url": f"{upstream.url}/v1",
                "prices": PRICES,
            }
        ],
    }
    config_file.write_text(yaml.safe_dump(_config(upstream.url, [extra])))
    assert "chat-2" in cli(server, "reload") or True
    out = cli(server, "reload")
    assert "2 models" in out
    admin = httpx.get(f"{server.url}/api/llm/keys").json()
    assert admin  # keys exist, so use a fresh master-free key for listing models
    secret = next(
        w for w in cli(server, "keys", "create", "lister").split() if w.startswith("zsk-")
    )
    seen: set[bool] = set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and seen != {True}:
        seen = set()
        for _ in range(8):
            with httpx.Client(timeout=10) as h:
                ids = [
                    m["id"]
                    for m in h.get(
                        f"{server.url}/v1/models", headers={"authorization": f"Bearer {secret}"}
                    ).json()["data"]
                ]
                seen.add("chat-2" in ids)
        time.sleep(0.2)
    assert seen == {True}


def test_metrics_per_model_and_deployment(server: ServerProcess) -> None:
    deadline = time.monotonic() + 5
    text = ""
    while time.monotonic() < deadline:
        text = httpx.get(f"{server.url}/metrics").text
        if 'zeroserve_llm_requests_total{deployment="fake-1",model="chat",status="ok"}' in text:
            break
        time.sleep(0.2)
    line = next(
        x
        for x in text.splitlines()
        if x.startswith(
            'zeroserve_llm_requests_total{deployment="fake-1",model="chat",status="ok"}'
        )
    )
    assert float(line.rsplit(" ", 1)[1]) >= 20
    assert "zeroserve_llm_spend_micros_total" in text
    assert "zeroserve_llm_time_to_first_token_seconds_bucket" in text


def test_virtual_keys_work_behind_server_keys(tmp_path: Path, config_file: Path) -> None:
    """With server keys set, the access guard leaves the LLM routes to the LLM gateway's
    own keys: a virtual key works, the server's data key works, a wrong key is refused."""
    env = {
        "ZEROSERVE_LLM_CONFIG": str(config_file),
        "ZEROSERVE_ADMIN_API_KEYS": '["admin-secret-0123456789"]',
        "ZEROSERVE_API_KEYS": '["data-secret-0123456789"]',
    }
    with ServerProcess(tmp_path / "keyed", env=env) as proc:
        admin = {"authorization": "Bearer admin-secret-0123456789", "x-zeroserve-client": "test"}
        made = httpx.post(f"{proc.url}/api/llm/keys", json={"name": "v"}, headers=admin, timeout=10)
        assert made.status_code == 201, made.text
        body = {"model": "chat", "messages": MESSAGES}
        url = f"{proc.url}/v1/chat/completions"
        for key in (made.json()["key"], "data-secret-0123456789"):
            r = httpx.post(url, json=body, headers={"authorization": f"Bearer {key}"}, timeout=10)
            assert r.status_code == 200, r.text
        wrong = httpx.post(url, json=body, headers={"authorization": "Bearer nope"}, timeout=10)
        assert wrong.status_code == 401
        assert wrong.json()["error"]["type"] == "authentication_error"
