"""The canary decision over simulated traffic (seeded traces, replayed through
``decide``): A/A rollouts rarely roll back; broken, slow and skewed canaries do,
naming the guard; low traffic holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from zeroserve.control.rollout import (
    ArmStats,
    RolloutContext,
    RolloutPlan,
    TraceTick,
    Verdict,
    decide,
    look_index,
    replay,
)


@dataclass
class SimModel:
    error_rate: float = 0.01
    latency_ms: float = 2.0
    latency_sigma: float = 0.35
    score_shift: float = 0.0
    with_scores: bool = True
    positive_rate: float | None = None


def arm_tick(model: SimModel, n: int, rng: np.random.Generator) -> ArmStats:
    arm = ArmStats()
    if n == 0:
        return arm
    errors = int(rng.binomial(n, model.error_rate))
    latencies = model.latency_ms * rng.lognormal(0.0, model.latency_sigma, n)
    scores = np.clip(rng.beta(2, 5, n) + model.score_shift, 0, 1)
    if model.positive_rate is None:
        labels = (scores > 0.5).astype(np.int64)
    else:
        labels = (rng.random(n) < model.positive_rate).astype(np.int64)
    arm.observe(
        errors=errors,
        latencies_ms=latencies,
        scores=scores if model.with_scores else None,
        labels=labels,
    )
    return arm


def trace(
    plan: RolloutPlan,
    baseline: SimModel,
    canary: SimModel,
    *,
    seed: int,
    rps: float = 200.0,
    tick_s: float = 0.5,
    duration_s: float = 400.0,
    verdicts: list[Verdict] | None = None,
) -> list[TraceTick]:
    """Record a rollout's traffic: the canary's share follows the plan's steps as
    the replayed decisions move it (so the trace is generated alongside replay)."""
    rng = np.random.default_rng(seed)
    ticks: list[TraceTick] = []
    ctx = RolloutContext(plan, 0, 0.0, 0.0, ArmStats(), ArmStats())
    t = 0.0
    while t < duration_s:
        t += tick_s
        n = int(rng.poisson(rps * tick_s))
        n_c = int(rng.binomial(n, plan.steps[ctx.step] / 100))
        tick = TraceTick(t, arm_tick(baseline, n - n_c, rng), arm_tick(canary, n_c, rng))
        ticks.append(tick)
        ctx.baseline.merge(tick.baseline)
        ctx.canary.merge(tick.canary)
        verdict = decide(
            RolloutContext(
                plan, ctx.step, ctx.step_started_at, t, ctx.baseline, ctx.canary, ctx.looks
            )
        )
        if verdicts is not None:
            verdicts.append(verdict)
        if verdict.action in ("rollback", "promote"):
            break
        moved = verdict.step != ctx.step
        ctx = RolloutContext(
            plan,
            verdict.step,
            t if moved else ctx.step_started_at,
            t,
            ctx.baseline,
            ctx.canary,
            verdict.looks,
        )
    return ticks


PLAN = RolloutPlan(steps=(5, 25, 50, 100), bake_s=20)


def test_two_hundred_aa_rollouts_roll_back_at_most_twice() -> None:
    plan = RolloutPlan(steps=(5, 25, 50, 100), bake_s=10)
    outcomes = []
    for seed in range(200):
        verdicts: list[Verdict] = []  # decided while the trace is generated (replay is the same)
        trace(plan, SimModel(), SimModel(), seed=seed, rps=100, tick_s=1.0, verdicts=verdicts)
        outcomes.append(verdicts[-1].action)
    assert outcomes.count("rollback") <= 2
    assert outcomes.count("promote") >= 198


def test_identical_canary_is_promoted_after_every_step() -> None:
    verdicts = replay(PLAN, trace(PLAN, SimModel(), SimModel(), seed=1), 0.0)
    assert verdicts[-1].action == "promote"
    assert [v.canary_weight for v in verdicts if v.action == "advance"] == [25, 50]
    assert verdicts[-1].canary_weight == 100
    # Bakes are respected: three steps of 20 s before the promotion.
    ticks = trace(PLAN, SimModel(), SimModel(), seed=1)
    assert ticks[len(verdicts) - 1].at >= 3 * 20


def test_canary_failing_30_percent_is_rolled_back_quickly() -> None:
    broken = SimModel(error_rate=0.30)
    ticks = trace(PLAN, SimModel(), broken, seed=2)
    verdicts = replay(PLAN, ticks, 0.0)
    last = verdicts[-1]
    assert last.action == "rollback"
    assert last.fired == "error_rate"
    assert last.canary_weight == 0
    assert "error rate" in last.reason
    canary_requests = sum(t.canary.requests for t in ticks[: len(verdicts)])
    # At 5% of 200 req/s the canary gets ~10 req/s: the verdict comes at the first look.
    assert canary_requests <= 40
    assert ticks[len(verdicts) - 1].at <= 5.0


def test_canary_with_three_times_the_p99_is_rolled_back_on_latency() -> None:
    slow = SimModel(latency_ms=6.0)
    verdicts = replay(PLAN, trace(PLAN, SimModel(), slow, seed=3), 0.0)
    last = verdicts[-1]
    assert (last.action, last.fired) == ("rollback", "latency_p99")
    latency = next(g for g in last.guards if g.guard == "latency_p99")
    assert latency.statistic == pytest.approx(3.0, rel=0.25)


def test_skewed_canary_with_the_same_errors_is_rolled_back_on_scores() -> None:
    skewed = SimModel(score_shift=0.1)
    verdicts = replay(PLAN, trace(PLAN, SimModel(), skewed, seed=4), 0.0)
    last = verdicts[-1]
    assert (last.action, last.fired) == ("rollback", "score_skew")
    assert next(g for g in last.guards if g.guard == "error_rate").status == "pass"


def test_label_rate_guard_catches_a_shift_in_positives() -> None:
    base = SimModel(with_scores=False, positive_rate=0.30)
    canary = SimModel(with_scores=False, positive_rate=0.40)
    ticks = trace(PLAN, base, canary, seed=5)
    verdicts = replay(PLAN, ticks, 0.0)
    assert (verdicts[-1].action, verdicts[-1].fired) == ("rollback", "label_rate")
    assert sum(t.canary.requests for t in ticks[: len(verdicts)]) <= 2000


def test_low_traffic_holds_and_never_decides() -> None:
    broken = SimModel(error_rate=1.0)
    ticks = trace(PLAN, SimModel(), broken, seed=6, rps=1.0, duration_s=120)
    verdicts = replay(PLAN, ticks, 0.0)
    assert len(verdicts) == len(ticks)
    assert {v.action for v in verdicts} == {"hold"}
    assert "inconclusive" in verdicts[-1].reason


def test_input_drift_holds_without_blaming_the_canary() -> None:
    base, canary = ArmStats(), ArmStats()
    rng = np.random.default_rng(7)
    base.observe(latencies_ms=rng.lognormal(0, 0.3, 2000))
    canary.observe(latencies_ms=rng.lognormal(0, 0.3, 200))
    ctx = RolloutContext(PLAN, 0, 0.0, 100.0, base, canary, drifted_inputs=("amount",))
    verdict = decide(ctx)
    assert verdict.action == "hold"
    assert "amount" in verdict.reason and "not blamed" in verdict.reason
    rollback = decide(
        RolloutContext(
            RolloutPlan(on_input_drift="rollback"),
            0,
            0.0,
            100.0,
            base,
            canary,
            drifted_inputs=("amount",),
        )
    )
    assert (rollback.action, rollback.fired) == ("rollback", "input_drift")


def test_looks_grow_geometrically() -> None:
    assert [look_index(n, 20) for n in (19, 20, 24, 25, 32, 1000)] == [0, 1, 1, 2, 3, 18]


def test_arm_stats_round_trip() -> None:
    arm = arm_tick(SimModel(), 500, np.random.default_rng(8))
    again = ArmStats.from_dict(arm.to_dict())
    assert again.to_dict() == arm.to_dict()


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="increase"):
        RolloutPlan(steps=(50, 25))
    with pytest.raises(ValueError, match="percentages"):
        RolloutPlan(steps=(0, 100))
    assert RolloutPlan.from_dict(PLAN.to_dict()) == PLAN
