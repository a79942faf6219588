"""The control plane: turn the registry's endpoints into pools and routes.

``apply`` and ``remove`` act at once for API calls; a reconcile manager repeats
the same from the registry (so a restart, or a second process editing the
database, converges). Every manager (reconcile, autoscaler, memory limits,
meter, and those other services add) runs on its own task and cadence, so a
slow one (a webhook receiver that takes 5 s) never delays another (a
memory-limit kill), and each fails alone.

An endpoint that cannot start is kept in a visible ``failed`` state with the
reason and retried with backoff; it never blocks other endpoints, and loading
one model never holds a lock another deploy waits on. The gateway reads
``routes``, a dict replaced whole on every change, and never waits for the
controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from zeroserve.control import lifecycle
from zeroserve.control.autoscaler import AutoscalerState, AutoscalingContext, desired_replicas
from zeroserve.control.policy import cumulative
from zeroserve.control.routes import Route, VariantRoute
from zeroserve.metrics import Metrics
from zeroserve.registry.registry import Registry
from zeroserve.serving.handle import Backend, VariantDeployment
from zeroserve.serving.pool import PoolStats, UsageSink
from zeroserve.serving.scaling_pool import ScalingPool
from zeroserve.settings import Settings
from zeroserve.types import EndpointSpec, VariantSpec

log = logging.getLogger("zeroserve.controller")

MEMORY_SAMPLE_EVERY = 20
"""Memory-check ticks between samples of pools without a limit (for the meter)."""
RETRY_FIRST_S = 1.0

PoolKey = tuple[str, str, str, int]
Manager = tuple[str, float, Callable[[], Awaitable[object]]]


def pool_key_text(key: PoolKey) -> str:
    """The key as one string (for messages between gateway processes)."""
    return "\x1f".join(str(part) for part in key)


class Meter(UsageSink, Protocol):
    def observe_concurrency(self, endpoint: str, variant: str, peak: int) -> None: ...
    def observe_memory(self, endpoint: str, variant: str, mb: float) -> None: ...
    def flush(self, sessions: Any, now: float) -> object: ...


@dataclass
class _Managed:
    pool: ScalingPool
    scaler: AutoscalerState = field(default_factory=AutoscalerState)
    last_busy_s: float = 0.0
    last_tick: float | None = None

    def utilization(self, now: float, stats: PoolStats) -> float:
        """Busy fraction of the live replicas since the previous tick."""
        busy = self.pool.total_busy_s()
        previous, self.last_tick = self.last_tick, now
        delta, self.last_busy_s = busy - self.last_busy_s, busy
        if previous is None or now <= previous or not stats.replicas:
            return 0.0
        # A secondary that died takes its busy time with it: never below zero.
        return max(0.0, min(1.0, delta / ((now - previous) * stats.replicas)))


@dataclass
class EndpointState:
    """Where an endpoint stands: loading, ready or failed (with why and when it retries)."""

    state: str = "loading"
    error: str | None = None
    attempts: int = 0
    retry_at: float = 0.0

    def describe(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"state": self.state}
        if self.error is not None:
            out["error"] = self.error
            out["attempts"] = self.attempts
            out["retry_in_s"] = round(max(0.0, self.retry_at - now), 1)
        return out


class Controller:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        metrics: Metrics,
        backend: Backend,
        meter: Meter | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.backend = backend
        self.meter = meter
        self._routes: dict[str, Route] = {}
        self._pools: dict[PoolKey, _Managed] = {}
        self.endpoints: dict[str, EndpointState] = {}
        self.listeners: list[Callable[[], None]] = []
        """Called when routes or live replicas change (the secondary gateways follow)."""
        self.death_listeners: list[Callable[[PoolKey, str, str], None]] = []
        self.after_change: list[Callable[[], Awaitable[None]]] = []
        """Awaited after ``apply`` and ``remove``: the change is visible everywhere after it."""
        self.managers: list[Manager] = []
        """Managers other services add (async workers, webhooks, batch runs, peers)."""
        self.queued_jobs: Callable[[str], int] = lambda _endpoint: 0
        """Durable-queue depth of an endpoint (set by the async service)."""
        self.loaded = asyncio.Event()
        """Set once the first reconcile has tried every endpoint."""
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._memory_ticks = 0

    @property
    def routes(self) -> dict[str, Route]:
        return self._routes

    @routes.setter
    def routes(self, routes: dict[str, Route]) -> None:
        self._routes = routes
        self._changed()

    def _changed(self) -> None:
        for listener in self.listeners:
            listener()

    def pools(self) -> dict[PoolKey, ScalingPool]:
        return {key: managed.pool for key, managed in self._pools.items()}

    def _lock(self, name: str) -> asyncio.Lock:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        return lock

    # lifecycle
    async def start(self) -> None:
        """Start every manager; endpoints load in the background (the port is already open)."""
        managers: list[Manager] = [
            ("reconcile", self.settings.reconcile_interval_s, self.reconcile),
            ("autoscaler", self.settings.autoscale_interval_s, self.autoscale),
            ("memory", self.settings.memory_check_interval_s, self._check_memory),
            ("memory_pressure", 1.0, self._relieve_memory_pressure),
            ("meter", self.settings.meter_flush_interval_s, self._flush_meter),
            *self.managers,
        ]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run_manager(*m)) for m in managers]

    async def _run_manager(
        self, name: str, interval_s: float, update: Callable[[], Awaitable[object]]
    ) -> None:
        """One manager on its own cadence: a slow or failing one delays only itself."""
        while True:
            started = time.monotonic()
            try:
                await update()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("controller manager %s failed", name, extra={"manager": name})
            await asyncio.sleep(max(0.0, interval_s - (time.monotonic() - started)))

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush_meter()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(m.pool.stop() for m in self._pools.values()), return_exceptions=True)
        self._pools.clear()
        self.routes = {}

    # desired state -> pools and routes
    async def apply(self, spec: EndpointSpec) -> Route:
        """Serve ``spec`` now; returns once its replicas are ready, or raises why not.

        A failure leaves the endpoint ``failed`` (with the reason) and the
        reconcile manager retries it with backoff.
        """
        async with self._lock(spec.name):
            route = await self._apply(spec)
        for hook in self.after_change:
            await hook()
        return route

    async def remove(self, name: str) -> None:
        async with self._lock(name):
            self.routes = {k: v for k, v in self.routes.items() if k != name}
            self.endpoints.pop(name, None)
            await self._collect_unused(name)
        for hook in self.after_change:
            await hook()

    async def reconcile(self) -> None:
        """Make pools and routes match the registry; endpoints that differ load concurrently."""
        specs = await asyncio.to_thread(self.registry.list_endpoints)
        wanted = {s.name for s in specs}
        for name in [n for n in self.routes if n not in wanted]:
            await self.remove(name)
        for name in [n for n in self.endpoints if n not in wanted]:
            self.endpoints.pop(name, None)
        now = time.monotonic()
        due = [
            s
            for s in specs
            if not self._is_current(s) and not self._lock(s.name).locked() and self._due(s, now)
        ]
        await asyncio.gather(*(self._reconcile_one(s) for s in due))
        self.loaded.set()

    def _is_current(self, spec: EndpointSpec) -> bool:
        current = self.routes.get(spec.name)
        return current is not None and current.spec == spec

    def _due(self, spec: EndpointSpec, now: float) -> bool:
        status = self.endpoints.get(spec.name)
        return status is None or status.state != "failed" or now >= status.retry_at

    async def _reconcile_one(self, spec: EndpointSpec) -> None:
        try:
            async with self._lock(spec.name):
                if not self._is_current(spec):
                    await self._apply(spec)
        except Exception:
            return
        for hook in self.after_change:
            await hook()

    async def _apply(self, spec: EndpointSpec) -> Route:
        status = self.endpoints.setdefault(spec.name, EndpointState())
        if spec.name not in self.routes:
            status.state = "loading"
        try:
            variants = [await self._variant_route(spec.name, v, False) for v in spec.variants]
            shadow = (
                await self._variant_route(spec.name, spec.shadow, True) if spec.shadow else None
            )
        except Exception as exc:
            self._failed(spec.name, status, exc)
            await self._collect_unused(spec.name)
            raise
        route = Route(spec, variants, cumulative([v.spec.weight for v in variants]), shadow)
        self.routes = {**self.routes, spec.name: route}
        self.endpoints[spec.name] = EndpointState(state="ready")
        await self._collect_unused(spec.name, drain=True)  # a replaced pool answers first
        log.info(
            "endpoint ready: %s serves %s",
            spec.name,
            ", ".join(f"{v.model}:{v.version}" for v in spec.variants),
            extra={"endpoint": spec.name},
        )
        return route

    def _failed(self, name: str, status: EndpointState, exc: Exception) -> None:
        status.state = "failed"
        status.error = getattr(exc, "message", None) or str(exc) or type(exc).__name__
        status.attempts += 1
        backoff = min(self.settings.deploy_retry_max_s, RETRY_FIRST_S * 2 ** (status.attempts - 1))
        status.retry_at = time.monotonic() + backoff
        log.error(
            "endpoint %s cannot start (attempt %d, retry in %.0f s): %s",
            name,
            status.attempts,
            backoff,
            status.error,
            extra={"endpoint": name},
        )

    async def _variant_route(self, endpoint: str, vspec: VariantSpec, shadow: bool) -> VariantRoute:
        version = await asyncio.to_thread(self.registry.get_version, vspec.model, vspec.version)
        key: PoolKey = (endpoint, vspec.name, vspec.model, vspec.version)
        metrics = self.metrics.for_variant(endpoint, vspec.name)
        managed = self._pools.get(key)
        if managed is None:
            artifact_dir = await asyncio.to_thread(self.registry.artifact_dir, version)
            deployment = VariantDeployment(
                endpoint=endpoint,
                spec=vspec,
                artifact_dir=artifact_dir,
                start_timeout_s=self.settings.replica_start_timeout_s,
                name=f"{vspec.model} v{vspec.version}",
            )
            pool = ScalingPool(
                deployment,
                self.backend,
                metrics,
                self.meter,
                shadow=shadow,
                batch_deadline_s=self.settings.batch_deadline_s,
                on_crash=lambda reason: self.metrics.crash(endpoint, vspec.name, reason),
                on_change=self._changed,
                on_died=lambda address, how: self._died(key, address, how),
            )
            try:
                await pool.start()
            except BaseException:
                await pool.stop()
                raise
            # Managed (autoscaled, memory-checked) only once started.
            managed = self._pools[key] = _Managed(pool)
        elif managed.pool.spec != vspec:
            managed.pool.spec = vspec  # limits and scaling apply in place
            await managed.pool.scale_to(max(managed.pool.target, vspec.scaling.min_replicas))
        signature = version.signature.select_outputs(vspec.outputs)
        return VariantRoute(vspec, version, managed.pool, metrics, signature)

    def _died(self, key: PoolKey, address: str, how: str) -> None:
        for listener in self.death_listeners:
            listener(key, address, how)

    async def _collect_unused(self, endpoint: str, drain: bool = False) -> None:
        route = self.routes.get(endpoint)
        used = {id(v.pool) for v in route.all_variants()} if route is not None else set()
        stale = [k for k, m in self._pools.items() if k[0] == endpoint and id(m.pool) not in used]
        for key in stale:
            managed = self._pools.pop(key)
            if drain:
                await lifecycle.drain(managed.pool)
            await managed.pool.stop()
            managed.pool.metrics.replicas.set(0)

    # managers
    async def autoscale(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for managed in list(self._pools.values()):
            pool = managed.pool
            stats = pool.stats()
            ctx = AutoscalingContext(
                now=now,
                config=pool.spec.scaling,
                current_replicas=stats.replicas + stats.starting,
                in_flight=stats.in_flight,
                last_request_at=stats.last_request_at,
                state=managed.scaler,
                queued_jobs=self.queued_jobs_for(pool),
                utilization=managed.utilization(now, stats),
                target_concurrency=pool.spec.target_concurrency,
            )
            target, managed.scaler = desired_replicas(ctx)
            peak = pool.take_peak_in_flight()
            if self.meter is not None and peak:
                self.meter.observe_concurrency(pool.endpoint, pool.spec.name, peak)
            pool.metrics.queue_depth.set(stats.queued)
            pool.metrics.in_flight.set(stats.in_flight)
            if target != pool.target or target != stats.replicas + stats.starting:
                await pool.scale_to(target)

    def queued_jobs_for(self, pool: ScalingPool) -> int:
        """The share of an endpoint's queued jobs this variant will serve (by weight).

        Jobs pick a variant by weight when they run; a shadow serves none.
        """
        if pool.shadow:
            return 0
        queued = self.queued_jobs(pool.endpoint)
        route = self.routes.get(pool.endpoint)
        if not queued or route is None or len(route.variants) == 1:
            return queued
        total = sum(v.spec.weight for v in route.variants)
        return math.ceil(queued * pool.spec.weight / total) if total > 0 else 0

    async def _check_memory(self) -> None:
        """Enforce memory limits every tick; sample the others for the meter every few seconds."""
        self._memory_ticks += 1
        sample_all = self._memory_ticks % MEMORY_SAMPLE_EVERY == 0
        for managed in list(self._pools.values()):
            pool = managed.pool
            if pool.spec.memory_limit_mb is None and not sample_all:
                continue
            largest = await asyncio.to_thread(pool.check_memory)
            if self.meter is not None and largest:
                self.meter.observe_memory(pool.endpoint, pool.spec.name, largest)

    async def _flush_meter(self) -> None:
        """Write the meter's per-minute usage rollups; the cost report reads them."""
        if self.meter is not None:
            await asyncio.to_thread(self.meter.flush, self.registry.sessions, time.time())

    async def evict(self, name: str) -> int:
        """Stop the zygotes of an endpoint's pools; the next start rebuilds them."""
        pools = [pool for key, pool in self.pools().items() if key[0] == name]
        for pool in pools:
            await asyncio.to_thread(pool.evict)
        return len(pools)

    async def _relieve_memory_pressure(self) -> None:
        """Under memory pressure, evict the zygote of the idlest pool at zero replicas."""
        if available_memory_mb() >= self.settings.zygote_evict_below_mb:
            return
        idle = [
            m.pool
            for m in self._pools.values()
            if m.pool.warm and not m.pool.replicas and not m.pool.starting
        ]
        if idle:
            victim = min(idle, key=lambda p: p.last_request_at)
            log.warning(
                "memory pressure: evicting the zygote of %s/%s",
                victim.endpoint,
                victim.spec.name,
                extra={"endpoint": victim.endpoint, "variant": victim.spec.name},
            )
            await asyncio.to_thread(victim.evict)

    def describe(self, name: str) -> dict[str, Any]:
        status = self.endpoints.get(name)
        state = status.describe(time.monotonic()) if status is not None else {"state": "unknown"}
        route = self.routes.get(name)
        if route is None:
            return {"ready": False, **state, "variants": []}
        local = self.pools()

        def describe(variant: VariantRoute) -> dict[str, Any]:
            key = (name, variant.spec.name, variant.spec.model, variant.spec.version)
            return local[key].describe()

        return {
            "ready": True,
            **state,
            "in_flight": route.in_flight,
            "variants": [describe(v) for v in route.variants],
            "shadow": describe(route.shadow) if route.shadow else None,
        }

    def readiness(self) -> dict[str, Any]:
        """Loading progress: which endpoints are ready, loading and failed."""
        by_state: dict[str, list[str]] = {"ready": [], "loading": [], "failed": []}
        for name, status in sorted(self.endpoints.items()):
            by_state.setdefault(status.state, []).append(name)
        loading = not self.loaded.is_set() or bool(by_state["loading"])
        return {
            "status": "loading" if loading else "ready",
            "endpoints": sorted(self.endpoints),
            **by_state,
        }


def available_memory_mb() -> float:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")
