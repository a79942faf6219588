"""Per-variant outcomes: what happened to every request, counted in windows.

Every request ends in one outcome (variant, status, cause, latency). Each
gateway process counts them per endpoint and variant in one-second slots
(requests, statuses, causes and a latency histogram with ~7% wide buckets), so
the last 10 s, 1 min and 5 min can be read at any time, and slots from several
processes add up exactly (secondaries send theirs to the control process).
Rollouts, the dashboard and ``GET /api/endpoints/{name}/stats`` read this;
nothing else counts requests.
"""

from __future__ import annotations

import bisect
import math
import time
from dataclasses import dataclass, field
from typing import Any

from zeroserve.types import VariantStats, WindowStats

WINDOWS_S = {"10s": 10, "1m": 60, "5m": 300}
KEEP_S = 300
LATENCY_BOUNDS_S = [50e-6 * 1.15**i for i in range(110)]
"""Upper bounds of the latency buckets: 50 us to about 200 s, each 15% wider."""

SlotRow = list[Any]
"""One slot on the wire: [second, requests, {status: n}, {cause: n}, {bucket: n}]."""


@dataclass(slots=True)
class _Slot:
    second: int
    requests: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    causes: dict[str, int] = field(default_factory=dict)
    latency: dict[int, int] = field(default_factory=dict)

    def add(self, status: int, cause: str | None, bucket: int) -> None:
        self.requests += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1
        if cause is not None:
            self.causes[cause] = self.causes.get(cause, 0) + 1
        self.latency[bucket] = self.latency.get(bucket, 0) + 1

    def merge(self, row: SlotRow) -> None:
        _, requests, statuses, causes, latency = row
        self.requests += int(requests)
        _add(self.statuses, statuses, int)
        _add(self.causes, causes, str)
        _add(self.latency, latency, int)

    def row(self) -> SlotRow:
        """JSON-ready: the wire between processes has string keys only."""
        return [
            self.second,
            self.requests,
            {str(k): n for k, n in self.statuses.items()},
            self.causes,
            {str(k): n for k, n in self.latency.items()},
        ]


def _add(into: dict[Any, int], counts: dict[Any, Any], key: Any) -> None:
    """Add ``counts`` into ``into``, keys converted by ``key`` (JSON makes them strings)."""
    for raw, n in counts.items():
        k = key(raw)
        into[k] = into.get(k, 0) + int(n)


class OutcomeSeries:
    """The outcomes of one variant (or shadow) of one endpoint, in one-second slots."""

    def __init__(self, shared: bool = False) -> None:
        self.slots: dict[int, _Slot] = {}
        self._unsent: dict[int, _Slot] = {}
        self._targets = (self.slots, self._unsent) if shared else (self.slots,)

    def record(self, status: int, cause: str | None, latency_s: float, now: float) -> None:
        second = int(now)
        bucket = bisect.bisect_left(LATENCY_BOUNDS_S, latency_s)
        for slots in self._targets:
            slot = slots.get(second)
            if slot is None:
                slot = slots[second] = _Slot(second)
            slot.add(status, cause, bucket)
        if len(self.slots) > KEEP_S + 5:
            self._forget(second)

    def merge(self, rows: list[SlotRow]) -> None:
        """Add slots counted by another process."""
        for row in rows:
            second = int(row[0])
            slot = self.slots.get(second)
            if slot is None:
                slot = self.slots[second] = _Slot(second)
            slot.merge(row)
        if rows:
            self._forget(max(self.slots))

    def drain(self) -> list[SlotRow]:
        """Slots counted here since the last call (what a secondary sends)."""
        rows = [slot.row() for slot in self._unsent.values()]
        self._unsent.clear()  # in place: ``_targets`` holds this dict
        return rows

    def _forget(self, now: int) -> None:
        oldest = now - KEEP_S
        for second in [s for s in self.slots if s < oldest]:
            del self.slots[second]

    def window(self, seconds: int, now: float) -> WindowStats:
        # The current second is partial: windows end with it and span ``seconds`` slots.
        last = int(now)
        slots = [s for s in self.slots.values() if last - seconds < s.second <= last]
        requests = sum(s.requests for s in slots)
        statuses: dict[int, int] = {}
        causes: dict[str, int] = {}
        latency: dict[int, int] = {}
        for s in slots:
            _add(statuses, s.statuses, int)
            _add(causes, s.causes, str)
            _add(latency, s.latency, int)
        errors = sum(n for k, n in statuses.items() if k >= 500)
        client_errors = sum(n for k, n in statuses.items() if 400 <= k < 500)
        return WindowStats(
            window_s=seconds,
            requests=requests,
            errors=errors,
            client_errors=client_errors,
            error_rate=errors / requests if requests else 0.0,
            requests_per_s=requests / seconds,
            p50_ms=_quantile_ms(latency, requests, 0.50),
            p99_ms=_quantile_ms(latency, requests, 0.99),
            by_status={str(k): n for k, n in sorted(statuses.items())},
            by_cause=dict(sorted(causes.items())),
        )


def _quantile_ms(latency: dict[int, int], total: int, q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile (at most 15% above the truth)."""
    if not total:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bucket in sorted(latency):
        seen += latency[bucket]
        if seen >= rank:
            bound = LATENCY_BOUNDS_S[min(bucket, len(LATENCY_BOUNDS_S) - 1)]
            return round(bound * 1000.0, 3)
    return None


class Outcomes:
    """Every endpoint's and variant's outcomes in this process (merged ones included).

    ``shared``: this process sends its slots to another (a secondary gateway).
    """

    def __init__(self, shared: bool = False) -> None:
        self.shared = shared
        self.series: dict[tuple[str, str], OutcomeSeries] = {}
        self.roles: dict[tuple[str, str], str] = {}

    def for_variant(self, endpoint: str, variant: str, role: str = "primary") -> OutcomeSeries:
        key = (endpoint, variant)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = OutcomeSeries(self.shared)
        self.roles[key] = role
        return series

    def drain(self) -> list[list[Any]]:
        return [
            [endpoint, variant, self.roles.get((endpoint, variant), "primary"), rows]
            for (endpoint, variant), series in self.series.items()
            if (rows := series.drain())
        ]

    def merge(self, entries: list[list[Any]]) -> None:
        for endpoint, variant, role, rows in entries:
            self.for_variant(str(endpoint), str(variant), str(role)).merge(rows)

    def forget(self, endpoint: str) -> None:
        for key in [k for k in self.series if k[0] == endpoint]:
            del self.series[key]
            self.roles.pop(key, None)

    def stats(self, endpoint: str, now: float | None = None) -> list[VariantStats]:
        now = time.time() if now is None else now
        return [
            VariantStats(
                endpoint=endpoint,
                variant=variant,
                role=self.roles.get((e, variant), "primary"),
                windows={name: series.window(s, now) for name, s in WINDOWS_S.items()},
            )
            for (e, variant), series in sorted(
                self.series.items(), key=lambda kv: (self.roles.get(kv[0]) != "primary", kv[0])
            )
            if e == endpoint
        ]
