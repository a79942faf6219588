"""The meter: per-minute usage per endpoint variant, kept in memory and flushed as rollups.

``record``, ``observe_concurrency`` and ``observe_memory`` are on the hot path:
a dict lookup and a few additions under one lock, no I/O. The controller calls
``flush`` every few seconds; ``usage`` reads the rollups back for ``cost report``.
"""

from __future__ import annotations

import math
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from zeroserve.cost.profile import WorkloadProfile
from zeroserve.cost.tables import UsageMinute
from zeroserve.errors import BadRequest, NotFound
from zeroserve.types import UsageRecord

MINUTE_S = 60
DEFAULT_MEMORY_MB = 1024  # when no replica memory was observed
DEFAULT_DURATION_S = 0.01  # when requests were counted but no compute time
MIN_EXTRAPOLATION_S = 86_400  # under a day, daily cycles are missing from the month
# Endpoints zeroserve creates for itself: batch transform runs serve on ``batch-<run>``
# (zeroserve.jobs.batch_service). They are left out of reports unless asked for.
INTERNAL_ENDPOINT_PREFIXES = ("batch-",)


def is_internal(endpoint: str) -> bool:
    return endpoint.startswith(INTERNAL_ENDPOINT_PREFIXES)


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    rows: int = 0
    compute_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    cold_starts: int = 0
    peak_concurrency: int = 0
    peak_memory_mb: float = 0.0

    def merge_into(self, row: UsageMinute) -> None:
        row.requests += self.requests
        row.rows += self.rows
        row.compute_s += self.compute_s
        row.bytes_in += self.bytes_in
        row.bytes_out += self.bytes_out
        row.cold_starts += self.cold_starts
        row.peak_concurrency = max(row.peak_concurrency, self.peak_concurrency)
        row.peak_memory_mb = max(row.peak_memory_mb, self.peak_memory_mb)

    def merge(self, other: _Bucket) -> None:
        self.requests += other.requests
        self.rows += other.rows
        self.compute_s += other.compute_s
        self.bytes_in += other.bytes_in
        self.bytes_out += other.bytes_out
        self.cold_starts += other.cold_starts
        self.peak_concurrency = max(self.peak_concurrency, other.peak_concurrency)
        self.peak_memory_mb = max(self.peak_memory_mb, other.peak_memory_mb)


Key = tuple[str, str, int]  # endpoint, variant, minute start


