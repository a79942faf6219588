"""Outcome windows: counts, causes and quantiles, and slots that add up across processes."""

from __future__ import annotations

import itertools

import orjson

from zeroserve.outcomes import LATENCY_BOUNDS_S, Outcomes

NOW = 1_000_000.0


def test_windows_count_statuses_causes_and_quantiles() -> None:
    outcomes = Outcomes()
    series = outcomes.for_variant("fraud", "v1")
    for i in range(95):
        series.record(200, None, 0.002, NOW - 30 + i * 0.1)  # the last 30 s
    for _ in range(3):
        series.record(200, None, 0.5, NOW - 1)
    series.record(503, "replica_crashed", 0.5, NOW)
    series.record(422, "invalid_input", 0.001, NOW)
    series.record(200, None, 0.002, NOW - 200)  # only in the 5-minute window
    (stats,) = outcomes.stats("fraud", now=NOW)
    one_minute = stats.windows["1m"]
    assert one_minute.requests == 100
    assert (one_minute.errors, one_minute.client_errors) == (1, 1)
    assert one_minute.error_rate == 0.01
    assert one_minute.by_cause == {"invalid_input": 1, "replica_crashed": 1}
    assert one_minute.by_status == {"200": 98, "422": 1, "503": 1}  # failures timed too
    assert 2.0 <= one_minute.p50_ms <= 2.0 * 1.15  # type: ignore[operator]
    assert 500.0 <= one_minute.p99_ms <= 500.0 * 1.15  # type: ignore[operator]
    assert stats.windows["5m"].requests == 101
    assert stats.windows["10s"].requests < 100


def test_slots_from_another_process_add_up_exactly_after_the_json_trip() -> None:
    secondary, control = Outcomes(shared=True), Outcomes()
    for latency in (0.001, 0.004, 0.2):
        secondary.for_variant("fraud", "canary").record(200, None, latency, NOW)
        control.for_variant("fraud", "canary").record(200, None, latency, NOW)
    secondary.for_variant("fraud", "canary").record(500, "model_error", 0.01, NOW)
    control.merge(orjson.loads(orjson.dumps(secondary.drain())))
    assert secondary.drain() == []  # each slot is sent once
    secondary.for_variant("fraud", "canary").record(200, None, 0.001, NOW)  # after a drain
    control.merge(orjson.loads(orjson.dumps(secondary.drain())))
    window = control.stats("fraud", now=NOW)[0].windows["10s"]
    assert window.requests == 8 and window.errors == 1
    assert window.by_cause == {"model_error": 1}
    assert window.p99_ms is not None and window.p99_ms >= 200.0


def test_buckets_are_fifteen_percent_wide_and_cover_three_minutes() -> None:
    ratios = {round(b / a, 6) for a, b in itertools.pairwise(LATENCY_BOUNDS_S)}
    assert ratios == {1.15}
    assert LATENCY_BOUNDS_S[0] == 50e-6 and LATENCY_BOUNDS_S[-1] > 200
