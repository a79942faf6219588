"""A pool: the replicas of one variant, their request queue and their dispatch.

Requests queue here; each replica runs a loop that takes whatever has queued
(up to ``max_batch_size`` rows of one shape), predicts it as one batch and
hands each request its slice. Batching costs nothing at low load: an idle
replica waits only a couple of event-loop turns for requests that arrived
together, and under load the batch is simply what queued while it was busy.

The pool does not know where replicas run: it holds ``ReplicaHandle``s.
``ScalingPool`` (serving/scaling_pool.py) starts and replaces them through a
``Backend``; a secondary gateway process runs a ``MirrorPool``
(gateway/mirror.py) over channels of its own to the same replicas.

Nothing a request or a model does can end a replica's loop: every failure
while joining a batch, calling the replica or splitting its answer fails that
batch only. Outputs must have one row per input row, or the batch fails with
``BadModelOutput`` instead of handing clients each other's answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from zeroserve.errors import (
    BadModelOutput,
    ModelError,
    NoReplicaAvailable,
    ReplicaHung,
    RequestTimeout,
    TooManyRequests,
    ZeroserveError,
)
from zeroserve.metrics import VariantMetrics
from zeroserve.serving.handle import NotSent, ReplicaHandle, ReplyMeta
from zeroserve.types import Arrays, UsageRecord, VariantSpec

log = logging.getLogger("zeroserve.pool")

GATHER_YIELDS = 2
"""Loop turns an idle replica gives requests that arrived together (fixed; see design notes)."""

ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


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
    shape: ShapeKey
    """Names, dtypes and row shapes: only requests that agree are batched together."""


@dataclass(slots=True)
class PoolStats:
    """What the autoscaler sees of a pool at one instant."""

    replicas: int
    starting: int
    in_flight: int
    queued: int
    last_request_at: float
    cold_starts: int


def shape_key(arrays: Arrays) -> ShapeKey:
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in arrays.items())


class Pool:
    """Requests queued for one variant and the loops that feed them to its replicas."""

    def __init__(
        self,
        endpoint: str,
        spec: VariantSpec,
        metrics: VariantMetrics,
        meter: UsageSink | None = None,
        *,
        shadow: bool = False,
        batch_deadline_s: float | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.spec = spec
        self.metrics = metrics
        self.meter = meter
        self.shadow = shadow
        """A shadow's copies are not endpoint requests: the meter counts their compute only."""
        self.batch_deadline_s = batch_deadline_s
        """A replica that takes longer on one batch is killed as hung and replaced."""
        self.replicas: list[ReplicaHandle] = []
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

    def _on_loop_end(self, replica: ReplicaHandle) -> None:
        """A replica's dispatch loop ended while the replica was still wanted: replace it."""

    def _on_hung(self, replica: ReplicaHandle, message: str) -> None:
        replica.kill(message)

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

    def add_replica(self, replica: ReplicaHandle) -> None:
        self.replicas.append(replica)
        self._spawn(self._run(replica))
        if self.queue:
            self._work.set()

    def live_replicas(self) -> list[ReplicaHandle]:
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
        pending = Pending(arrays, rows, loop.create_future(), cold, shape_key(arrays))
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
        """The head request and those queued behind it of the same shape, up to the row limit."""
        queue = self.queue
        while queue and queue[0].future.done():  # timed out while queued
            queue.popleft()
        if not queue:
            return []
        head = queue.popleft()
        batch = [head]
        rows = head.rows
        limit = self.spec.max_batch_size
        skipped: list[Pending] = []
        while queue and rows < limit:
            p = queue[0]
            if p.future.done():
                queue.popleft()
                continue
            if p.shape != head.shape:
                skipped.append(queue.popleft())  # another shape: a batch of its own, later
                if len(skipped) >= limit:
                    break
                continue
            if rows + p.rows > limit:
                break
            batch.append(queue.popleft())
            rows += p.rows
        queue.extendleft(reversed(skipped))
        return batch

    async def _run(self, replica: ReplicaHandle) -> None:
        try:
            await self._dispatch(replica)
        except asyncio.CancelledError:
            raise
        except BaseException:
            log.exception(
                "dispatch loop failed; replacing the replica",
                extra={"endpoint": self.endpoint, "variant": self.spec.name},
            )
        finally:
            if not replica.closing and not self._stopped:
                replica.retire()
                self._on_loop_end(replica)
            replica.close()

    async def _dispatch(self, replica: ReplicaHandle) -> None:
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
                wait_s = self.spec.max_batch_wait_ms / 1000.0
                if wait_s and sum(p.rows for p in self.queue) < self.spec.max_batch_size:
                    await asyncio.sleep(wait_s)
            batch = self._take()
            if batch:
                try:
                    await self._execute(replica, batch)
                except Exception as exc:
                    log.exception(
                        "batch failed unexpectedly",
                        extra={"endpoint": self.endpoint, "variant": self.spec.name},
                    )
                    message = f"endpoint {self.endpoint} could not serve this batch ({exc}); retry"
                    _fail(batch, ZeroserveError(message))

    def _model_says(self, what: str) -> str:
        return f"model {self.spec.model} v{self.spec.version} {what}"

    async def _execute(self, replica: ReplicaHandle, batch: list[Pending]) -> None:
        arrays = batch[0].arrays if len(batch) == 1 else _join(batch)
        rows = sum(p.rows for p in batch)
        replica.busy = True
        try:
            meta, outputs = await self._call(replica, arrays)
        except NotSent:
            # Retired between taking the batch and sending it: the next replica takes it.
            self.queue.extendleft(reversed([p for p in batch if not p.future.done()]))
            self._work.set()
            return
        except ZeroserveError as exc:
            _fail(batch, exc)
            return
        finally:
            replica.busy = False
            replica.last_used = time.monotonic()
        if meta.get("op") == "error":
            await self._isolate(replica, batch, str(meta.get("message")))
            return
        problem = _row_problem(outputs, rows)
        if problem is not None:
            if len(batch) > 1:
                await self._isolate(replica, batch, problem)
            else:
                _fail(batch, BadModelOutput(self._model_says(f"returned {problem}")))
            return
        compute_s = float(meta.get("compute_s", 0.0))
        # The model's own time: a replica waiting on a busy gateway is not busy.
        self.busy_s += compute_s
        self.metrics.batch_rows.observe(rows)
        self.metrics.compute.observe(compute_s)
        if self.meter is not None:
            self._meter(batch, rows, compute_s, arrays, outputs)
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

    async def _call(self, replica: ReplicaHandle, arrays: Arrays) -> tuple[ReplyMeta, Arrays]:
        if self.batch_deadline_s is None:
            return await replica.predict(arrays)
        # A timer, not wait_for: that would start a task for every batch.
        timer = asyncio.get_running_loop().call_later(self.batch_deadline_s, self._hung, replica)
        try:
            return await replica.predict(arrays)
        finally:
            timer.cancel()

    def _hung(self, replica: ReplicaHandle) -> None:
        message = (
            f"did not answer one batch within {self.batch_deadline_s:g} s "
            "(batch_deadline_s) and was killed as hung"
        )
        # Everything it holds is stuck with it: those requests fail now, saying why.
        replica.fail_pending(
            ReplicaHung(
                f"the replica serving {self.endpoint} ({self._model_says('')}) {message}; "
                "it is being replaced, retry the request"
            )
        )
        self._on_hung(replica, message)

    def _meter(
        self, batch: list[Pending], rows: int, compute_s: float, arrays: Arrays, outputs: Arrays
    ) -> None:
        assert self.meter is not None
        self.meter.record(
            UsageRecord(
                endpoint=self.endpoint,
                variant=self.spec.name,
                requests=0 if self.shadow else len(batch),
                rows=0 if self.shadow else rows,
                compute_s=compute_s,
                bytes_in=sum(a.nbytes for a in arrays.values()),
                bytes_out=sum(a.nbytes for a in outputs.values()),
                cold_starts=int(any(p.cold for p in batch)),
            )
        )

    async def _isolate(self, replica: ReplicaHandle, batch: list[Pending], message: str) -> None:
        """A batch failed: retry its requests one by one so only the bad ones fail."""
        if len(batch) > 1:
            for p in batch:
                if not p.future.done():
                    await self._execute(replica, [p])
            return
        _fail(batch, ModelError(self._model_says(f"failed on this input: {message}")))

    def stats(self) -> PoolStats:
        return PoolStats(
            replicas=len(self.live_replicas()),
            starting=0,
            in_flight=self.in_flight,
            queued=len(self.queue),
            last_request_at=self.last_request_at,
            cold_starts=self.cold_starts,
        )


def _join(batch: list[Pending]) -> Arrays:
    return {k: np.concatenate([p.arrays[k] for p in batch]) for k in batch[0].arrays}


def _fail(batch: list[Pending], exc: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)


def _row_problem(outputs: Arrays, rows: int) -> str | None:
    """Why ``outputs`` cannot be one answer per input row, or None when they can."""
    if not outputs:
        return "no outputs"
    for name, value in outputs.items():
        if not isinstance(value, np.ndarray) or value.ndim == 0:
            return f"a scalar for output {name!r} where {rows} row(s) were expected"
        if len(value) != rows:
            return f"{len(value)} row(s) of output {name!r} for {rows} input row(s)"
    return None
