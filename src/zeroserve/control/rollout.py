"""Canary rollouts: the decision is a pure function of a context record.

``decide(ctx)`` looks at what the baseline and the canary did since the rollout
started (counts and sketches per arm), the current step and the clock, and says
``hold``, ``advance``, ``promote`` or ``rollback``, with the evidence.

Statistics, not raw thresholds:

- No verdict before ``min_requests`` canary requests: low traffic holds, never
  aborts and never promotes.
- Guards are tested at *looks*, one each time the canary's request count grows by
  25% past ``min_requests`` (n = 20, 25, 31, ...). Look ``k`` spends
  ``alpha * 6 / (pi^2 k^2)`` of the false-alarm budget, so each guard's chance of
  rolling back a canary that is as good as its baseline stays below ``alpha`` over
  the whole rollout, however long it runs (a union bound).
- Each guard is a one-sided test of "the canary is worse than the baseline by
  more than a tolerance": error rate (exact binomial tail), latency (the
  share of canary requests slower than max(ratio x baseline p99, p99 + slack)
  against the 1% the baseline has), score distribution (normed Wasserstein with a
  K-S test), label rates (two-proportion z-test beyond a margin).
- Input drift of the canary's traffic against its reference holds the rollout
  (it is reported, not blamed on the canary) unless the plan says otherwise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from zeroserve.sketch import BinnedSketch, CategoryCounts, QuantileSketch, distance
from zeroserve.stats import binomial_upper_pvalue, ks_pvalue, look_alpha, norm_ppf

Action = Literal["hold", "advance", "promote", "rollback"]
LOOK_GROWTH = 1.25
LATENCY_TAIL = 0.01  # the baseline's share above its own p99


@dataclass(frozen=True)
class RolloutPlan:
    """Steps, bake time and guard tolerances of a rollout."""

    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    bake_s: float = 30.0
    min_requests: int = 20
    alpha: float = 0.01
    error_margin: float = 0.01
    latency_ratio: float = 1.5
    latency_slack_ms: float = 5.0
    min_latency_requests: int = 100
    score_threshold: float = 0.1
    label_margin: float = 0.02
    on_input_drift: Literal["hold", "rollback", "ignore"] = "hold"

    def __post_init__(self) -> None:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("steps are canary percentages in (0, 100]")
        if list(self.steps) != sorted(self.steps):
            raise ValueError("steps must increase")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["steps"] = list(self.steps)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutPlan:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "steps" in known:
            known["steps"] = tuple(float(s) for s in known["steps"])
        return cls(**known)


def new_latency() -> QuantileSketch:
    return QuantileSketch(alpha=0.01)


def new_scores() -> BinnedSketch:
    return BinnedSketch.uniform(0.0, 1.0, 200)


@dataclass
class ArmStats:
    """One variant's outcomes since the rollout started (mergeable across processes)."""

    requests: int = 0
    errors: int = 0  # 5xx answers: the model or the replica failed
    latency_ms: QuantileSketch = field(default_factory=new_latency)
    scores: BinnedSketch | QuantileSketch | None = None
    labels: CategoryCounts = field(default_factory=CategoryCounts)

    def observe(
        self,
        *,
        errors: int = 0,
        latencies_ms: Any = (),
        scores: Any = None,
        labels: Any = None,
        requests: int | None = None,
    ) -> None:
        lat = np.asarray(latencies_ms, dtype=np.float64)
        self.requests += int(lat.size) if requests is None else requests
        self.errors += errors
        self.latency_ms.add(lat)
        if scores is not None and np.size(scores):
            if self.scores is None:
                s = np.asarray(scores, dtype=np.float64)
                in_unit = bool(np.all((s >= 0) & (s <= 1)))
                self.scores = new_scores() if in_unit else QuantileSketch()
            self.scores.add(scores)
        if labels is not None and np.size(labels):
            self.labels.add(labels)

    def merge(self, other: ArmStats) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latency_ms.merge(other.latency_ms)
        if other.scores is not None:
            if self.scores is None:
                self.scores = type(other.scores).from_dict(other.scores.to_dict())
            else:
                self.scores.merge(other.scores)  # type: ignore[arg-type]
        self.labels.merge(other.labels)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "latency_ms": self.latency_ms.to_dict(),
            "scores": self.scores.to_dict() if self.scores is not None else None,
            "labels": self.labels.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmStats:
        scores = data.get("scores")
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            latency_ms=QuantileSketch.from_dict(data["latency_ms"]),
            scores=(
                None
                if scores is None
                else BinnedSketch.from_dict(scores)
                if scores["kind"] == "binned"
                else QuantileSketch.from_dict(scores)
            ),
            labels=CategoryCounts.from_dict(data["labels"]),
        )


