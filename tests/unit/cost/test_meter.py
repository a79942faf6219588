from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from zeroserve.cost.meter import Meter, parse_window
from zeroserve.db import create_all, make_engine, session_factory
from zeroserve.errors import BadRequest, NotFound
from zeroserve.types import UsageRecord

T0 = 1_800_000_000.0  # a minute boundary (divisible by 60)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sessions(tmp_path: Path) -> sessionmaker[Session]:
    engine = make_engine(f"sqlite:///{tmp_path}/zeroserve.db")
    create_all(engine)
    return session_factory(engine)


def rec(
    requests: int = 1, compute_s: float = 0.1, cold: bool = False, variant: str = "blue"
) -> UsageRecord:
    return UsageRecord(
        endpoint="fraud",
        variant=variant,
        requests=requests,
        rows=requests,
        compute_s=compute_s,
        bytes_in=1000 * requests,
        bytes_out=200 * requests,
        cold_starts=int(cold),
    )


def test_flush_and_usage_round_trip(sessions: sessionmaker[Session]) -> None:
    clock = Clock()
    meter = Meter(clock)
    meter.record(rec(10, 1.0, cold=True))
    meter.observe_concurrency("fraud", "blue", 3)
    meter.observe_memory("fraud", "blue", 700.4)
    meter.record(rec(5, 0.5, variant="green"))
    meter.observe_concurrency("fraud", "green", 2)
    assert meter.flush(sessions, clock.now) == 2 and meter.pending() == 0
    # Same minute again: merged into the existing row, peaks kept as maxima.
    clock.now += 30
    meter.record(rec(5, 0.5))
    meter.observe_concurrency("fraud", "blue", 1)
    assert meter.flush(sessions, clock.now) == 1
    clock.now += 60  # next minute
    meter.record(rec(20, 2.0))
    meter.observe_memory("fraud", "blue", 650.0)
    meter.flush(sessions, clock.now)
    assert meter.flush(sessions, clock.now) == 0

    usage = meter.usage(sessions, "fraud", T0 - 3600, T0 + 3600)
    (u,) = usage.endpoints
    assert (u.requests, u.rows, u.cold_starts) == (40, 40, 1)
    assert u.compute_s == pytest.approx(4.0)
    assert (u.bytes_in, u.bytes_out) == (40_000, 8_000)
    assert u.variants == ["blue", "green"]
    assert u.peak_concurrency == 5  # blue 3 + green 2 in the first minute
    assert u.peak_memory_mb == pytest.approx(700.4)
    # Traffic began at T0, inside the window: observed for 3600 s, not 7200.
    assert u.observed_s == 3600
    assert meter.usage(sessions, "other", T0 - 3600, T0 + 3600).endpoints == []
    # A window that ends before the traffic sees nothing.
    assert meter.usage(sessions, None, T0 - 7200, T0 - 3600).endpoints == []


def test_extrapolates_to_a_month(sessions: sessionmaker[Session]) -> None:
    clock = Clock()
    meter = Meter(clock)
    meter.record(rec(60, 6.0))
    meter.observe_concurrency("fraud", "blue", 2)
    meter.flush(sessions, clock.now)
    (u,) = meter.usage(sessions, None, T0 - 86400, T0 + 3600).endpoints
    p = u.to_profile(730.0, latency_sla_p95_s=2.0)
    # 60 requests in 3600 s -> 60 x 730 = 43,800 a month; 6 s / 60 = 0.1 s each
    assert p.requests_per_month == pytest.approx(43_800)
    assert p.duration_s == pytest.approx(0.1)
    assert (p.payload_in_bytes, p.payload_out_bytes, p.peak_concurrency) == (1000, 200, 2)
    assert p.memory_mb == 1024 and p.latency_sla_p95_s == 2.0 and p.name == "fraud"


def test_failed_flush_keeps_the_buckets() -> None:
    meter = Meter(Clock())
    meter.record(rec(3))

    def broken() -> Any:
        raise RuntimeError("database is locked")

    with pytest.raises(RuntimeError):
        meter.flush(broken, T0)  # type: ignore[arg-type]
    assert meter.pending() == 1


def test_no_traffic_is_a_clear_error(sessions: sessionmaker[Session]) -> None:
    meter = Meter(Clock())
    with pytest.raises(NotFound, match="no usage was metered for endpoint 'fraud'"):
        meter.usage(sessions, "fraud", T0 - 60, T0).endpoint("fraud")


def test_parse_window() -> None:
    assert parse_window("7d") == 7 * 86400 and parse_window("90m") == 5400
    with pytest.raises(BadRequest):
        parse_window("week")
