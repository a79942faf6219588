"""A fake upstream and an in-process LLM gateway on loopback, for SDK-driven tests."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from prometheus_client import CollectorRegistry

from tests.llm_fakes import AWS_KEY, AWS_SECRET, FakeUpstream
from zeroserve.llm.asgi import LLMGateway
from zeroserve.llm.config import load_config
from zeroserve.llm.ledger import Ledger
from zeroserve.llm.service import LLMService

PRICES = {"input": "1.0", "output": "2.0", "cache_read": "0.5", "cache_write": "1.25"}


def config_for(upstream: str) -> dict[str, Any]:
    def oa(name: str, model: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "openai",
            "model": model,
            "base_url": f"{upstream}/v1",
            "api_key_env": "FAKE_OPENAI_KEY",
            "prices": PRICES,
            **extra,
        }

    def an(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "anthropic",
            "model": model,
            "base_url": upstream,
            "api_key_env": "FAKE_ANTHROPIC_KEY",
            "prices": {"input": "3", "output": "15", "cache_read": "0.3", "cache_write": "3.75"},
        }

    def br(name: str, model: str) -> dict[str, Any]:
        return {
            "name": name,
            "provider": "bedrock",
            "model": model,
            "base_url": upstream,
            "region": "us-west-2",
            "prices": {"input": "3", "output": "15", "cache_read": "0.3", "cache_write": "3.75"},
        }

    return {
        "resilience": {
            "retries": 2,
            "backoff_base_s": 0.01,
            "breaker_failures": 2,
            "breaker_cooldown_s": 0.5,
            "health_interval_s": 600,
        },
        "models": [
            {"name": "chat", "deployments": [oa("oa-main", "gpt-fake")]},
            {"name": "chat-null", "deployments": [oa("oa-null", "gpt-null")]},
            {"name": "chat-last", "deployments": [oa("oa-last", "gpt-last")]},
            {"name": "claude", "deployments": [an("an-main", "claude-fake")]},
            {"name": "bedrock", "deployments": [br("br-main", "anthropic.claude-3-5:0")]},
            {
                "name": "failover",
                "routing": "weighted",
                "deployments": [
                    oa("oa-bad", "gpt-500", weight=1000),
                    oa("oa-good", "gpt-fake", weight=0.001),
                ],
            },
            {"name": "midstream", "deployments": [oa("oa-mid", "gpt-midstream")]},
            {"name": "cut", "deployments": [oa("oa-cut", "gpt-cut")]},
            {"name": "claude-mid", "deployments": [an("an-mid", "claude-overloaded")]},
            {"name": "bedrock-mid", "deployments": [br("br-mid", "throttle-model")]},
            {
                "name": "trio",
                "routing": "weighted",
                "deployments": [
                    oa("trio-500", "gpt-500", weight=100),
                    oa("trio-slow", "gpt-slow", weight=100, timeout_s=0.1),
                    oa("trio-good", "gpt-fake", weight=0.01),
                ],
            },
            {
                "name": "flaky",
                "routing": "weighted",
                "deployments": [
                    oa("flaky-1", "gpt-flaky", weight=1000),
                    oa("flaky-2", "gpt-fake", weight=0.001),
                ],
            },
            {
                "name": "latency",
                "routing": "latency",
                "deployments": [oa("lat-slow", "gpt-slow"), oa("lat-fast", "gpt-fake")],
            },
            {"name": "limited", "deployments": [oa("oa-429", "gpt-429")]},
            {"name": "tiny", "context_window": 1000, "deployments": [oa("oa-tiny", "gpt-fake")]},
            {"name": "broken", "deployments": [oa("oa-broken", "gpt-500")]},
            {"name": "garbage", "deployments": [oa("oa-garbage", "gpt-garbage")]},
            {"name": "bad-request", "deployments": [oa("oa-400", "gpt-bad-request")]},
            {
                "name": "small",
                "context_window": 10,
                "deployments": [oa("oa-small", "gpt-context")],
                "fallbacks": ["chat"],
            },
            {"name": "embed", "kind": "embedding", "deployments": [oa("oa-embed", "text-embed")]},
        ],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayThread:
    """The LLM gateway under uvicorn in a thread; ``service`` is reachable for assertions."""

    def __init__(
        self, config_file: Path, db_url: str, master_keys: list[str] | None = None
    ) -> None:
        self.service = LLMService(
            load_config(config_file),
            Ledger(db_url),
            CollectorRegistry(),
            master_keys=master_keys,
            config_source=config_file,
        )

        async def not_found(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        gateway = LLMGateway(self.service, not_found, 6 * 1024 * 1024)
        service = self.service

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    if message["type"] == "lifespan.startup":
                        await service.start()
                        await send({"type": "lifespan.startup.complete"})
                    else:
                        await service.stop()
                        await send({"type": "lifespan.shutdown.complete"})
                        return
            await gateway(scope, receive, send)

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
            )
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> GatewayThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def call(self, coro: Any) -> Any:
        """Run a coroutine on the gateway's loop (e.g. a ledger flush)."""
        loop = self.server_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(10)

    def server_loop(self) -> asyncio.AbstractEventLoop:
        return self.service.session._loop  # type: ignore[union-attr]

    def rows(self) -> list[dict[str, Any]]:
        self.call(self.service.flush())
        return list(reversed(self.service.ledger.rows(limit=1000)))


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def gateway(
    upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayThread]:
    mp = pytest.MonkeyPatch()
    mp.setenv("FAKE_OPENAI_KEY", "sk-upstream-openai-secret")
    mp.setenv("FAKE_ANTHROPIC_KEY", "sk-ant-upstream-secret")
    mp.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    mp.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)
    mp.delenv("AWS_SESSION_TOKEN", raising=False)
    mp.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    mp.delenv("AWS_PROFILE", raising=False)
    tmp = tmp_path_factory.mktemp("llm")
    config = tmp / "llm.yaml"
    config.write_text(yaml.safe_dump(config_for(upstream.url)))
    gw = GatewayThread(config, f"sqlite:///{tmp / 'llm.db'}").start()
    yield gw
    gw.stop()
    mp.undo()


@pytest.fixture()
def http(gateway: GatewayThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=30) as client:
        yield client
