"""A pool: the replicas of one variant, their request queue and their dispatch.

Requests queue here; each replica runs a loop that takes whatever has queued
(up to ``max_batch_size`` rows), predicts it as one batch and hands each
request its slice. Batching costs nothing at low load: an idle replica waits
only a couple of event-loop turns for requests that arrived together, and
under load the batch is simply what queued while the replica was busy.

``Pool`` is that dispatch half. ``LocalPool`` (the control process) owns
the replicas: it forks them from the zygote, scales them and explains their
deaths. A secondary gateway process runs a ``MirrorPool`` (gateway/mirror.py)
over channels of its own to the same replicas. A request that arrives at
zero replicas waits while one is forked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from zeroserve.errors import (
    ModelError,
    NoReplicaAvailable,
    ReplicaCrashed,
    RequestTimeout,
    TooManyRequests,
    ZeroserveError,
)
from zeroserve.metrics import VariantMetrics
from zeroserve.serving.replica import Replica, ZygoteHandle, describe_exit
from zeroserve.types import Arrays, UsageRecord, VariantSpec

log = logging.getLogger("zeroserve.pool")

GATHER_YIELDS = 2


class UsageSink(Protocol):
    def record(self, rec: UsageRecord) -> None: ...


@dataclass(slots=True)
class Result:
    outputs: Arrays
    cold: bool
    compute_s: float


@dataclass(slots=True)
class Pending:
    arrays: Arrays
    rows: int
    future: asyncio.Future[Result]
    cold: bool


@dataclass(slots=True)
class PoolStats:
    """What the autoscaler sees of a pool at one instant."""

    replicas: int
    starting: int
    in_flight: int
    queued: int
    last_request_at: float
    cold_starts: int


@dataclass(slots=True)
class PeerPoolStats:
    """A secondary gateway process's view of one pool, as it last reported it."""

    in_flight: int = 0
    queued: int = 0
    last_request_at: float = 0.0
    busy_s: float = 0.0
    peak_in_flight: int = 0
    cold_starts: int = 0


@dataclass
class PoolConfig:
    endpoint: str
    spec: VariantSpec
    artifact_dir: Path
    start_timeout_s: float = 60.0
    zygote_name: str = ""


