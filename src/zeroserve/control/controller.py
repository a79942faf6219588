"""The control plane: turn the registry's endpoints into pools and routes.

``apply`` and ``remove`` act at once for API calls; a reconcile loop repeats
the same from the registry (so a restart, or a second process editing the
database, converges), runs the autoscaler, checks replica memory and flushes
the meter. Each of those managers fails alone: one bug does not stop the loop.
The gateway reads ``routes``, a dict replaced whole on every change, and never
waits for the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from zeroserve.control.autoscaler import AutoscalerState, AutoscalingContext, desired_replicas
from zeroserve.control.policy import cumulative
from zeroserve.control.routes import Route, VariantRoute
from zeroserve.errors import ZeroserveError
from zeroserve.metrics import Metrics
from zeroserve.registry.registry import Registry
from zeroserve.serving.pool import LocalPool, PoolConfig, PoolStats, UsageSink
from zeroserve.settings import Settings
from zeroserve.types import EndpointSpec, VariantSpec

log = logging.getLogger("zeroserve.controller")

AUTOSCALE_INTERVAL_S = 0.25
MEMORY_CHECK_INTERVAL_S = 0.25
MEMORY_SAMPLE_EVERY = 20  # ticks: pools without a limit are sampled every 5 s

PoolKey = tuple[str, str, str, int]


def pool_key_text(key: PoolKey) -> str:
    """The key as one string (for messages between gateway processes)."""
    return "\x1f".join(str(part) for part in key)


@dataclass
class _Managed:
    pool: LocalPool
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


def effective_target_concurrency(spec: VariantSpec) -> float:
    if spec.scaling.target_concurrency is not None:
        return spec.scaling.target_concurrency
    return max(1.0, spec.max_batch_size / 2)


class Controller:
    def __init__(
        self,
        registry: Registry,
        settings: Settings,
        metrics: Metrics,
        meter: UsageSink | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.meter = meter
        self._routes: dict[str, Route] = {}
        self._pools: dict[PoolKey, _Managed] = {}
        self.listeners: list[Callable[[], None]] = []
        """Called when routes or live replicas change (the secondary gateways follow)."""
        self.death_listeners: list[Callable[[PoolKey, int, str], None]] = []
        self.after_change: list[Callable[[], Awaitable[None]]] = []
        """Awaited after ``apply`` and ``remove``: the change is visible everywhere after it."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._memory_ticks = 0
        self.extra_managers: list[tuple[str, float, Callable[[], Awaitable[object]]]] = []

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

    def pools(self) -> dict[PoolKey, LocalPool]:
        return {key: managed.pool for key, managed in self._pools.items()}

    # lifecycle
    async def start(self) -> None:
        await self.reconcile()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self._flush_meter()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        async with self._lock:
            await asyncio.gather(
                *(m.pool.stop() for m in self._pools.values()), return_exceptions=True
            )
            self._pools.clear()
            self.routes = {}

    # desired state -> pools and routes
    async def apply(self, spec: EndpointSpec) -> Route:
        async with self._lock:
            route = await self._apply(spec)
        for hook in self.after_change:
            await hook()
        return route

    async def remove(self, name: str) -> None:
        async with self._lock:
            self.routes = {k: v for k, v in self.routes.items() if k != name}
            await self._collect_unused()
        for hook in self.after_change:
            await hook()

    async def reconcile(self) -> None:
        specs = await asyncio.to_thread(self.registry.list_endpoints)
        async with self._lock:
            wanted = {s.name for s in specs}
            self.routes = {k: v for k, v in self.routes.items() if k in wanted}
            for spec in specs:
                current = self.routes.get(spec.name)
                if current is not None and current.spec == spec:
                    continue
                try:
                    await self._apply(spec)
                except ZeroserveError as exc:
                    log.error(
                        "endpoint cannot start", extra={"endpoint": spec.name, "error": exc.message}
                    )
            await self._collect_unused()

    async def _apply(self, spec: EndpointSpec) -> Route:
        variants = []
        for vspec in spec.variants:
            variants.append(await self._variant_route(spec.name, vspec))
        shadow = await self._variant_route(spec.name, spec.shadow) if spec.shadow else None
        route = Route(spec, variants, cumulative([v.spec.weight for v in variants]), shadow)
        self.routes = {**self.routes, spec.name: route}
        await self._collect_unused()
        return route

    async def _variant_route(self, endpoint: str, vspec: VariantSpec) -> VariantRoute:
        version = await asyncio.to_thread(self.registry.get_version, vspec.model, vspec.version)
        key: PoolKey = (endpoint, vspec.name, vspec.model, vspec.version)
        metrics = self.metrics.for_variant(endpoint, vspec.name)
        managed = self._pools.get(key)
        if managed is None:
            artifact_dir = await asyncio.to_thread(self.registry.artifact_dir, version)
            config = PoolConfig(
                endpoint=endpoint,
                spec=vspec,
                artifact_dir=artifact_dir,
                start_timeout_s=self.settings.replica_start_timeout_s,
                zygote_name=f"{vspec.model} v{vspec.version}",
            )
            pool = LocalPool(
                config,
                metrics,
                self.meter,
                on_crash=lambda reason: self.metrics.crash(endpoint, vspec.name, reason),
                on_change=self._changed,
                on_died=lambda pid, how: self._died(key, pid, how),
            )
            await pool.start()
            managed = self._pools[key] = _Managed(pool)
        elif managed.pool.spec != vspec:
            managed.pool.spec = vspec  # limits and scaling apply in place
            await managed.pool.scale_to(max(managed.pool.target, vspec.scaling.min_replicas))
        signature = version.signature.select_outputs(vspec.outputs)
        return VariantRoute(vspec, version, managed.pool, metrics, signature)

    def _died(self, key: PoolKey, pid: int, how: str) -> None:
        for listener in self.death_listeners:
            listener(key, pid, how)

    async def _collect_unused(self) -> None:
        used = {
            id(v.pool)
            for r in self.routes.values()
            for v in [*r.variants, *([r.shadow] if r.shadow else [])]
        }
        stale = [k for k, m in self._pools.items() if id(m.pool) not in used]
        for key in stale:
            managed = self._pools.pop(key)
            await managed.pool.stop()
            managed.pool.metrics.replicas.set(0)

    # the loop
    async def _loop(self) -> None:
        managers: list[tuple[str, float, Callable[[], Awaitable[object]]]] = [
            ("autoscaler", AUTOSCALE_INTERVAL_S, self.autoscale),
            ("memory", MEMORY_CHECK_INTERVAL_S, self._check_memory),
            ("reconcile", self.settings.reconcile_interval_s, self.reconcile),
            ("memory_pressure", 1.0, self._relieve_memory_pressure),
            ("meter", self.settings.meter_flush_interval_s, self._flush_meter),
            *self.extra_managers,
        ]
        next_run = dict.fromkeys((m[0] for m in managers), 0.0)
        while True:
            now = time.monotonic()
            for name, interval, update in managers:
                if now < next_run[name]:
                    continue
                next_run[name] = now + interval
                try:
                    await update()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("controller manager failed", extra={"manager": name})
            await asyncio.sleep(AUTOSCALE_INTERVAL_S / 2)

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
                queued_jobs=self.queued_jobs(pool),
                utilization=managed.utilization(now, stats),
                target_concurrency=effective_target_concurrency(pool.spec),
            )
            target, managed.scaler = desired_replicas(ctx)
            peak = pool.take_peak_in_flight()
            observe = getattr(self.meter, "observe_concurrency", None)
            if observe is not None and peak:
                observe(pool.endpoint, pool.spec.name, peak)
            pool.metrics.queue_depth.set(stats.queued)
            pool.metrics.in_flight.set(stats.in_flight)
            if target != pool.target or target != stats.replicas + stats.starting:
                await pool.scale_to(target)

    def queued_jobs(self, pool: LocalPool) -> int:
        """Durable-queue depth for this pool's endpoint; the async service overrides it."""
        return 0

    async def _check_memory(self) -> None:
        """Enforce memory limits every tick; sample the others for the meter every few seconds."""
        self._memory_ticks += 1
        sample_all = self._memory_ticks % MEMORY_SAMPLE_EVERY == 0
        observe = getattr(self.meter, "observe_memory", None)
        for managed in list(self._pools.values()):
            pool = managed.pool
            if pool.spec.memory_limit_mb is None and not sample_all:
                continue
            largest = pool.check_memory()
            if observe is not None and largest:
                observe(pool.endpoint, pool.spec.name, largest)

    async def _flush_meter(self) -> None:
        """Write the meter's per-minute usage rollups; the cost report reads them."""
        flush = getattr(self.meter, "flush", None)
        if flush is not None:
            await asyncio.to_thread(flush, self.registry.sessions, time.time())

    async def evict(self, name: str) -> int:
        """Stop the zygotes of an endpoint's pools; the next start rebuilds them."""
        pools = [pool for key, pool in self.pools().items() if key[0] == name]
        for pool in pools:
            await asyncio.to_thread(pool.evict_zygote)
        return len(pools)

    async def _relieve_memory_pressure(self) -> None:
        """Under memory pressure, evict the zygote of the idlest pool at zero replicas."""
        if available_memory_mb() >= self.settings.zygote_evict_below_mb:
            return
        idle = [
            m.pool
            for m in self._pools.values()
            if m.pool.zygote.alive and not m.pool.replicas and not m.pool.starting
        ]
        if idle:
            victim = min(idle, key=lambda p: p.last_request_at)
            log.warning(
                "memory pressure: evicting a zygote",
                extra={"endpoint": victim.endpoint, "variant": victim.spec.name},
            )
            await asyncio.to_thread(victim.evict_zygote)

    def describe(self, name: str) -> dict[str, Any]:
        route = self.routes.get(name)
        if route is None:
            return {"ready": False, "variants": []}
        local = self.pools()

        def describe(variant: VariantRoute) -> dict[str, Any]:
            key = (name, variant.spec.name, variant.spec.model, variant.spec.version)
            return local[key].describe()

        return {
            "ready": True,
            "in_flight": route.in_flight,
            "variants": [describe(v) for v in route.variants],
            "shadow": describe(route.shadow) if route.shadow else None,
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