@dataclass(frozen=True)
class RolloutContext:
    """Everything ``decide`` reads: plan, position, clock, per-arm stats, state."""

    plan: RolloutPlan
    step: int
    step_started_at: float
    now: float
    baseline: ArmStats
    canary: ArmStats
    looks: int = 0
    drifted_inputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class GuardResult:
    """One guard at one look: its statistic, threshold, p-value and level."""

    guard: str
    status: Literal["pass", "fail", "inconclusive"]
    statistic: float
    threshold: float
    p_value: float
    level: float
    n_canary: int
    n_baseline: int
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Verdict:
    """What to do now; ``canary_weight`` is the canary's share (%) after it."""

    action: Action
    reason: str
    canary_weight: float
    step: int
    looks: int
    guards: tuple[GuardResult, ...] = ()
    fired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["guards"] = [g.to_dict() for g in self.guards]
        return data


def look_index(n: int, min_requests: int) -> int:
    """The look a canary count belongs to: 1 at ``min_requests``, +1 per 25% growth."""
    if n < min_requests:
        return 0
    return 1 + math.floor(math.log(n / min_requests) / math.log(LOOK_GROWTH) + 1e-9)


def _weight(plan: RolloutPlan, step: int) -> float:
    return plan.steps[min(step, len(plan.steps) - 1)]


def decide(ctx: RolloutContext) -> Verdict:
    """The rollout's next move. Pure: no clock, no randomness, no I/O."""
    plan, canary = ctx.plan, ctx.canary
    weight = _weight(plan, ctx.step)
    if canary.requests < plan.min_requests:
        return Verdict(
            "hold",
            f"inconclusive: {canary.requests} canary requests of the {plan.min_requests} "
            "needed for a verdict",
            weight,
            ctx.step,
            ctx.looks,
        )
    look = look_index(canary.requests, plan.min_requests)
    guards: tuple[GuardResult, ...] = ()
    if look > ctx.looks:
        level = look_alpha(plan.alpha, look)
        guards = tuple(
            g
            for g in (
                error_guard(ctx, level),
                latency_guard(ctx, level),
                score_guard(ctx, level),
                label_guard(ctx, level),
            )
            if g is not None
        )
        failed = [g for g in guards if g.status == "fail"]
        if failed:
            g = failed[0]
            return Verdict(
                "rollback",
                f"guard {g.guard} failed: {g.detail}",
                0.0,
                ctx.step,
                look,
                guards,
                g.guard,
            )
    looks = max(look, ctx.looks)
    if ctx.drifted_inputs and plan.on_input_drift != "ignore":
        names = ", ".join(ctx.drifted_inputs[:5])
        if plan.on_input_drift == "rollback":
            reason = f"guard input_drift failed: canary traffic drifted on {names}"
            return Verdict("rollback", reason, 0.0, ctx.step, looks, guards, "input_drift")
        reason = (
            f"holding: canary traffic drifted from the reference on {names} "
            "(not blamed on the canary)"
        )
        return Verdict("hold", reason, weight, ctx.step, looks, guards)
    baked = ctx.now - ctx.step_started_at
    if baked < plan.bake_s:
        return Verdict(
            "hold",
            f"baking step {ctx.step + 1}: {baked:.1f}s of {plan.bake_s:g}s",
            weight,
            ctx.step,
            looks,
            guards,
        )
    nxt = ctx.step + 1
    if nxt >= len(plan.steps) or plan.steps[nxt] >= 100:
        return Verdict("promote", "every guard passed at every step", 100.0, nxt, looks, guards)
    return Verdict("advance", f"step {ctx.step + 1} passed", plan.steps[nxt], nxt, looks, guards)


