"""Prometheus metrics for the LLM gateway, per logical model and deployment.

Registered on the server's own registry, so ``/metrics`` shows them and secondary
gateway processes' samples merge with the control process's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LLM_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)


class LLMMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        md = ["model", "deployment"]
        self.requests = Counter(
            "zeroserve_llm_requests", "LLM calls answered", [*md, "status"], registry=r
        )
        self.errors = Counter(
            "zeroserve_llm_errors", "Upstream failures by kind", [*md, "kind"], registry=r
        )
        self.latency = Histogram(
            "zeroserve_llm_duration_seconds", "Whole call", md, buckets=LLM_BUCKETS, registry=r
        )
        self.ttft = Histogram(
            "zeroserve_llm_time_to_first_token_seconds",
            "Until the first chunk",
            md,
            buckets=LLM_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "zeroserve_llm_tokens", "Tokens by direction", [*md, "kind"], registry=r
        )
        self.spend = Counter("zeroserve_llm_spend_micros", "Spend in micro-dollars", md, registry=r)
        self.fallbacks = Counter(
            "zeroserve_llm_fallbacks", "Calls moved to another deployment", md, registry=r
        )
        self.retries = Counter("zeroserve_llm_retries", "Extra attempts", md, registry=r)
        self.cache_hits = Counter(
            "zeroserve_llm_cache_hits", "Answers from the cache", ["model"], registry=r
        )
        self.breaker = Gauge(
            "zeroserve_llm_breaker_open", "1 while the deployment's breaker is open", md, registry=r
        )
        self.in_flight = Gauge("zeroserve_llm_in_flight", "Calls in flight", md, registry=r)
