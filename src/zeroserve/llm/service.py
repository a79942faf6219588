"""The LLM gateway's engine: models and their deployment state, keys, budgets, calls.

One ``LLMService`` per gateway process. The request path reads only memory (models,
key records refreshed every second, rate windows, the cache) except for a budgeted
key's reservation, which is one short transaction on the shared ledger. Settlements
are written behind in batches: until one lands its reservation still holds the worst
case, so a late write can only make the budget stricter, never looser.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from prometheus_client import CollectorRegistry

from zeroserve.errors import Forbidden, NotFound, Unauthorized
from zeroserve.llm.cache import ResponseCache
from zeroserve.llm.config import Deployment, LLMConfig, LogicalModel, load_config
from zeroserve.llm.credentials import Credentials
from zeroserve.llm.ledger import KeyRecord, Ledger, Settlement, digest, usage_row
from zeroserve.llm.limits import Limiter
from zeroserve.llm.metrics import LLMMetrics
from zeroserve.llm.pricing import rates_for
from zeroserve.llm.providers.anthropic import AnthropicProvider
from zeroserve.llm.providers.base import Provider
from zeroserve.llm.providers.bedrock import BedrockProvider
from zeroserve.llm.providers.openai import OpenAIProvider
from zeroserve.llm.providers.zeroserve import Invoke, ZeroserveProvider
from zeroserve.llm.router import DeploymentState
from zeroserve.llm.usage import Usage

log = logging.getLogger("zeroserve.llm")
T = TypeVar("T")

SETTLE_INTERVAL_S = 0.05
KEYS_REFRESH_S = 1.0
GENERATION_POLL_S = 1.0
SWEEP_INTERVAL_S = 60.0
STALE_RESERVATION_S = 3600.0
UNKNOWN_KEY_REFRESH_S = 0.05
"""An unknown key re-reads the key table at most this often (bad keys cannot flood the DB)."""


class ModelNotFoundError(NotFound):
    code = "model_not_found"


@dataclass(frozen=True, slots=True)
class Caller:
    key_id: str
    team: str | None = None
    record: KeyRecord | None = None

    @property
    def budgeted(self) -> bool:
        return self.record is not None and (
            self.record.budget_micros is not None or self.record.team is not None
        )


@dataclass(slots=True)
class ModelEntry:
    spec: LogicalModel
    states: list[DeploymentState]


class LLMService:
    def __init__(
        self,
        config: LLMConfig,
        ledger: Ledger,
        registry: CollectorRegistry,
        master_keys: list[str] | None = None,
        processes: int = 1,
        config_source: Path | None = None,
        invoke: Invoke | None = None,
        self_url: str = "http://127.0.0.1:8300",
    ) -> None:
        self.ledger = ledger
        self.self_url = self_url
        self.metrics = LLMMetrics(registry)
        self.master = {digest(k) for k in master_keys or []}
        self.limiter = Limiter(processes)
        self.config_source = config_source
        self.invoke = invoke
        self.rng = random.Random()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="llm-ledger")
        self.keys: dict[str, KeyRecord] = {}
        self._keys_read_at = 0.0
        self._key_read: asyncio.Task[None] | None = None
        self.pending: list[Settlement] = []
        self.session: aiohttp.ClientSession | None = None
        self.providers: dict[str, Provider] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._generation: str | None = None
        self.models: dict[str, ModelEntry] = {}
        self.config = config
        self.credentials = Credentials(config.secrets_file)
        self.cache = ResponseCache(config.cache)
        self.apply(config)

    # configuration
    def apply(self, config: LLMConfig) -> None:
        """Swap in a new config; deployments that stay keep their latency and breaker state."""
        old = {(m, s.name): s for m, e in self.models.items() for s in e.states}
        models: dict[str, ModelEntry] = {}
        for spec in config.models:
            states = []
            for dep in spec.deployments:
                state = old.get((spec.name, dep.name))
                rates = rates_for(dep)
                if state is None:
                    state = DeploymentState(spec.name, dep, rates)
                else:
                    state.spec, state.rates = dep, rates
                state.metrics = _bind(self.metrics, spec.name, dep.name)
                states.append(state)
            models[spec.name] = ModelEntry(spec, states)
        self.config = config
        if config.secrets_file != self.credentials_file():
            self.credentials = Credentials(config.secrets_file)
            for p in self.providers.values():
                p.credentials = self.credentials
        self.cache.config = config.cache
        self.models = models

    def credentials_file(self) -> Path | None:
        return self.config.secrets_file if hasattr(self, "credentials") else None

    def reload(self) -> LLMConfig:
        """Re-read the config file; in-flight calls finish on the deployments they started on."""
        config = load_config(self.config_source)
        self.apply(config)
        return config

    def model(self, name: str) -> ModelEntry:
        entry = self.models.get(name)
        if entry is None:
            known = ", ".join(sorted(self.models)) or "none configured"
            raise ModelNotFoundError(
                f"model {name!r} does not exist (models: {known}); see GET /v1/models"
            )
        return entry

    def provider(self, dep: Deployment) -> Provider:
        return self.providers[dep.provider]

    # lifecycle
    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        self.providers = {
            "openai": OpenAIProvider(self.session, self.credentials),
            "anthropic": AnthropicProvider(self.session, self.credentials),
            "bedrock": BedrockProvider(self.session, self.credentials),
            "zeroserve": ZeroserveProvider(
                self.session, self.credentials, self.invoke, self.self_url
            ),
        }
        await self.refresh_keys()
        self._generation = await self.db(self.ledger.generation)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._every(SETTLE_INTERVAL_S, self.flush)),
            loop.create_task(self._every(KEYS_REFRESH_S, self.refresh_keys)),
            loop.create_task(self._every(GENERATION_POLL_S, self._follow_generation)),
            loop.create_task(
                self._every(self.config.resilience.health_interval_s, self.check_health)
            ),
            loop.create_task(self._every(SWEEP_INTERVAL_S, self._sweep)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.flush()
        if self.session is not None:
            await self.session.close()
        self.executor.shutdown(wait=True)
        self.ledger.close()

    async def _every(self, interval_s: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("LLM gateway background job failed", extra={"job": job.__name__})

    async def db(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def refresh_keys(self) -> None:
        """Re-read the key table; concurrent callers share one read."""
        if self._key_read is None:
            self._key_read = asyncio.get_running_loop().create_task(self._read_keys())
        read = self._key_read
        try:
            await asyncio.shield(read)
        finally:
            if read.done() and self._key_read is read:
                self._key_read = None

    async def _read_keys(self) -> None:
        started = time.monotonic()
        self.keys = await self.db(self.ledger.keys_by_digest)
        self._keys_read_at = started

    async def caller(self, secret: str | None) -> Caller:
        """``authenticate``, after re-reading the keys when the secret is not known yet: a key
        created a moment ago in another process must never pass as anonymous."""
        if secret:
            d = digest(secret)
            if d not in self.keys and d not in self.master:
                open_access = not self.master and not any(not k.revoked for k in self.keys.values())
                recent = time.monotonic() - self._keys_read_at <= UNKNOWN_KEY_REFRESH_S
                # While the gateway looks open, an unknown key always re-reads (never passes
                # as anonymous on a stale table); once keys exist, at most every 50 ms.
                if open_access or self._key_read is not None or not recent:
                    await self.refresh_keys()
        return self.authenticate(secret)

    async def flush(self) -> None:
        if self.pending:
            items, self.pending = self.pending, []
            try:
                await self.db(self.ledger.settle, items)
            except Exception:
                self.pending[:0] = items  # keep them: the reservation holds until they land
                raise

    async def announce_reload(self) -> None:
        """Tell every gateway process (through the ledger) to re-read the config."""
        token = f"{time.time():.6f}-{os.getpid()}"
        await self.db(self.ledger.bump_generation, token)
        self._generation = token

    async def _follow_generation(self) -> None:
        current = await self.db(self.ledger.generation)
        if current != self._generation:
            self._generation = current
            self.reload()
            log.info("LLM config reloaded", extra={"generation": current})

    async def _sweep(self) -> None:
        await self.db(self.ledger.sweep, STALE_RESERVATION_S)

    async def check_health(self) -> None:
        """Ask each deployment a question that bills nothing (a model list)."""
        for entry in list(self.models.values()):
            for state in entry.states:
                if state.spec.provider in ("openai", "anthropic"):
                    ok = await self.provider(state.spec).health(state.spec)
                    state.healthy = ok

    # callers
    def authenticate(self, secret: str | None) -> Caller:
        """The caller a key belongs to. With no server keys and no live virtual keys the
        gateway is open (loopback by default) and any key, or none, is anonymous."""
        open_access = not self.master and not any(not k.revoked for k in self.keys.values())
        if secret:
            d = digest(secret)
            record = self.keys.get(d)
            if record is not None:
                if record.revoked:
                    raise Forbidden("this API key has been revoked; ask for a new one")
                return Caller(record.id, record.team, record)
            if d in self.master:
                return Caller("master")
            if not open_access:
                raise Unauthorized(
                    "the API key is not valid; create one with `zeroserve llm keys create`"
                )
        elif not open_access:
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' "
                "(create one with `zeroserve llm keys create`)"
            )
        return Caller("anonymous")

    def admit(self, caller: Caller, model: str, now: float) -> None:
        record = caller.record
        if record is None:
            return
        if record.models is not None and model not in record.models:
            raise Forbidden(
                f"this key may not use model {model!r}; "
                f"it may use: {', '.join(record.models) or 'none'}"
            )
        if record.rpm is not None or record.tpm is not None:
            self.limiter.admit(f"key {record.name}", record.rpm, record.tpm, now)

    async def reserve(self, caller: Caller, amount: int) -> str | None:
        if not caller.budgeted:
            return None
        reservation = uuid.uuid4().hex
        await self.db(self.ledger.reserve, caller.key_id, caller.team, amount, reservation)
        return reservation

    def settle(
        self,
        caller: Caller,
        reservation: str | None,
        reserved: int,
        model: str,
        state: DeploymentState | None,
        usage: Usage,
        cost: int,
        request_id: str,
        estimated: bool = False,
        cache_hit: bool = False,
        status: str = "ok",
    ) -> None:
        dep = state.name if state is not None else ""
        row = usage_row(
            request_id,
            caller.key_id,
            caller.team,
            model,
            dep,
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.compute_us,
            cost,
            estimated,
            cache_hit,
            status,
        )
        self.pending.append(Settlement(reservation, caller.key_id, caller.team, reserved, row))
        if caller.record is not None and caller.record.tpm is not None:
            self.limiter.spend_tokens(
                f"key {caller.record.name}", usage.total_tokens, time.monotonic()
            )
        if state is not None:
            m = state.metrics
            m.tokens_in.inc(usage.input_tokens)
            m.tokens_out.inc(usage.output_tokens)
            m.tokens_cached.inc(usage.cache_read_tokens)
            m.spend.inc(cost)


@dataclass(slots=True)
class BoundMetrics:
    ok: Any
    failed: Any
    latency: Any
    ttft: Any
    tokens_in: Any
    tokens_out: Any
    tokens_cached: Any
    spend: Any
    fallbacks: Any
    retries: Any
    breaker: Any
    in_flight: Any

    def error(self, metrics: LLMMetrics, model: str, dep: str, kind: str) -> None:
        metrics.errors.labels(model, dep, kind).inc()


def _bind(m: LLMMetrics, model: str, dep: str) -> BoundMetrics:
    return BoundMetrics(
        ok=m.requests.labels(model, dep, "ok"),
        failed=m.requests.labels(model, dep, "error"),
        latency=m.latency.labels(model, dep),
        ttft=m.ttft.labels(model, dep),
        tokens_in=m.tokens.labels(model, dep, "input"),
        tokens_out=m.tokens.labels(model, dep, "output"),
        tokens_cached=m.tokens.labels(model, dep, "cache_read"),
        spend=m.spend.labels(model, dep),
        fallbacks=m.fallbacks.labels(model, dep),
        retries=m.retries.labels(model, dep),
        breaker=m.breaker.labels(model, dep),
        in_flight=m.in_flight.labels(model, dep),
    )
