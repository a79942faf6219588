"""The autoscaling policy: a pure function of what a pool looks like now.

Demand has two measures, and the larger wins: requests in flight (plus queued
async jobs) over ``target_concurrency``, and the replicas' busy fraction over
``target_utilization``. The first reacts to queues, the second to how much a
batching replica really works: 32 requests in flight may be one cheap batch.
Scale up at once to the demand; scale down only after the
demand has stayed lower for ``scale_down_delay_s`` (the target is the peak
demand of that window, so a bursty load does not flap); scale to zero (or to
the provisioned floor) after ``idle_timeout_s`` without a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from zeroserve.types import ScalingSpec


@dataclass(frozen=True, slots=True)
class AutoscalerState:
    """What the policy remembers between ticks."""

    samples: tuple[tuple[float, int], ...] = ()
    """(time, demand) over the last scale_down_delay_s."""
    since: float | None = None
    """When the policy first saw this pool; no scale-down before a full window."""


@dataclass(frozen=True, slots=True)
class AutoscalingContext:
    now: float
    config: ScalingSpec
    current_replicas: int
    in_flight: int
    last_request_at: float
    state: AutoscalerState = field(default_factory=AutoscalerState)
    queued_jobs: int = 0
    """Async work waiting in the durable queue; it counts as demand."""
    utilization: float = 0.0
    """Mean busy fraction of the current replicas since the last call."""
    target_concurrency: float = 4.0
    """In-flight requests one replica should carry (the controller resolves defaults)."""


def demand(ctx: AutoscalingContext) -> int:
    """Replicas needed for the work in flight, or for the measured busy time."""
    work = ctx.in_flight + ctx.queued_jobs
    by_work = math.ceil(work / ctx.target_concurrency) if work else 0
    # Replicas that would carry today's busy time at the target utilization.
    busy = ctx.current_replicas * ctx.utilization / ctx.config.target_utilization
    by_busy = math.ceil(busy - 1e-9) if busy > 0 else 0
    return max(by_work, by_busy)


def desired_replicas(ctx: AutoscalingContext) -> tuple[int, AutoscalerState]:
    """The replica count to aim for, and the state to pass to the next call."""
    cfg = ctx.config
    floor = max(cfg.min_replicas, cfg.provisioned)
    now_demand = demand(ctx)
    window = cfg.scale_down_delay_s
    kept = tuple(s for s in ctx.state.samples if ctx.now - s[0] <= window)
    since = ctx.state.since if ctx.state.since is not None else ctx.now
    state = AutoscalerState((*kept, (ctx.now, now_demand)), since)
    busy = now_demand > 0

    if now_demand > ctx.current_replicas:
        target = now_demand  # queued demand: up at once
    elif not busy and ctx.now - ctx.last_request_at >= cfg.idle_timeout_s:
        target = floor  # idle: to zero, or to the provisioned floor
    elif ctx.now - since < window:
        target = ctx.current_replicas  # not enough history to scale down yet
    else:
        peak = max(d for _, d in state.samples)
        # Traffic within the idle timeout keeps one replica warm.
        target = min(ctx.current_replicas, max(peak, 1 if ctx.current_replicas else 0))
    return max(floor, min(cfg.max_replicas, target)), state
