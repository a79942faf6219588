"""Routing across a logical model's deployments: state per deployment, pure policies.

``order`` is a pure function of the deployments' state, the strategy, the clock and a
random draw; the service passes those in, so tests need no sleeps or sockets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Literal

from zeroserve.llm.config import Deployment, Resilience, Strategy
from zeroserve.llm.usage import Rates

BreakerState = Literal["closed", "open", "half_open"]
EXPLORE_P = 0.02
"""Latency routing sends this share to a random deployment, so a slow one that recovers is seen."""


@dataclass(slots=True)
class DeploymentState:
    model: str
    spec: Deployment
    rates: Rates
    ttft_ewma_s: float | None = None
    total_ewma_s: float | None = None
    in_flight: int = 0
    failures: int = 0
    breaker: BreakerState = "closed"
    opened_at: float = 0.0
    trial_in_flight: bool = False
    healthy: bool = True
    metrics: Any = None
    """The deployment's pre-bound Prometheus children (set by the service)."""

    @property
    def name(self) -> str:
        return self.spec.name

    def latency_score(self) -> float:
        if self.ttft_ewma_s is None or self.total_ewma_s is None:
            return 0.0  # unmeasured: try it
        return self.ttft_ewma_s + self.total_ewma_s

    def available(self, now: float, cooldown_s: float) -> bool:
        if not self.healthy and self.breaker != "open":
            return False
        if self.breaker == "closed":
            return self.spec.max_in_flight is None or self.in_flight < self.spec.max_in_flight
        if self.breaker == "open" and now - self.opened_at >= cooldown_s:
            return not self.trial_in_flight
        return self.breaker == "half_open" and not self.trial_in_flight

    def begin(self, now: float, cooldown_s: float) -> None:
        self.in_flight += 1
        if self.breaker == "open" and now - self.opened_at >= cooldown_s:
            self.breaker = "half_open"
        if self.breaker == "half_open":
            self.trial_in_flight = True

    def succeeded(self, ttft_s: float, total_s: float, alpha: float) -> None:
        self.in_flight -= 1
        self.failures = 0
        self.breaker = "closed"
        self.trial_in_flight = False
        self.healthy = True
        self.ttft_ewma_s = (
            ttft_s if self.ttft_ewma_s is None else _ewma(self.ttft_ewma_s, ttft_s, alpha)
        )
        self.total_ewma_s = (
            total_s if self.total_ewma_s is None else _ewma(self.total_ewma_s, total_s, alpha)
        )

    def failed(self, now: float, resilience: Resilience, elapsed_s: float | None = None) -> None:
        self.in_flight -= 1
        self.trial_in_flight = False
        self.failures += 1
        if elapsed_s is not None:  # a timeout is latency too: it pushes traffic away
            self.total_ewma_s = (
                elapsed_s
                if self.total_ewma_s is None
                else _ewma(self.total_ewma_s, elapsed_s, resilience.ewma_alpha)
            )
        if self.breaker == "half_open" or self.failures >= resilience.breaker_failures:
            self.breaker = "open"
            self.opened_at = now

    def released(self) -> None:
        """The call ended for a reason that says nothing about the deployment."""
        self.in_flight -= 1
        self.trial_in_flight = False


def order(
    states: list[DeploymentState],
    strategy: Strategy,
    now: float,
    cooldown_s: float,
    draw: float,
) -> list[DeploymentState]:
    """The deployments to try, best first; open breakers are left out unless all are open."""
    live = [s for s in states if s.available(now, cooldown_s)]
    if len(live) < 2:
        return live
    if strategy == "weighted":
        return _weighted(live, draw)
    if strategy == "latency":
        ranked = sorted(live, key=DeploymentState.latency_score)
        if len(ranked) > 1 and draw < EXPLORE_P:
            pick = int(draw / EXPLORE_P * len(ranked)) % len(ranked)
            ranked.insert(0, ranked.pop(pick))
        return ranked
    if strategy == "cost":
        return sorted(live, key=lambda s: (s.rates.input + s.rates.output, s.latency_score()))
    # least busy: in-flight per unit of weight
    return sorted(live, key=lambda s: (s.in_flight / (s.spec.weight or 1e-9), -s.spec.weight))


def _weighted(live: list[DeploymentState], draw: float) -> list[DeploymentState]:
    total = sum(s.spec.weight for s in live)
    if total <= 0:
        return live
    point = draw * total
    for i, s in enumerate(live):
        point -= s.spec.weight
        if point < 0:
            rest = live[:i] + live[i + 1 :]
            return [s, *sorted(rest, key=lambda r: -r.spec.weight)]
    return live


def backoff_s(
    attempt: int, resilience: Resilience, retry_after_s: float | None, rng: random.Random
) -> float:
    """Exponential backoff with jitter; an upstream's Retry-After wins when it asks for longer."""
    base = min(resilience.backoff_max_s, resilience.backoff_base_s * float(2**attempt))
    delay = base * (0.5 + rng.random() / 2)
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, resilience.backoff_max_s))
    return float(delay)


def _ewma(old: float, new: float, alpha: float) -> float:
    return old + alpha * (new - old)
