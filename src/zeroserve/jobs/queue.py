"""The durable job queue: one small interface, one implementation per backend.

Delivery is at least once. ``lease`` hands out queued jobs for ``visibility_s``
seconds; a worker that dies holding one lets the lease expire and the job is
leased again. Every lease carries a fresh token, and ``ack``/``fail``/``nack``
only take effect while the job is still held under that token, so a stale
worker cannot finish a job that someone else now holds (its call returns False).

A job's life:

- ``queued`` -> ``running`` on ``lease``; -> ``cancelled`` on ``cancel``.
- ``running`` -> ``succeeded`` on ``ack``; -> ``failed`` on ``fail(retryable=False)``;
  -> ``queued`` (after a backoff) on ``fail``, ``nack`` or an expired lease;
  -> ``dead`` instead once ``max_attempts`` are used up.
- ``dead`` or ``failed`` -> ``queued`` on ``retry``.

``attempts`` counts leases; ``nack`` (give back unprocessed) does not use one.
Implementations: ``sqlite:///path/jobs.db`` (embedded default) and
``postgresql://...`` (``FOR UPDATE SKIP LOCKED``) for a cluster.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from zeroserve.errors import BadRequest, JobNotFound

Json = Any
"""A JSON-serialisable value (payloads, results)."""
Clock = Callable[[], float]
"""Seconds since the epoch; injected so tests can move time without sleeping."""

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_VISIBILITY_S = 30.0
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_MAX_S = 300.0


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"
    CANCELLED = "cancelled"

    @property
    def done(self) -> bool:
        """True when the job will not run again without ``retry``."""
        return self not in (JobStatus.QUEUED, JobStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job as stored."""

    id: str
    queue: str
    payload: Json
    status: JobStatus
    attempts: int
    """Times the job was leased (``nack`` gives one back)."""
    max_attempts: int
    created_at: float
    updated_at: float
    available_at: float
    """When a queued job may next be leased (later than now while backing off)."""
    lease_expires_at: float | None = None
    idempotency_key: str | None = None
    result: Json = None
    """Set by ``ack``: a URI of the stored result, or small inline JSON."""
    error: str | None = None
    """The last failure's message (kept when a retry succeeds later)."""