def error_guard(ctx: RolloutContext, level: float) -> GuardResult:
    b, c, plan = ctx.baseline, ctx.canary, ctx.plan
    # Tolerated canary error rate: the baseline's rate, its upper uncertainty and a margin.
    p_b = (b.errors + 0.5) / (b.requests + 1)
    tolerated = b.errors / max(b.requests, 1) + plan.error_margin
    tolerated += norm_ppf(1 - plan.alpha) * math.sqrt(p_b * (1 - p_b) / (b.requests + 1))
    rate = c.errors / c.requests
    p = binomial_upper_pvalue(c.errors, c.requests, min(tolerated, 1.0))
    status: Literal["pass", "fail", "inconclusive"] = "fail" if p < level else "pass"
    detail = (
        f"canary error rate {rate:.2%} ({c.errors}/{c.requests}) vs baseline "
        f"{b.errors / max(b.requests, 1):.2%} ({b.errors}/{b.requests}); "
        f"tolerated {tolerated:.2%}, p <= {p:.2g} at level {level:.2g}"
    )
    return GuardResult(
        "error_rate", status, rate, tolerated, p, level, c.requests, b.requests, detail
    )


def latency_guard(ctx: RolloutContext, level: float) -> GuardResult | None:
    b, c, plan = ctx.baseline, ctx.canary, ctx.plan
    if b.latency_ms.count < plan.min_latency_requests or c.latency_ms.count < plan.min_requests:
        return GuardResult(
            "latency_p99", "inconclusive", math.nan, plan.latency_ratio, 1.0, level,
            c.latency_ms.count, b.latency_ms.count,
            f"needs {plan.min_latency_requests} baseline latencies (has {b.latency_ms.count})",
        )  # fmt: skip
    base_p99 = b.latency_ms.quantile(0.99)
    canary_p99 = c.latency_ms.quantile(0.99)
    limit = max(plan.latency_ratio * base_p99, base_p99 + plan.latency_slack_ms)
    slow = round(c.latency_ms.fraction_above(limit) * c.latency_ms.count)
    # The baseline puts 1% above its p99 and limit > p99; allow twice that for estimation error.
    p = binomial_upper_pvalue(slow, c.latency_ms.count, 2 * LATENCY_TAIL)
    ratio = canary_p99 / base_p99 if base_p99 > 0 else math.inf
    detail = (
        f"canary p99 {canary_p99:.2f} ms vs baseline {base_p99:.2f} ms ({ratio:.2f}x); "
        f"{slow}/{c.latency_ms.count} canary requests over {limit:.2f} ms, "
        f"p <= {p:.2g} at level {level:.2g}"
    )
    status: Literal["pass", "fail", "inconclusive"] = "fail" if p < level else "pass"
    return GuardResult(
        "latency_p99", status, ratio, plan.latency_ratio, p, level,
        c.latency_ms.count, b.latency_ms.count, detail,
    )  # fmt: skip


def score_guard(ctx: RolloutContext, level: float) -> GuardResult | None:
    b, c, plan = ctx.baseline.scores, ctx.canary.scores, ctx.plan
    if b is None or c is None or type(b) is not type(c):
        return None
    if b.count < plan.min_requests:
        return GuardResult(
            "score_skew", "inconclusive", math.nan, plan.score_threshold, 1.0, level,
            c.count, b.count,
            f"needs {plan.min_requests} baseline scores (has {b.count})",
        )  # fmt: skip
    w, d = distance(b, c)
    scale = b.moments.std if b.moments.std > 0 else max(abs(b.moments.mean), 1e-3)
    normed = w / scale
    p = ks_pvalue(d, b.count, c.count)
    status: Literal["pass", "fail", "inconclusive"] = (
        "fail" if normed >= plan.score_threshold and p < level else "pass"
    )
    detail = (
        f"score distance {normed:.3f} (normed Wasserstein; limit {plan.score_threshold:g}); "
        f"mean {c.moments.mean:.4f} vs baseline {b.moments.mean:.4f}; K-S D={d:.3f}, "
        f"p={p:.2g} at level {level:.2g}"
    )
    return GuardResult(
        "score_skew", status, normed, plan.score_threshold, p, level, c.count, b.count, detail
    )