class Pool:
    """Requests queued for one variant and the loops that feed them to its replicas."""

    def __init__(
        self,
        endpoint: str,
        spec: VariantSpec,
        metrics: VariantMetrics,
        meter: UsageSink | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self.metrics = metrics
        self.meter = meter
        self.replicas: list[Replica] = []
        self.queue: deque[Pending] = deque()
        self.in_flight = 0
        self.cold_starts = 0
        self.last_request_at = time.monotonic()
        self.last_error: str | None = None
        self.busy_s = 0.0
        self.peak_in_flight = 0
        """Most requests in flight since the controller last read it (for the meter)."""
        self._work = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_cold(self) -> None:
        """A request arrived with no replica to take it: get one started."""

    def _fail_all(self) -> None:
        """Stop taking work: fail what is queued and what the replicas hold, close channels."""
        self._stopped = True
        running = NoReplicaAvailable(
            f"endpoint {self.endpoint} was removed or changed while this request was running; "
            "retry it"
        )
        for replica in list(self.replicas):
            replica.retire()
            replica.fail_pending(running)
            replica.close()
        self._work.set()
        self.fail_queued(NoReplicaAvailable(f"endpoint {self.endpoint} was removed"))

    def _cancel_tasks(self) -> None:
        """After ``_fail_all`` had a loop turn to hand its errors to the requests."""
        for task in list(self._tasks):
            task.cancel()

    def fail_queued(self, error: Exception) -> None:
        while self.queue:
            p = self.queue.popleft()
            if not p.future.done():
                p.future.set_exception(error)

    def add_replica(self, replica: Replica) -> None:
        self.replicas.append(replica)
        self._spawn(self._run(replica))
        if self.queue:
            self._work.set()

    def live_replicas(self) -> list[Replica]:
        return [r for r in self.replicas if not r.closing]

    # the request path
    async def submit(self, arrays: Arrays, rows: int, timeout_s: float) -> Result:
        if len(self.queue) >= self.spec.scaling.max_queue:
            raise TooManyRequests(
                f"endpoint {self.endpoint} has {len(self.queue)} requests queued, its limit "
                f"(max_queue); retry after a short wait or raise max_replicas",
                retry_after_s=1.0,
            )
        loop = asyncio.get_running_loop()
        cold = not self.replicas
        pending = Pending(arrays, rows, loop.create_future(), cold)
        self.queue.append(pending)
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:  # noqa: PLR1730 - cheaper than max() per request
            self.peak_in_flight = self.in_flight
        if cold:
            self.cold_starts += 1
            self.metrics.cold_starts.inc()
            self._on_cold()
        self._work.set()
        timer = loop.call_later(timeout_s, self._expire, pending, timeout_s)
        try:
            return await pending.future
        finally:
            timer.cancel()
            self.in_flight -= 1
            self.last_request_at = time.monotonic()

    def _expire(self, pending: Pending, timeout_s: float) -> None:
        if not pending.future.done():
            reason = self.last_error if not self.replicas and self.last_error else None
            pending.future.set_exception(
                RequestTimeout(
                    f"no answer from endpoint {self.endpoint} within {timeout_s:g} s"
                    + (
                        f"; its replicas cannot start: {reason}"
                        if reason
                        else "; raise request_timeout_s or max_replicas"
                    )
                )
            )

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        rows = 0
        limit = self.spec.max_batch_size
        queue = self.queue
        while queue:
            head = queue[0]
            if head.future.done():  # timed out while queued
                queue.popleft()
                continue
            if batch and rows + head.rows > limit:
                break
            batch.append(queue.popleft())
            rows += head.rows
        return batch

    async def _run(self, replica: Replica) -> None:
        wait_s = self.spec.max_batch_wait_ms / 1000.0
        while not replica.closing:
            if not self.queue:
                self._work.clear()
                await self._work.wait()
                if replica.closing:
                    break
                # Requests that arrived together are still being parsed: give them a
                # couple of loop turns to join, unless this one is alone in flight.
                if self.in_flight > 1:
                    for _ in range(GATHER_YIELDS):
                        await asyncio.sleep(0)
                if wait_s and sum(p.rows for p in self.queue) < self.spec.max_batch_size:
                    await asyncio.sleep(wait_s)
            batch = self._take()
            if batch:
                await self._execute(replica, batch)
        replica.close()

    async def _execute(self, replica: Replica, batch: list[Pending]) -> None:
        if len(batch) == 1:
            arrays = batch[0].arrays
        else:
            arrays = {k: np.concatenate([p.arrays[k] for p in batch]) for k in batch[0].arrays}
        rows = sum(p.rows for p in batch)
        replica.busy = True
        try:
            meta, outputs = await replica.predict(arrays)
        except ZeroserveError as exc:
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        finally:
            replica.busy = False
            replica.last_used = time.monotonic()
        if meta.get("op") == "error":
            await self._isolate_error(replica, batch, str(meta.get("message")))
            return
        compute_s = float(meta.get("compute_s", 0.0))
        # The model's own time: a replica waiting on a busy gateway is not busy.
        self.busy_s += compute_s
        self.metrics.batch_rows.observe(rows)
        self.metrics.compute.observe(compute_s)
        if self.meter is not None:
            self.meter.record(
                UsageRecord(
                    endpoint=self.endpoint,
                    variant=self.spec.name,
                    requests=len(batch),
                    rows=rows,
                    compute_s=compute_s,
                    bytes_in=sum(a.nbytes for a in arrays.values()),
                    bytes_out=sum(a.nbytes for a in outputs.values()),
                    cold_starts=int(any(p.cold for p in batch)),
                )
            )
        if len(batch) == 1:
            p = batch[0]
            if not p.future.done():
                p.future.set_result(Result(outputs, p.cold, compute_s))
            return
        offset = 0
        for p in batch:
            end = offset + p.rows
            if not p.future.done():
                sliced = {k: v[offset:end] for k, v in outputs.items()}
                p.future.set_result(Result(sliced, p.cold, compute_s))
            offset = end

    async def _isolate_error(self, replica: Replica, batch: list[Pending], message: str) -> None:
        """A batch failed: retry its requests one by one so only the bad ones fail."""
        if len(batch) > 1:
            for p in batch:
                if not p.future.done():
                    await self._execute(replica, [p])
            return
        p = batch[0]
        if not p.future.done():
            p.future.set_exception(
                ModelError(
                    f"model {self.spec.model} v{self.spec.version} failed on this input: {message}"
                )
            )

    def stats(self) -> PoolStats:
        return PoolStats(
            replicas=len(self.live_replicas()),
            starting=0,
            in_flight=self.in_flight,
            queued=len(self.queue),
            last_request_at=self.last_request_at,
            cold_starts=self.cold_starts,
        )


class LocalPool(Pool):
    """A pool that owns its replicas: forks them from a zygote, scales and replaces them.

    Secondary gateway processes report their own queue and in-flight counts for
    this pool (``peers``); ``stats`` adds them so the autoscaler sees all demand.
    """

    def __init__(
        self,
        config: PoolConfig,
        metrics: VariantMetrics,
        meter: UsageSink | None = None,
        on_crash: Any = None,
        on_change: Callable[[], None] | None = None,
        on_died: Callable[[int, str], None] | None = None,
    ) -> None:
        super().__init__(config.endpoint, config.spec, metrics, meter)
        self.config = config
        self.on_crash = on_crash
        self.on_change = on_change
        """Called when the set of live replicas changes (secondaries follow it)."""
        self.on_died = on_died
        """Called with a dead replica's pid and how it died (secondaries tell their clients)."""
        self.zygote = ZygoteHandle(config.artifact_dir, config.zygote_name or self.spec.model)
        self.starting = 0
        self.target = self.spec.scaling.min_replicas
        self.peers: dict[int, PeerPoolStats] = {}
        self._peer_peak = 0

    # lifecycle
    async def start(self) -> None:
        self.zygote.start()
        await self.zygote.wait_ready(self.config.start_timeout_s)
        await self.scale_to(self.target)

    async def stop(self) -> None:
        self._fail_all()
        self._changed()
        await asyncio.to_thread(self.zygote.stop)
        self._cancel_tasks()

    def evict_zygote(self) -> None:
        """Free the zygote's memory; the next replica start rebuilds it (slower, still correct)."""
        self.zygote.stop()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _on_cold(self) -> None:
        self.wake()

    def wake(self) -> None:
        """Start a replica if none is live or starting (a cold request is waiting)."""
        self.last_request_at = time.monotonic()
        if self.starting == 0 and not self.live_replicas() and not self._stopped:
            self.target = max(self.target, 1)
            self._spawn(self.scale_to(self.target))

    # replicas
    async def scale_to(self, target: int) -> None:
        """Start or retire replicas until ``target`` are live (bounded by max_replicas)."""
        if self._stopped:
            return
        self.target = max(0, min(target, self.spec.scaling.max_replicas))
        self.metrics.target_replicas.set(self.target)
        live = [r for r in self.replicas if not r.closing]
        missing = self.target - len(live) - self.starting
        if missing > 0:
            self.metrics.scale_up.inc(missing)
            # Reserve the slots before awaiting, so a concurrent call sees them.
            self.starting += missing
            await asyncio.gather(
                *(self._start_replica() for _ in range(missing)), return_exceptions=True
            )
        elif len(live) > self.target:
            surplus = sorted(live, key=lambda r: (r.busy, r.last_used))[: len(live) - self.target]
            self.metrics.scale_down.inc(len(surplus))
            for replica in surplus:
                replica.retire()
            self._work.set()
            self._changed()

    async def _start_replica(self) -> None:
        """Start one replica in a slot the caller reserved in ``starting``."""
        started = time.perf_counter()
        try:
            if not self.zygote.alive:
                self.zygote.start()
                await self.zygote.wait_ready(self.config.start_timeout_s)
            pid, fd = await self.zygote.fork()
            replica = await Replica.connect(
                pid, fd, self._on_replica_exit, self.config.start_timeout_s
            )
        except Exception as exc:
            self.last_error = str(exc)
            log.warning(
                "replica start failed",
                extra={"endpoint": self.endpoint, "variant": self.spec.name, "error": str(exc)},
            )
            self._fail_queued_if_hopeless(exc)
            return
        finally:
            self.starting -= 1
            if self.last_error is not None:
                self._changed()  # secondaries' timeouts can then say why
        self.last_error = None
        self.add_replica(replica)
        self.metrics.replicas.set(len(self.replicas))
        self.metrics.cold_start_latency.observe(time.perf_counter() - started)
        self._changed()

    def _fail_queued_if_hopeless(self, exc: Exception) -> None:
        if self.replicas or self.starting:
            return
        self.fail_queued(exc if isinstance(exc, ZeroserveError) else NoReplicaAvailable(str(exc)))

    def _on_replica_exit(self, replica: Replica) -> None:
        with contextlib.suppress(ValueError):
            self.replicas.remove(replica)
        self.metrics.replicas.set(len(self.replicas))
        self._work.set()
        self._changed()
        if self._stopped:
            replica.fail_pending(NoReplicaAvailable(f"endpoint {self.endpoint} was removed"))
        else:
            self._spawn(self._after_exit(replica))

    async def _after_exit(self, replica: Replica) -> None:
        if not replica.retired or replica.kill_reason:
            status = await self.zygote.exit_status(replica.pid)
            how = replica.kill_reason or describe_exit(status)
            if self.on_crash is not None:
                self.on_crash("memory" if replica.kill_reason else "crash")
            message = (
                f"the replica serving {self.endpoint} (model {self.spec.model} "
                f"v{self.spec.version}) {how} while predicting this request; "
                "it is being replaced, retry the request"
            )
            if self.on_died is not None:
                self.on_died(replica.pid, message)
            replica.fail_pending(ReplicaCrashed(message))
            log.warning(
                "replica died", extra={"endpoint": self.endpoint, "pid": replica.pid, "how": how}
            )
        else:
            await self.zygote.exit_status(replica.pid, timeout_s=0.5)  # reap its status
        replica.fail_pending(ReplicaCrashed("the replica stopped; retry the request"))
        live = [r for r in self.replicas if not r.closing]
        if len(live) + self.starting < self.target or (self.queue and not live):
            await self.scale_to(max(self.target, 1 if self.queue else 0))

    def check_memory(self) -> float:
        """Kill replicas over their memory limit; returns the largest PSS in MB."""
        largest = 0.0
        limit = self.spec.memory_limit_mb
        for replica in list(self.replicas):
            pss = proportional_memory_mb(replica.pid)
            largest = max(largest, pss)
            if limit is not None and pss > limit and replica.kill_reason is None:
                replica.kill(
                    f"used {pss:.0f} MB, over its memory limit of {limit} MB, and was killed"
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
        return {
            "variant": self.spec.name,
            "model": self.spec.model,
            "version": self.spec.version,
            "replicas": [
                {"pid": r.pid, "busy": r.busy, "age_s": round(time.monotonic() - r.started_at, 1)}
                for r in self.replicas
            ],
            "target_replicas": self.target,
            "starting": self.starting,
            "queued": stats.queued,
            "in_flight": stats.in_flight,
            "cold_starts": stats.cold_starts,
            "zygote_alive": self.zygote.alive,
            "zygote_load_s": round(self.zygote.load_s, 3),
            "last_error": self.last_error,
        }


def proportional_memory_mb(pid: int) -> float:
    """The replica's proportional set size: its own pages plus its share of the zygote's."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    return 0.0
