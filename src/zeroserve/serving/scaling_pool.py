"""A pool that owns its replicas: starts, scales and replaces them through a backend.

It runs in the control process. It never knows where its replicas run; the
``Backend`` forks them locally or starts them on a cluster. Secondary gateway
processes report their own queue and in-flight counts for this pool
(``peers``); ``stats`` adds them so the autoscaler sees all demand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroserve.errors import NoReplicaAvailable, ReplicaCrashed, ZeroserveError
from zeroserve.metrics import VariantMetrics
from zeroserve.serving.handle import Backend, ReplicaHandle, VariantDeployment
from zeroserve.serving.pool import Pool, PoolStats, UsageSink

log = logging.getLogger("zeroserve.pool")


@dataclass(slots=True)
class PeerPoolStats:
    """A secondary gateway process's view of one pool, as it last reported it."""

    in_flight: int = 0
    queued: int = 0
    last_request_at: float = 0.0
    busy_s: float = 0.0
    peak_in_flight: int = 0
    cold_starts: int = 0


class ScalingPool(Pool):
    """The replicas of one variant, kept at the autoscaler's target."""

    def __init__(
        self,
        deployment: VariantDeployment,
        backend: Backend,
        metrics: VariantMetrics,
        meter: UsageSink | None = None,
        *,
        shadow: bool = False,
        batch_deadline_s: float | None = None,
        on_crash: Callable[[str], None] | None = None,
        on_change: Callable[[], None] | None = None,
        on_died: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(
            deployment.endpoint,
            deployment.spec,
            metrics,
            meter,
            shadow=shadow,
            batch_deadline_s=batch_deadline_s,
        )
        self.deployment = deployment
        self.backend = backend
        self.on_crash = on_crash
        self.on_change = on_change
        """Called when the set of live replicas changes (secondaries follow it)."""
        self.on_died = on_died
        """Called with a dead replica's address and how it died (secondaries tell clients)."""
        self.starting = 0
        self.target = self.spec.scaling.min_replicas
        self.peers: dict[int, PeerPoolStats] = {}
        self._peer_peak = 0

    # lifecycle
    async def start(self) -> None:
        await self.backend.prepare(self.deployment)
        await self.scale_to(self.target)

    async def stop(self) -> None:
        self._fail_all()
        self._changed()
        await self.backend.release(self.deployment)
        self._cancel_tasks()

    def evict(self) -> None:
        """Free what makes starts fast; the next replica start rebuilds it (slower, correct)."""
        self.backend.evict(self.deployment)

    @property
    def warm(self) -> bool:
        return self.backend.is_warm(self.deployment)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _on_cold(self) -> None:
        self.wake()

    def _on_loop_end(self, replica: ReplicaHandle) -> None:
        self._spawn(self.scale_to(max(self.target, 1 if self.queue else 0)))

    def wake(self) -> None:
        """Start a replica if none is live or starting (a cold request is waiting)."""
        self.last_request_at = time.monotonic()
        if self.starting == 0 and not self.live_replicas() and not self._stopped:
            self.target = max(self.target, 1)
            self._spawn(self.scale_to(self.target))

    def kill_replica(self, address: str, reason: str) -> bool:
        """Kill the replica at ``address`` (a secondary found it hung)."""
        for replica in self.replicas:
            if replica.address == address:
                replica.kill(reason)
                return True
        return False

    # replicas
    async def scale_to(self, target: int) -> None:
        """Start or retire replicas until ``target`` are live (bounded by max_replicas)."""
        if self._stopped:
            return
        self.target = max(0, min(target, self.spec.scaling.max_replicas))
        self.metrics.target_replicas.set(self.target)
        live = self.live_replicas()
        missing = self.target - len(live) - self.starting
        if missing > 0:
            self.metrics.scale_up.inc(missing)
            log.info(
                "scaling up: %s/%s to %d replicas",
                self.endpoint,
                self.spec.name,
                self.target,
                extra={"endpoint": self.endpoint, "variant": self.spec.name},
            )
            # Reserve the slots before awaiting, so a concurrent call sees them.
            self.starting += missing
            await asyncio.gather(
                *(self._start_replica() for _ in range(missing)), return_exceptions=True
            )
        elif len(live) > self.target:
            surplus = sorted(live, key=lambda r: (r.busy, r.last_used))[: len(live) - self.target]
            self.metrics.scale_down.inc(len(surplus))
            log.info(
                "scaling down: %s/%s to %d replicas",
                self.endpoint,
                self.spec.name,
                self.target,
                extra={"endpoint": self.endpoint, "variant": self.spec.name},
            )
            for replica in surplus:
                await self.backend.stop_replica(replica)
            self._work.set()
            self._changed()

    async def _start_replica(self) -> None:
        """Start one replica in a slot the caller reserved in ``starting``."""
        started = time.perf_counter()
        try:
            replica = await self.backend.start_replica(self.deployment, self._on_replica_exit)
        except Exception as exc:
            self.last_error = str(exc)
            log.warning(
                "replica start failed: %s",
                exc,
                extra={"endpoint": self.endpoint, "variant": self.spec.name},
            )
            self._fail_queued_if_hopeless(exc)
            return
        finally:
            self.starting -= 1
            if self.last_error is not None:
                self._changed()  # secondaries' timeouts can then say why
        self.last_error = None
        if self._stopped:
            replica.close()
            return
        self.add_replica(replica)
        self.metrics.replicas.set(len(self.replicas))
        self.metrics.cold_start_latency.observe(time.perf_counter() - started)
        self._changed()

    def _fail_queued_if_hopeless(self, exc: Exception) -> None:
        if self.replicas or self.starting:
            return
        self.fail_queued(exc if isinstance(exc, ZeroserveError) else NoReplicaAvailable(str(exc)))

    def _on_replica_exit(self, replica: ReplicaHandle) -> None:
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)
        self.metrics.replicas.set(len(self.replicas))
        self._work.set()
        self._changed()
        if self._stopped:
            replica.fail_pending(NoReplicaAvailable(f"endpoint {self.endpoint} was removed"))
        else:
            self._spawn(self._after_exit(replica))

    async def _after_exit(self, replica: ReplicaHandle) -> None:
        how = await replica.exit_reason()
        if not replica.retired or replica.has_pending:
            if self.on_crash is not None:
                self.on_crash("memory" if "memory" in how else "crash")
            message = (
                f"the replica serving {self.endpoint} (model {self.spec.model} "
                f"v{self.spec.version}) {how} while predicting this request; "
                "it is being replaced, retry the request"
            )
            if self.on_died is not None:
                self.on_died(replica.address, message)
            replica.fail_pending(ReplicaCrashed(message))
            log.warning(
                "replica died: %s/%s %s",
                self.endpoint,
                self.spec.name,
                how,
                extra={"endpoint": self.endpoint, "variant": self.spec.name, "how": how},
            )
        replica.fail_pending(ReplicaCrashed("the replica stopped; retry the request"))
        live = self.live_replicas()
        if len(live) + self.starting < self.target or (self.queue and not live):
            await self.scale_to(max(self.target, 1 if self.queue else 0))

    def check_memory(self) -> float:
        """Kill replicas over their memory limit; returns the largest one's memory in MB."""
        largest = 0.0
        limit = self.spec.memory_limit_mb
        for replica in list(self.replicas):
            used = replica.memory_mb()
            largest = max(largest, used)
            if limit is not None and used > limit and not replica.closing:
                replica.kill(
                    f"used {used:.0f} MB, over its memory limit of {limit} MB, and was killed"
                )
        self.metrics.memory.set(largest)
        return largest

    def stats(self) -> PoolStats:
        """This process's counts plus what the secondary gateway processes last reported."""
        peers = self.peers.values()
        return PoolStats(
            replicas=len(self.live_replicas()),
            starting=self.starting,
            in_flight=self.in_flight + sum(p.in_flight for p in peers),
            queued=len(self.queue) + sum(p.queued for p in peers),
            last_request_at=max([self.last_request_at, *(p.last_request_at for p in peers)]),
            cold_starts=self.cold_starts + sum(p.cold_starts for p in peers),
        )

    def total_busy_s(self) -> float:
        """Model time of every batch any gateway process sent to these replicas."""
        return self.busy_s + sum(p.busy_s for p in self.peers.values())

    def report_peer(self, peer: int, stats: PeerPoolStats) -> None:
        self.peers[peer] = stats
        self._peer_peak = max(self._peer_peak, stats.peak_in_flight)

    def take_peak_in_flight(self) -> int:
        """Peak concurrency since the last call (all processes), for the meter."""
        peak = self.peak_in_flight + self._peer_peak
        self.peak_in_flight = self.in_flight
        self._peer_peak = sum(p.in_flight for p in self.peers.values())
        return peak

    def describe(self) -> dict[str, Any]:
        stats = self.stats()
        now = time.monotonic()
        return {
            "variant": self.spec.name,
            "model": self.spec.model,
            "version": self.spec.version,
            "replicas": [
                {
                    **r.info(),
                    "address": r.address,
                    "busy": r.busy,
                    "age_s": round(now - r.started_at, 1),
                }
                for r in self.replicas
            ],
            "target_replicas": self.target,
            "starting": self.starting,
            "queued": stats.queued,
            "in_flight": stats.in_flight,
            "cold_starts": stats.cold_starts,
            "last_error": self.last_error,
            **self.backend.describe(self.deployment),
        }
