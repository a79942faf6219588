"""Metrics from several gateway processes, merged into one exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from zeroserve.metrics import Metrics

REQUESTS = "zeroserve_requests_total"
FRAUD = (("endpoint", "fraud"), ("variant", "primary"))


def values(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text.decode())
        for s in family.samples
    }


def test_samples_of_every_process_are_added_series_by_series() -> None:
    control, secondary = Metrics(), Metrics()
    for metrics, latencies in ((control, [0.001, 0.003]), (secondary, [0.004, 0.2, 0.0007])):
        variant = metrics.for_variant("fraud", "primary")
        for latency in latencies:
            variant.ok.inc()
            variant.latency.observe(latency)
    secondary.requests.labels("fraud", "primary", "422").inc(2)  # only the secondary saw these
    control.peer_samples[1] = secondary.samples()

    merged = values(control.render())
    ok = (REQUESTS, (("code", "200"), *FRAUD))
    bad = (REQUESTS, (("code", "422"), *FRAUD))
    assert merged[ok] == 5
    assert merged[bad] == 2
    count = ("zeroserve_request_duration_seconds_count", FRAUD)
    assert merged[count] == 5
    le_5ms = ("zeroserve_request_duration_seconds_bucket", (*FRAUD[:1], ("le", "0.005"), FRAUD[1]))
    assert merged[le_5ms] == 4  # 0.001, 0.003, 0.004, 0.0007
    total = ("zeroserve_request_duration_seconds_sum", FRAUD)
    assert abs(merged[total] - 0.2087) < 1e-9


def test_one_process_renders_its_own_registry_unchanged() -> None:
    metrics = Metrics()
    metrics.for_variant("fraud", "primary").ok.inc(3)
    ok = (REQUESTS, (("code", "200"), *FRAUD))
    assert values(metrics.render())[ok] == 3
