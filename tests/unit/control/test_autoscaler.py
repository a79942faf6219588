"""The autoscaler fed recorded load curves with an injected clock."""

import itertools

from zeroserve.control.autoscaler import AutoscalerState, AutoscalingContext, desired_replicas
from zeroserve.types import ScalingSpec


def simulate(
    curve: list[int],
    cfg: ScalingSpec,
    start: int = 0,
    dt: float = 0.25,
    busy: list[float] | None = None,
) -> list[int]:
    """Feed in-flight counts (and replica busy fractions) tick by tick, as the controller
    would; return the replica trace."""
    replicas, state, last_request = start, AutoscalerState(), 0.0
    trace = []
    for i, in_flight in enumerate(curve):
        now = i * dt
        if in_flight:
            last_request = now
        ctx = AutoscalingContext(
            now=now,
            config=cfg,
            current_replicas=replicas,
            in_flight=in_flight,
            last_request_at=last_request,
            state=state,
            utilization=busy[i] if busy else 0.0,
            target_concurrency=cfg.target_concurrency or 4.0,
        )
        replicas, state = desired_replicas(ctx)
        trace.append(replicas)
    return trace


def changes(trace: list[int]) -> int:
    return sum(1 for a, b in itertools.pairwise(trace) if a != b)


CFG = ScalingSpec(
    min_replicas=0, max_replicas=8, target_concurrency=4, idle_timeout_s=5, scale_down_delay_s=3
)


def test_scales_up_at_once_on_queued_demand() -> None:
    trace = simulate([0, 30, 30], CFG)
    assert trace[1] == 8  # ceil(30 / 4) = 8, capped at max
    assert simulate([0, 9], CFG)[1] == 3


def test_sustained_load_reaches_target_without_oscillating() -> None:
    # A noisy sustained load around 14 requests in flight: ramp, 60 s plateau.
    noise = [12, 16, 13, 15, 14, 11, 16, 14]
    curve = [2, 5, 9] + [noise[i % len(noise)] for i in range(240)]
    trace = simulate(curve, CFG)
    plateau = trace[10:]
    assert max(plateau) == 4  # ceil(16 / 4)
    assert min(plateau) >= 3
    # Scale-down needs the whole window to be lower, so the noise never flaps it.
    assert changes(plateau) == 0


def test_bursty_load_does_not_flap() -> None:
    # Bursts of 20 every 2 s, quiet in between; the window (3 s) always holds a burst.
    curve = [20 if i % 8 == 0 else 0 for i in range(200)]
    trace = simulate(curve, CFG)
    assert changes(trace[8:]) == 0
    assert trace[-1] == 5


def test_shrinks_after_load_and_goes_to_zero_after_idle_timeout() -> None:
    curve = [20] * 40 + [4] * 40 + [0] * 40
    trace = simulate(curve, CFG)
    assert trace[39] == 5
    assert trace[40 + 11] == 5  # held for the scale-down window (3 s = 12 ticks)
    assert trace[79] == 1  # then down to what 4 in flight need
    assert trace[80 + 18] == 1  # idle, but not yet for 5 s
    assert trace[-1] == 0  # idle timeout passed: scale to zero
    assert changes(trace) == 2  # 5 -> 1 -> 0, nothing else


def test_provisioned_and_min_replicas_are_floors() -> None:
    cfg = ScalingSpec(
        min_replicas=0, provisioned=2, max_replicas=4, idle_timeout_s=1, scale_down_delay_s=1
    )
    trace = simulate([0] * 20 + [16] * 4 + [0] * 40, cfg)
    assert trace[0] == 2
    assert max(trace) == 4
    assert trace[-1] == 2
    realtime = ScalingSpec(min_replicas=1, max_replicas=3, idle_timeout_s=1, scale_down_delay_s=1)
    assert simulate([0] * 40, realtime)[-1] == 1


def test_queued_jobs_wake_an_endpoint_at_zero() -> None:
    ctx = AutoscalingContext(
        now=100.0,
        config=CFG,
        current_replicas=0,
        in_flight=0,
        last_request_at=0.0,
        queued_jobs=10,
        target_concurrency=4,
    )
    target, _ = desired_replicas(ctx)
    assert target == 3


BATCHING = ScalingSpec(min_replicas=1, max_replicas=4, idle_timeout_s=60, scale_down_delay_s=2)


def test_many_cheap_requests_in_flight_do_not_add_replicas() -> None:
    # 32 requests in flight on a batching replica (target 32) that is busy 25% of the time.
    trace = simulate(
        [32] * 80, BATCHING.model_copy(update={"target_concurrency": 32}), start=1, busy=[0.25] * 80
    )
    assert set(trace) == {1}


def test_busy_replicas_grow_until_below_the_target_utilization() -> None:
    # A saturated replica: busy 100% while there is one, spread thinner as replicas are added.
    cfg = BATCHING.model_copy(update={"target_concurrency": 1000})
    replicas, state, trace = 1, AutoscalerState(), []
    for i in range(20):
        work = 2.4  # replicas' worth of busy time the load needs
        ctx = AutoscalingContext(
            now=i * 0.25,
            config=cfg,
            current_replicas=replicas,
            in_flight=50,
            last_request_at=i * 0.25,
            state=state,
            utilization=min(1.0, work / replicas),
            target_concurrency=1000,
        )
        replicas, state = desired_replicas(ctx)
        trace.append(replicas)
    assert trace[:3] == [2, 3, 4]  # 1 busy 100% -> 2; 2 busy 100% -> 3; 3 busy 80% -> 4
    assert trace[-1] == 4  # 4 at 60% is below 70%: held there without flapping
    assert len(set(trace[3:])) == 1
