"""A secondary gateway process's copy of the routing table, and its pools.

The control process sends the whole state (endpoints, variants, and the live
replicas with the addresses they listen on) whenever it changes; ``Mirror``
makes this process match it. Each ``MirrorPool`` opens channels of its own to
the replicas and batches its requests exactly as the control process does;
it never starts or stops a replica, it asks (``wake``) and follows the state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from zeroserve.control.policy import cumulative
from zeroserve.control.routes import Route, VariantRoute
from zeroserve.errors import NoReplicaAvailable, ReplicaCrashed
from zeroserve.metrics import Metrics, VariantMetrics
from zeroserve.serving.handle import Backend, ReplicaHandle
from zeroserve.serving.pool import Pool, UsageSink
from zeroserve.types import EndpointSpec, ModelVersionInfo, UsageRecord, VariantSpec

log = logging.getLogger("zeroserve.gateway")

DIAL_TIMEOUT_S = 5.0
DEATH_NOTICE_WAIT_S = 1.0
DEATH_NOTICE_KEEP_S = 30.0


class MirrorPool(Pool):
    """Dispatch to replicas that the control process owns."""

    def __init__(
        self,
        endpoint: str,
        spec: VariantSpec,
        metrics: VariantMetrics,
        meter: UsageSink,
        backend: Backend,
        send: Callable[[dict[str, Any]], None],
        *,
        shadow: bool = False,
        batch_deadline_s: float | None = None,
    ) -> None:
        super().__init__(
            endpoint, spec, metrics, meter, shadow=shadow, batch_deadline_s=batch_deadline_s
        )
        self.backend = backend
        self._send = send
        """Sends a message to the control process about this pool (``key`` added)."""
        self._dialing: set[str] = set()
        self._listed: set[str] = set()
        self._deaths: dict[str, tuple[str, float]] = {}
        self.reported_peak = 0

    def _on_cold(self) -> None:
        self._send({"op": "wake"})

    def _on_hung(self, replica: ReplicaHandle, message: str) -> None:
        # Only the owner can kill it; closing our channel alone would leave it hung for others.
        self._send({"op": "hung", "address": replica.address, "how": message})
        replica.close()

    def _on_loop_end(self, replica: ReplicaHandle) -> None:
        self._redial(replica.address)

    def sync(self, listed: list[str]) -> None:
        """Follow the control process: open channels to new replicas, retire the unlisted."""
        self._listed = set(listed)
        for replica in self.replicas:
            if replica.address not in self._listed and not replica.closing:
                replica.retire()
                self._work.set()
        have = {r.address for r in self.replicas if not r.closing} | self._dialing
        for address in listed:
            if address not in have:
                self._redial(address)

    def _redial(self, address: str) -> None:
        if address in self._listed and address not in self._dialing and not self._stopped:
            self._dialing.add(address)
            self._spawn(self._dial(address))

    async def _dial(self, address: str) -> None:
        try:
            replica = await self.backend.connect(address, self._on_replica_exit, DIAL_TIMEOUT_S)
        except NoReplicaAvailable as exc:
            # Retired or dead in the meantime; the next state from the control process says so.
            log.info("replica not reachable", extra={"endpoint": self.endpoint, "error": str(exc)})
            return
        finally:
            self._dialing.discard(address)
        if self._stopped or address not in self._listed:
            replica.close()
            return
        self.add_replica(replica)

    def _on_replica_exit(self, replica: ReplicaHandle) -> None:
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)
        self._work.set()
        if replica.has_pending:
            self._spawn(self._explain_death(replica))

    async def _explain_death(self, replica: ReplicaHandle) -> None:
        """Fail the requests a dead replica held, saying how it died when the owner knows."""
        deadline = time.monotonic() + DEATH_NOTICE_WAIT_S
        while replica.address not in self._deaths and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        notice = self._deaths.get(replica.address)
        message = (
            notice[0]
            if notice
            else f"the replica serving {self.endpoint} stopped while predicting this request; "
            "retry the request"
        )
        replica.fail_pending(ReplicaCrashed(message))

    def died(self, address: str, message: str) -> None:
        now = time.monotonic()
        self._deaths = {
            a: notice for a, notice in self._deaths.items() if now - notice[1] < DEATH_NOTICE_KEEP_S
        }
        self._deaths[address] = (message, now)

    async def stop(self) -> None:
        self._fail_all()
        await asyncio.sleep(0)
        self._cancel_tasks()

    def report(self) -> list[float]:
        """Counts for the control process's autoscaler: see ``PeerPoolStats``."""
        peak, self.peak_in_flight = self.peak_in_flight, self.in_flight
        return [
            self.in_flight,
            len(self.queue),
            self.last_request_at,
            self.busy_s,
            peak,
            self.cold_starts,
        ]