def label_guard(ctx: RolloutContext, level: float) -> GuardResult | None:
    b, c, plan = ctx.baseline.labels, ctx.canary.labels, ctx.plan
    n_b, n_c = b.count, c.count
    if n_b == 0 or n_c == 0:
        return None
    if n_b < plan.min_requests:
        return GuardResult(
            "label_rate", "inconclusive", math.nan, plan.label_margin, 1.0, level, n_c, n_b,
            f"needs {plan.min_requests} baseline labels (has {n_b})",
        )  # fmt: skip
    classes = sorted(set(b.counts) | set(c.counts), key=lambda k: -(b.counts.get(k, 0)))[:10]
    if len(classes) == 2:
        classes = classes[:1]  # two classes: one rate says it all
    z = norm_ppf(1 - plan.alpha)
    worst: tuple[float, float, str, float, float] = (2.0, 0.0, "", 0.0, 0.0)
    for label in classes:
        k_b, k_c = b.counts.get(label, 0), c.counts.get(label, 0)
        p_b, p_c = k_b / n_b, k_c / n_c
        # Two-sided test of |p_c - p_b| > margin: binomial tails of the
        # canary's count against the baseline's rate widened by margin and uncertainty.
        widen = (
            plan.label_margin + z * math.sqrt((k_b + 0.5) * (n_b - k_b + 0.5)) / (n_b + 1) ** 1.5
        )
        p_up = binomial_upper_pvalue(k_c, n_c, min(p_b + widen, 1.0))
        p_down = binomial_upper_pvalue(n_c - k_c, n_c, min(1 - p_b + widen, 1.0))
        p = min(1.0, 2 * min(p_up, p_down) * len(classes))  # two sides, Bonferroni over classes
        if p < worst[0]:
            worst = (p, abs(p_c - p_b), label, p_c, p_b)
    p, diff, label, p_c, p_b = worst
    detail = (
        f"label {label!r}: canary rate {p_c:.2%} vs baseline {p_b:.2%} (difference {diff:.2%}, "
        f"margin {plan.label_margin:.0%}), p={p:.2g} at level {level:.2g}"
    )
    status: Literal["pass", "fail", "inconclusive"] = "fail" if p < level else "pass"
    return GuardResult("label_rate", status, diff, plan.label_margin, p, level, n_c, n_b, detail)


def advance(ctx: RolloutContext, verdict: Verdict, now: float) -> RolloutContext:
    """The context after applying ``verdict`` (for replays and the manager's state)."""
    moved = verdict.step != ctx.step
    return replace(
        ctx,
        step=verdict.step,
        step_started_at=now if moved else ctx.step_started_at,
        looks=verdict.looks,
    )


@dataclass(frozen=True)
class TraceTick:
    """What each arm did during one tick of a recorded rollout."""

    at: float
    baseline: ArmStats
    canary: ArmStats


def replay(plan: RolloutPlan, ticks: list[TraceTick], started_at: float) -> list[Verdict]:
    """Run ``decide`` over a recorded trace; stops at the first rollback or promotion."""
    ctx = RolloutContext(plan, 0, started_at, started_at, ArmStats(), ArmStats())
    verdicts: list[Verdict] = []
    for tick in ticks:
        ctx.baseline.merge(tick.baseline)
        ctx.canary.merge(tick.canary)
        ctx = replace(ctx, now=tick.at)
        verdict = decide(ctx)
        verdicts.append(verdict)
        if verdict.action in ("rollback", "promote"):
            break
        ctx = advance(ctx, verdict, tick.at)
    return verdicts