@dataclass(frozen=True, slots=True)
class Lease:
    """A worker's hold on a job until ``expires_at``; pass it back to ack/fail/nack."""

    job: Job
    token: str
    expires_at: float

    @property
    def job_id(self) -> str:
        return self.job.id


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Delay before the next try after ``attempts`` failed ones: base * 2^(n-1), capped."""
    return float(min(max_s, base_s * 2 ** max(0, attempts - 1)))


def check_limits(n: int, visibility_s: float) -> None:
    if n < 1:
        raise BadRequest(f"lease n must be at least 1, got {n}")
    if visibility_s <= 0:
        raise BadRequest(f"visibility_s must be positive, got {visibility_s}")


class JobQueue(abc.ABC):
    """Durable queue of jobs, partitioned by queue name (``endpoint:fraud``, ``batch:<id>``).

    Implementations take ``max_attempts``, ``backoff_base_s``, ``backoff_max_s``
    and ``clock`` as keyword arguments.
    """

    def __init__(
        self,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        backoff_base_s: float = DEFAULT_BACKOFF_BASE_S,
        backoff_max_s: float = DEFAULT_BACKOFF_MAX_S,
        clock: Clock = time.time,
    ) -> None:
        if max_attempts < 1:
            raise BadRequest(f"max_attempts must be at least 1, got {max_attempts}")
        self.max_attempts = max_attempts
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock

    def backoff_s(self, attempts: int) -> float:
        return backoff_s(attempts, self.backoff_base_s, self.backoff_max_s)

    @abc.abstractmethod
    def put(
        self,
        queue: str,
        payload: Json,
        *,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        delay_s: float = 0.0,
    ) -> Job:
        """Enqueue a job; with an ``idempotency_key`` already used in ``queue``,
        return that job unchanged instead of making a new one."""

    def put_many(
        self, queue: str, payloads: Iterable[Json], *, max_attempts: int | None = None
    ) -> list[Job]:
        """Enqueue one job per payload (no idempotency keys); one transaction where possible."""
        return [self.put(queue, p, max_attempts=max_attempts) for p in payloads]

    @abc.abstractmethod
    def lease(
        self, queue: str, n: int = 1, visibility_s: float = DEFAULT_VISIBILITY_S
    ) -> list[Lease]:
        """Lease up to ``n`` available jobs (oldest first) for ``visibility_s`` seconds."""

    @abc.abstractmethod
    def ack_many(self, acks: Iterable[tuple[Lease, Json]]) -> list[bool]:
        """Mark each held job succeeded with its result reference; one transaction."""

    def ack(self, lease: Lease, result: Json = None) -> bool:
        """Mark the job succeeded with ``result``; False if the lease is no longer held."""
        return self.ack_many([(lease, result)])[0]

    @abc.abstractmethod
    def fail(self, lease: Lease, error: str, *, retryable: bool = True) -> bool:
        """Record a failure. Non-retryable: ``failed`` now. Retryable: back to
        ``queued`` after a backoff, or ``dead`` once ``max_attempts`` are used."""

    @abc.abstractmethod
    def nack(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        """Give the job back unprocessed (e.g. on shutdown); the attempt is not counted."""

    @abc.abstractmethod
    def extend(self, lease: Lease, visibility_s: float) -> Lease | None:
        """Heartbeat: hold the job ``visibility_s`` more seconds from now; None if lost."""

    @abc.abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job; False if it is running or done. Unknown id: JobNotFound."""

    @abc.abstractmethod
    def cancel_queue(self, queue: str, reason: str) -> int:
        """Cancel every queued job of ``queue``, recording ``reason`` as its error;
        returns how many. Running jobs finish (their endpoint decides)."""

    @abc.abstractmethod
    def purge(self, finished_before: float, limit: int = 1000) -> list[Job]:
        """Delete up to ``limit`` finished jobs last updated before ``finished_before``
        (succeeded, failed, dead, cancelled); returns them so callers can delete
        what the jobs point to (inputs, results)."""

    @abc.abstractmethod
    def retry(self, job_id: str) -> bool:
        """Queue a dead (or failed) job again with fresh attempts; False in other states."""

    @abc.abstractmethod
    def get(self, job_id: str) -> Job:
        """The job with ``job_id``, or raise ``JobNotFound``."""

    @abc.abstractmethod
    def list(
        self, *, status: JobStatus | None = None, queue: str | None = None, limit: int = 100
    ) -> Sequence[Job]:
        """Jobs filtered by status and queue, newest first."""

    def dead_letters(self, queue: str | None = None, limit: int = 100) -> Sequence[Job]:
        """The dead-letter queue: jobs that used up their attempts."""
        return self.list(status=JobStatus.DEAD, queue=queue, limit=limit)

    @abc.abstractmethod
    def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        """Jobs per status (every status present), for ``/metrics``."""

    def depth(self, queue: str) -> int:
        """Outstanding work in ``queue``: queued plus running jobs (a scaling signal)."""
        counts = self.counts(queue)
        return counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING]

    def close(self) -> None:  # noqa: B027 - optional hook with a safe default
        """Release connections held by this process."""

    def _not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(
            f"no job {job_id!r}; list jobs with `zeroserve jobs list`", job_id=job_id
        )


def open_queue(url: str, **options: Any) -> JobQueue:
    """The queue at ``url``: ``sqlite:///path/jobs.db`` or ``postgresql://...``;
    ``options`` go to the implementation's constructor."""
    if url.startswith("sqlite:"):
        from zeroserve.jobs.sqlite_queue import SqliteQueue

        return SqliteQueue(url, **options)
    if url.startswith(("postgresql:", "postgres:")):
        from zeroserve.jobs.postgres_queue import PostgresQueue

        return PostgresQueue(url, **options)
    if url.startswith(("redis:", "rediss:")):
        raise BadRequest(
            f"the Redis job queue is not implemented yet ({url!r}); "
            "use postgresql://host/db for a cluster, or sqlite:///path/jobs.db"
        )
    raise BadRequest(
        f"unsupported job queue URL {url!r}; use sqlite:///path/jobs.db, "
        "postgresql://host/db or redis://host:6379/0"
    )


async def keep_leased(queue: JobQueue, holder: list[Lease], visibility_s: float) -> None:
    """Extend ``holder[0]`` every third of its visibility until cancelled or lost.

    Run it as a task beside a job's work: a slow or cold-started job then never
    expires under a live worker; only a dead worker lets it be redelivered.
    """
    while True:
        await asyncio.sleep(visibility_s / 3)
        renewed = await asyncio.to_thread(queue.extend, holder[0], visibility_s)
        if renewed is None:
            return
        holder[0] = renewed
