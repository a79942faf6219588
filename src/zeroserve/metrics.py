"""Prometheus metrics, on a registry of our own so tests can build many servers.

Hot-path code gets pre-bound children (``VariantMetrics``) so a request pays
for an observation, not for a label lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)


class Metrics:
    def __init__(self) -> None:
        from prometheus_client import disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        self.peer_samples: dict[int, list[SampleRow]] = {}
        """The secondary gateway processes' latest samples, by process."""
        r = self.registry
        self.requests = Counter(
            "zeroserve_requests",
            "Requests answered, by status code",
            ["endpoint", "variant", "code"],
            registry=r,
        )
        self.errors = Counter(
            "zeroserve_request_errors",
            "Requests answered with an error, by status and cause (the error code)",
            ["endpoint", "variant", "code", "cause"],
            registry=r,
        )
        self.latency = Histogram(
            "zeroserve_request_duration_seconds",
            "Time from request received to response sent, failures included",
            ["endpoint", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_dropped = Counter(
            "zeroserve_shadow_dropped",
            "Shadow copies not sent because too many were in flight",
            ["endpoint", "variant"],
            registry=r,
        )
        self.batch_rows = Histogram(
            "zeroserve_batch_size_rows",
            "Rows per batch sent to a replica",
            ["endpoint", "variant"],
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.compute = Histogram(
            "zeroserve_batch_compute_seconds",
            "Model time per batch",
            ["endpoint", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.replicas = Gauge(
            "zeroserve_replicas", "Live replicas", ["endpoint", "variant"], registry=r
        )
        self.target_replicas = Gauge(
            "zeroserve_target_replicas",
            "Replicas the autoscaler wants",
            ["endpoint", "variant"],
            registry=r,
        )
        self.queue_depth = Gauge(
            "zeroserve_queue_depth",
            "Requests waiting for a replica",
            ["endpoint", "variant"],
            registry=r,
        )
        self.in_flight = Gauge(
            "zeroserve_in_flight",
            "Requests queued or being predicted",
            ["endpoint", "variant"],
            registry=r,
        )
        self.cold_starts = Counter(
            "zeroserve_cold_starts",
            "Requests that waited for a replica to start",
            ["endpoint", "variant"],
            registry=r,
        )
        self.cold_start_latency = Histogram(
            "zeroserve_cold_start_seconds",
            "Time to start a replica from its zygote",
            ["endpoint", "variant"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.crashes = Counter(
            "zeroserve_replica_crashes",
            "Replicas that died while serving",
            ["endpoint", "variant", "reason"],
            registry=r,
        )
        self.scale_events = Counter(
            "zeroserve_scale_events",
            "Replica count changes",
            ["endpoint", "variant", "direction"],
            registry=r,
        )
        self.replica_memory = Gauge(
            "zeroserve_replica_memory_mb",
            "Proportional memory of the largest replica",
            ["endpoint", "variant"],
            registry=r,
        )

        self.jobs_queued = Gauge(
            "zeroserve_jobs_queued", "Async jobs waiting in the queue", ["endpoint"], registry=r
        )
        self.jobs_done = Counter(
            "zeroserve_jobs_finished",
            "Async jobs by final status",
            ["endpoint", "status"],
            registry=r,
        )
        self.job_latency = Histogram(
            "zeroserve_job_duration_seconds",
            "From accepted to result stored",
            ["endpoint"],
            buckets=(*LATENCY_BUCKETS, 60.0, 300.0, 1800.0),
            registry=r,
        )
        self.job_retries = Counter(
            "zeroserve_job_retries",
            "Async job attempts that failed and will be retried",
            ["endpoint"],
            registry=r,
        )
        self.dead_letters = Gauge(
            "zeroserve_jobs_dead", "Jobs in the dead-letter queue", registry=r
        )

    def for_variant(self, endpoint: str, variant: str) -> VariantMetrics:
        return VariantMetrics(
            ok=self.requests.labels(endpoint, variant, "200"),
            latency=self.latency.labels(endpoint, variant),
            batch_rows=self.batch_rows.labels(endpoint, variant),
            compute=self.compute.labels(endpoint, variant),
            replicas=self.replicas.labels(endpoint, variant),
            target_replicas=self.target_replicas.labels(endpoint, variant),
            queue_depth=self.queue_depth.labels(endpoint, variant),
            in_flight=self.in_flight.labels(endpoint, variant),
            cold_starts=self.cold_starts.labels(endpoint, variant),
            cold_start_latency=self.cold_start_latency.labels(endpoint, variant),
            scale_up=self.scale_events.labels(endpoint, variant, "up"),
            scale_down=self.scale_events.labels(endpoint, variant, "down"),
            memory=self.replica_memory.labels(endpoint, variant),
        )

    def crash(self, endpoint: str, variant: str, reason: str) -> None:
        self.crashes.labels(endpoint, variant, reason).inc()

    def samples(self) -> list[SampleRow]:
        """Every sample as plain values, to send to the control process."""
        return [
            (f.name, f.type, f.documentation, sample.name, sample.labels, sample.value)
            for f in self.registry.collect()
            for sample in f.samples
        ]

    def render(self) -> bytes:
        """The exposition text: this process's metrics plus the secondary gateways' (summed)."""
        if not self.peer_samples:
            return generate_latest(self.registry)
        merged = CollectorRegistry(auto_describe=False)
        merged.register(_Merged([self.samples(), *self.peer_samples.values()]))
        return generate_latest(merged)


SampleRow = tuple[str, str, str, str, dict[str, str], float]


class _Merged(Collector):
    """Families from several processes, with the values of identical series added."""

    def __init__(self, sources: list[list[SampleRow]]) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for rows in self.sources:
            for family, kind, doc, name, labels, value in rows:
                if family not in families:
                    families[family] = Metric(family, doc, kind)
                    values[family] = {}
                key = (name, tuple(labels.items()))
                series = values[family]
                series[key] = series.get(key, 0.0) + value
        for family, metric in families.items():
            for (name, pairs), value in values[family].items():
                metric.add_sample(name, dict(pairs), value)
            yield metric


@dataclass(slots=True)
class VariantMetrics:
    ok: Counter
    latency: Histogram
    batch_rows: Histogram
    compute: Histogram
    replicas: Gauge
    target_replicas: Gauge
    queue_depth: Gauge
    in_flight: Gauge
    cold_starts: Counter
    cold_start_latency: Histogram
    scale_up: Counter
    scale_down: Counter
    memory: Gauge