@dataclass(slots=True)
class EndpointUsage:
    """One endpoint's measured usage over a window, variants summed."""

    endpoint: str
    variants: list[str]
    requests: int
    rows: int
    compute_s: float
    bytes_in: int
    bytes_out: int
    cold_starts: int
    peak_concurrency: int
    peak_memory_mb: float
    first_minute: float
    observed_s: float

    def to_profile(self, hours_per_month: float = 730.0, **overrides: Any) -> WorkloadProfile:
        """Extrapolate the window to a month; ``overrides`` set profile fields (SLA, GPU...)."""
        if self.requests <= 0:
            raise NotFound(
                f"no requests were metered for endpoint {self.endpoint!r} in this window; "
                "serve some traffic or use `zeroserve cost estimate` with a profile"
            )
        month_s = hours_per_month * 3600
        fields: dict[str, Any] = {
            "name": self.endpoint,
            "requests_per_month": self.requests * month_s / self.observed_s,
            "duration_s": self.compute_s / self.requests
            if self.compute_s > 0
            else DEFAULT_DURATION_S,
            "memory_mb": math.ceil(self.peak_memory_mb)
            if self.peak_memory_mb
            else DEFAULT_MEMORY_MB,
            "payload_in_bytes": round(self.bytes_in / self.requests),
            "payload_out_bytes": round(self.bytes_out / self.requests),
            "peak_concurrency": max(1, self.peak_concurrency),
            "hours_per_month": hours_per_month,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return WorkloadProfile.model_validate(fields)

    def assumptions(self) -> list[str]:
        """Defaults the profile used where nothing was measured."""
        out = []
        if not self.peak_memory_mb:
            out.append(f"memory: {DEFAULT_MEMORY_MB:,} MB assumed (no replica memory observed)")
        if self.compute_s <= 0:
            out.append(f"duration: {DEFAULT_DURATION_S:g} s assumed (no compute time metered)")
        if self.peak_concurrency <= 0:
            out.append("peak concurrency: 1 assumed (none observed)")
        out.append(
            "vCPU per replica: 1 and replica concurrency: 1 assumed (not metered; "
            "measure them and use `cost estimate` to change them)"
        )
        return out

    def window_warning(self, window: str, hours_per_month: float) -> str | None:
        """A warning when the measured span is too short to stand for a month."""
        if self.observed_s >= MIN_EXTRAPOLATION_S:
            return None
        return (
            f"measured only {self.observed_s / 3600:,.1f} h of traffic (window {window}); "
            f"the month assumes this rate holds for all {hours_per_month:g} h, without the "
            "daily and weekly cycles a day or more of traffic would show"
        )


@dataclass(slots=True)
class MeasuredUsage:
    since: float
    now: float
    endpoints: list[EndpointUsage] = field(default_factory=list)

    @property
    def window_s(self) -> float:
        return self.now - self.since

    def endpoint(self, name: str) -> EndpointUsage:
        for e in self.endpoints:
            if e.endpoint == name:
                return e
        raise NotFound(f"no usage was metered for endpoint {name!r} in this window")


class Meter:
    """Usage per (endpoint, variant, minute), in memory until ``flush``."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[Key, _Bucket] = {}

    def _bucket(self, endpoint: str, variant: str) -> _Bucket:
        # Caller holds the lock.
        key = (endpoint, variant, int(self._clock()) // MINUTE_S * MINUTE_S)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket()
        return bucket

    def record(self, rec: UsageRecord) -> None:
        with self._lock:
            b = self._bucket(rec.endpoint, rec.variant)
            b.requests += rec.requests
            b.rows += rec.rows
            b.compute_s += rec.compute_s
            b.bytes_in += rec.bytes_in
            b.bytes_out += rec.bytes_out
            b.cold_starts += rec.cold_starts

    def observe_concurrency(self, endpoint: str, variant: str, in_flight: int) -> None:
        with self._lock:
            b = self._bucket(endpoint, variant)
            b.peak_concurrency = max(b.peak_concurrency, in_flight)

    def observe_memory(self, endpoint: str, variant: str, rss_mb: float) -> None:
        with self._lock:
            b = self._bucket(endpoint, variant)
            b.peak_memory_mb = max(b.peak_memory_mb, rss_mb)

    def pending(self) -> int:
        with self._lock:
            return len(self._buckets)

    def flush(self, session_factory: sessionmaker[Session], now: float) -> int:
        """Write the buckets as per-minute rows (merging with rows already there).

        ``now`` is accepted for the controller's clock; every bucket is written,
        the current minute included, and later flushes add to the same row. On
        a database error the buckets are kept for the next flush.
        """
        with self._lock:
            pending, self._buckets = self._buckets, {}
        if not pending:
            return 0
        try:
            with session_factory() as session, session.begin():
                for (endpoint, variant, minute), bucket in pending.items():
                    row = session.execute(
                        select(UsageMinute).where(
                            UsageMinute.endpoint == endpoint,
                            UsageMinute.variant == variant,
                            UsageMinute.minute == minute,
                        )
                    ).scalar_one_or_none()
                    if row is None:
                        row = UsageMinute(
                            endpoint=endpoint,
                            variant=variant,
                            minute=minute,
                            requests=0,
                            rows=0,
                            compute_s=0.0,
                            bytes_in=0,
                            bytes_out=0,
                            cold_starts=0,
                            peak_concurrency=0,
                            peak_memory_mb=0.0,
                        )
                        session.add(row)
                    bucket.merge_into(row)
        except Exception:
            with self._lock:
                for key, bucket in pending.items():
                    self._buckets.setdefault(key, _Bucket()).merge(bucket)
            raise
        return len(pending)

    def usage(
        self, session_factory: sessionmaker[Session], endpoint: str | None, since: float, now: float
    ) -> MeasuredUsage:
        """Usage per endpoint from the rollups with ``since <= minute < now``."""
        query = select(UsageMinute).where(UsageMinute.minute >= since, UsageMinute.minute < now)
        if endpoint is not None:
            query = query.where(UsageMinute.endpoint == endpoint)
        with session_factory() as session:
            rows = list(session.execute(query).scalars())
        return summarize(rows, since, now)


def summarize(rows: list[UsageMinute], since: float, now: float) -> MeasuredUsage:
    """Sum rollup rows per endpoint; peak concurrency is the busiest minute, variants added."""
    by_endpoint: dict[str, list[UsageMinute]] = defaultdict(list)
    for row in rows:
        by_endpoint[row.endpoint].append(row)
    out = MeasuredUsage(since=since, now=now)
    for name, items in sorted(by_endpoint.items()):
        per_minute: dict[int, int] = defaultdict(int)
        for r in items:
            per_minute[r.minute] += r.peak_concurrency
        first = min(r.minute for r in items)
        out.endpoints.append(
            EndpointUsage(
                endpoint=name,
                variants=sorted({r.variant for r in items}),
                requests=sum(r.requests for r in items),
                rows=sum(r.rows for r in items),
                compute_s=sum(r.compute_s for r in items),
                bytes_in=sum(r.bytes_in for r in items),
                bytes_out=sum(r.bytes_out for r in items),
                cold_starts=sum(r.cold_starts for r in items),
                peak_concurrency=max(per_minute.values()),
                peak_memory_mb=max(r.peak_memory_mb for r in items),
                first_minute=first,
                # Traffic that started inside the window is extrapolated from its start.
                observed_s=max(now - max(since, first), MINUTE_S),
            )
        )
    return out


_WINDOW_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_window(text: str) -> float:
    """``7d``, ``24h``, ``90m``, ``3600s``, ``2w`` -> seconds."""
    value, unit = text[:-1], text[-1:].lower()
    try:
        seconds = float(value) * _WINDOW_UNITS_S[unit]
    except (KeyError, ValueError):
        raise BadRequest(f"cannot read window {text!r}; write e.g. 7d, 24h, 90m") from None
    if seconds <= 0:
        raise BadRequest(f"window {text!r} must be positive")
    return seconds