class UsageBuffer:
    """Usage records summed per variant until they are sent to the control process."""

    def __init__(self) -> None:
        self._sums: dict[tuple[str, str], list[float]] = {}

    def record(self, rec: UsageRecord) -> None:
        sums = self._sums.get((rec.endpoint, rec.variant))
        if sums is None:
            sums = self._sums[(rec.endpoint, rec.variant)] = [0, 0, 0.0, 0, 0, 0]
        sums[0] += rec.requests
        sums[1] += rec.rows
        sums[2] += rec.compute_s
        sums[3] += rec.bytes_in
        sums[4] += rec.bytes_out
        sums[5] += rec.cold_starts

    def drain(self) -> list[list[Any]]:
        sums, self._sums = self._sums, {}
        return [[endpoint, variant, *values] for (endpoint, variant), values in sums.items()]


def usage_records(rows: list[list[Any]]) -> list[UsageRecord]:
    """The inverse of ``UsageBuffer.drain``, in the control process."""
    return [
        UsageRecord(
            endpoint=str(e),
            variant=str(v),
            requests=int(req),
            rows=int(rows_),
            compute_s=float(cs),
            bytes_in=int(bi),
            bytes_out=int(bo),
            cold_starts=int(cold),
        )
        for e, v, req, rows_, cs, bi, bo, cold in rows
    ]


class Mirror:
    """The routing table of a secondary gateway process (a ``RouteTable``)."""

    def __init__(
        self,
        metrics: Metrics,
        send: Callable[[dict[str, Any]], None],
        backend: Backend,
        batch_deadline_s: float | None = None,
    ) -> None:
        self.metrics = metrics
        self.send = send
        self.backend = backend
        self.batch_deadline_s = batch_deadline_s
        self.routes: dict[str, Route] = {}
        self.pools: dict[str, MirrorPool] = {}
        self.usage = UsageBuffer()
        self._stopping: set[asyncio.Task[None]] = set()

    def apply(self, state: dict[str, Any]) -> None:
        used: set[str] = set()
        routes: dict[str, Route] = {}
        for entry in state["routes"]:
            spec = EndpointSpec.model_validate(entry["spec"])
            variants = [self._variant(spec.name, v, used, False) for v in entry["variants"]]
            shadow = (
                self._variant(spec.name, entry["shadow"], used, True) if entry["shadow"] else None
            )
            old = self.routes.get(spec.name)
            new_pools = [v.pool for v in variants] + ([shadow.pool] if shadow else [])
            if (
                old is not None
                and old.spec == spec
                and [v.pool for v in old.all_variants()] == new_pools
            ):
                routes[spec.name] = old  # same endpoint: keep its in-flight count
            else:
                weights = cumulative([v.spec.weight for v in variants])
                routes[spec.name] = Route(spec, variants, weights, shadow)
        self.routes = routes
        for key in [k for k in self.pools if k not in used]:
            task = asyncio.get_running_loop().create_task(self.pools.pop(key).stop())
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    def _variant(
        self, endpoint: str, entry: dict[str, Any], used: set[str], shadow: bool
    ) -> VariantRoute:
        key = str(entry["key"])
        used.add(key)
        spec = VariantSpec.model_validate(entry["spec"])
        version = ModelVersionInfo.model_validate(entry["version"])
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = MirrorPool(
                endpoint,
                spec,
                self.metrics.for_variant(endpoint, spec.name),
                self.usage,
                self.backend,
                lambda message: self.send({**message, "key": key}),
                shadow=shadow,
                batch_deadline_s=self.batch_deadline_s,
            )
        pool.spec = spec
        pool.last_error = entry.get("last_error")
        pool.sync([str(address) for address in entry["replicas"]])
        signature = version.signature.select_outputs(spec.outputs)
        return VariantRoute(spec, version, pool, pool.metrics, signature)

    def died(self, key: str, address: str, message: str) -> None:
        pool = self.pools.get(key)
        if pool is not None:
            pool.died(address, message)

    def report(self) -> dict[str, list[float]]:
        return {key: pool.report() for key, pool in self.pools.items()}

    async def stop(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.pools.values()), return_exceptions=True)
        self.pools.clear()
        self.routes = {}
