"""The advisor: rule out, rank, and find where the answer changes.

Pure functions of (catalog, profile, today). Costs at other volumes come from
re-estimating the same profile scaled to that volume (``WorkloadProfile.scaled``),
so sizing steps, tiers and free allowances are all accounted for; crossovers
are found on a log grid and refined by bisection.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from zeroserve.cost.catalog import Catalog
from zeroserve.cost.estimators import Estimate, ImpossibleConfiguration, fmt
from zeroserve.cost.evaluate import estimate, estimate_all, hours_per_month
from zeroserve.cost.profile import WorkloadProfile

GRID_DECADES = (2, 11)  # 100 to 100 billion requests a month
GRID_STEPS_PER_DECADE = 4
BISECT_STEPS = 80
MAX_STEPS_PER_INTERVAL = 12  # sizing steps scanned per grid interval before giving up
STEP_WIDTH = 1e-7  # how closely a sizing step is located


@dataclass(slots=True)
class Crossover:
    """Volume at which a scale-to-zero and an always-on candidate cost the same."""

    scale_to_zero: str
    always_on: str
    requests_per_month: float
    busy_hours_per_month: float
    monthly_usd: float
    feasible_at_crossover: bool
    text: str


@dataclass(slots=True)
class ChangePoint:
    direction: Literal["above", "below"]
    requests_per_month: float
    winner: str
    text: str


@dataclass(slots=True)
class BreakEven:
    """LLM: tokens a day at which self-hosting on a GPU costs what a per-token API does."""

    api: str
    self_host: str
    requests_per_month: float | None
    tokens_per_day: float | None
    api_usd_per_1m_tokens: float
    self_host_usd_per_1m_output_tokens_full_load: float | None
    text: str


@dataclass(slots=True)
class Curve:
    id: str
    name: str
    scales_to_zero: bool
    monthly_usd: list[float | None]  # None where infeasible at that volume


@dataclass(slots=True)
class Advice:
    profile: dict[str, Any]
    catalog_version: str
    today: str
    hours_per_month: float
    free_tier: bool
    recommendation: str | None
    summary: str
    targets: list[Estimate]
    crossovers: list[Crossover] = field(default_factory=list)
    changes: list[ChangePoint] = field(default_factory=list)
    llm_break_even: list[BreakEven] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    oldest_as_of: str | None = None
    grid: list[float] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)

    def target(self, candidate_id: str) -> Estimate:
        return next(e for e in self.targets if e.id == candidate_id)


Point = tuple[float | None, bool]  # (monthly USD unrounded, feasible)


class _Costs:
    """Cost of any candidate at any volume, memoised."""

    def __init__(
        self, catalog: Catalog, profile: WorkloadProfile, today: date, estimates: list[Estimate]
    ) -> None:
        self.catalog, self.profile, self.today = catalog, profile, today
        self.keys = {
            e.id: (e.target, e.id.split(":", 1)[1] if ":" in e.id else None) for e in estimates
        }
        self.memo: dict[tuple[str, float], Point] = {}

    def at(self, cid: str, n: float) -> Point:
        key = (cid, n)
        if key not in self.memo:
            target, option = self.keys[cid]
            try:
                e = estimate(
                    self.catalog,
                    self.profile.scaled(n),
                    target,
                    option,
                    today=self.today,
                    explain=False,
                )
                self.memo[key] = (e.monthly_usd_unrounded, e.feasible)
            except ImpossibleConfiguration:
                self.memo[key] = (None, False)
        return self.memo[key]

    def usd(self, cid: str, n: float) -> float:
        value = self.at(cid, n)[0]
        return math.inf if value is None else value


def grid(current: float) -> list[float]:
    lo, hi = GRID_DECADES
    points = {
        10 ** (lo + i / GRID_STEPS_PER_DECADE) for i in range((hi - lo) * GRID_STEPS_PER_DECADE + 1)
    }
    if current > 0:
        points.add(current)
    return sorted(points)


def bisect_log(
    pred: Callable[[float], bool], true_at: float, false_at: float, width: float = 1e-12
) -> tuple[float, float]:
    """Narrow to the boundary between a volume where ``pred`` holds and one where it does not.

    Returns the last volume known to hold and the first known not to, ``width``
    apart in relative terms.
    """
    a, b = true_at, false_at
    for _ in range(BISECT_STEPS):
        mid = math.sqrt(a * b)
        if pred(mid):
            a = mid
        else:
            b = mid
        if abs(math.log(b / a)) < width:
            break
    return a, b


def crossover_volume(costs: _Costs, s2z: str, always_on: str, points: list[float]) -> float | None:
    """First volume at which ``s2z`` stops being cheaper than ``always_on``.

    Between grid points the always-on cost steps up as instances are added, so
    the scale-to-zero cost can overtake it just before a step and fall behind
    again after it; each interval is therefore scanned step by step.
    """

    def diff(n: float) -> float:
        return costs.usd(s2z, n) - costs.usd(always_on, n)

    if diff(points[0]) >= 0:
        return None  # the always-on one is cheaper even at the smallest volume
    for lo, hi in itertools.pairwise(points):
        found, done = _crossing_in(costs, s2z, always_on, diff, lo, hi)
        if found is not None or done:
            return found
    return None


def _crossing_in(
    costs: _Costs, s2z: str, always_on: str, diff: Callable[[float], float], lo: float, hi: float
) -> tuple[float | None, bool]:
    """(crossing, stop) within [lo, hi], given diff(lo) < 0."""
    for _ in range(MAX_STEPS_PER_INTERVAL):
        level = costs.usd(always_on, lo)
        flat = costs.usd(always_on, hi) == level
        if flat:
            if diff(hi) < 0:
                return None, False
            return bisect_log(lambda x: diff(x) < 0, lo, hi)[1], True
        if max(costs.usd(s2z, lo), costs.usd(s2z, hi)) < level:
            return None, False  # cannot catch up within this interval
        # A step inside: the scale-to-zero cost may pass the current level just before it.
        before, after = bisect_log(_same_cost(costs, always_on, level), lo, hi, STEP_WIDTH)
        if diff(before) >= 0:
            return bisect_log(lambda x: diff(x) < 0, lo, before)[1], True
        lo = after
    return None, True  # too many steps to scan: report none rather than a wrong one


def _same_cost(costs: _Costs, cid: str, level: float) -> Callable[[float], bool]:
    return lambda x: costs.usd(cid, x) == level


def advise(
    catalog: Catalog, profile: WorkloadProfile, *, today: date, with_curves: bool = True
) -> Advice:
    """Rank every candidate for ``profile``; with curves, also crossovers and change points."""
    estimates = estimate_all(catalog, profile, today=today)
    ranked = sorted(
        estimates,
        key=lambda e: (not e.feasible, e.monthly_usd is None, e.monthly_usd or 0.0, e.id),
    )
    best = next((e for e in ranked if e.feasible), None)
    hours = float(hours_per_month(catalog, profile))
    advice = Advice(
        profile=profile.model_dump(mode="json"),
        catalog_version=catalog.catalog.version,
        today=today.isoformat(),
        hours_per_month=hours,
        free_tier=profile.free_tier,
        recommendation=best.id if best else None,
        summary="",
        targets=ranked,
    )
    _stale_warnings(advice, catalog, today)
    if with_curves and best is not None:
        costs = _Costs(catalog, profile, today, estimates)
        points = grid(profile.requests_per_month)
        relevant = [e for e in ranked if e.feasible and not e.unneeded_gpu]
        advice.grid = points
        advice.curves = [
            Curve(
                e.id, e.name, e.scales_to_zero, [_feasible_usd(costs.at(e.id, n)) for n in points]
            )
            for e in relevant
        ]
        advice.crossovers = _crossovers(costs, relevant, points, profile)
        advice.changes = _changes(
            costs, best, relevant, points, profile.requests_per_month, advice.crossovers
        )
        if profile.is_llm:
            advice.llm_break_even = _break_even(costs, relevant, points, profile, hours)
    advice.summary = _summary(advice, best, profile)
    return advice


def _feasible_usd(point: Point) -> float | None:
    usd, feasible = point
    return usd if feasible else None


def _crossovers(
    costs: _Costs, relevant: list[Estimate], points: list[float], profile: WorkloadProfile
) -> list[Crossover]:
    out = []
    # The cheapest option of each scale-to-zero target against every always-on option:
    # the other options of a scale-to-zero target cost more at every volume anyway.
    s2z = _cheapest_per_target(
        [e for e in relevant if e.scales_to_zero and e.billing_model != "per_token"]
    )
    always_on = [e for e in relevant if not e.scales_to_zero]
    for a in s2z:
        for b in always_on:
            n = crossover_volume(costs, a.id, b.id, points)
            if n is None:
                continue
            usd_a, ok_a = costs.at(a.id, n)
            _, ok_b = costs.at(b.id, n)
            busy_h = n * profile.duration_for(a.id) / 3600
            out.append(
                Crossover(
                    scale_to_zero=a.id,
                    always_on=b.id,
                    requests_per_month=n,
                    busy_hours_per_month=busy_h,
                    monthly_usd=usd_a or 0.0,
                    feasible_at_crossover=ok_a and ok_b,
                    text=(
                        f"above {fmt(round(n))} requests a month ({busy_h:,.0f} busy hours), "
                        f"{b.name} costs less than {a.name} (both ${usd_a or 0:,.2f} there)"
                    ),
                )
            )
    return sorted(out, key=lambda c: c.requests_per_month)


def _cheapest_per_target(ranked: list[Estimate]) -> list[Estimate]:
    """The first (cheapest, as ranked) candidate of each target."""
    seen: set[str] = set()
    out = []
    for e in ranked:
        if e.target not in seen:
            seen.add(e.target)
            out.append(e)
    return out


def _cheapest(costs: _Costs, ids: list[str], n: float) -> str | None:
    feasible = [(costs.usd(i, n), i) for i in ids if costs.at(i, n)[1]]
    return min(feasible)[1] if feasible else None


def _changes(
    costs: _Costs,
    best: Estimate,
    relevant: list[Estimate],
    points: list[float],
    current: float,
    crossovers: list[Crossover],
) -> list[ChangePoint]:
    """The nearest volumes above and below ``current`` at which another candidate wins."""
    ids = [e.id for e in relevant]
    names = {e.id: e.name for e in relevant}
    out = []
    for direction, walk in (
        ("above", [n for n in points if n > current]),
        ("below", [n for n in reversed(points) if n < current]),
    ):
        found: tuple[float, str] | None = None
        for n in walk:
            winner = _cheapest(costs, ids, n)
            if winner is None or winner == best.id:
                continue

            def holds(x: float, w: str = winner) -> bool:
                ok = costs.at(best.id, x)[1]
                return ok and (not costs.at(w, x)[1] or costs.usd(best.id, x) <= costs.usd(w, x))

            found = (bisect_log(holds, current, n)[1], winner)
            break
        if direction == "above":
            # A crossover can fall between grid points (just before a sizing step).
            for c in crossovers:
                if (
                    c.scale_to_zero == best.id
                    and c.requests_per_month > current
                    and (found is None or c.requests_per_month < found[0])
                ):
                    found = (c.requests_per_month, c.always_on)
        if found is not None:
            edge, winner = found
            out.append(
                ChangePoint(
                    direction=direction,  # type: ignore[arg-type]
                    requests_per_month=edge,
                    winner=winner,
                    text=f"{direction} {fmt(round(edge))} requests a month, "
                    f"{names[winner]} would be cheaper",
                )
            )
    return out


def _break_even(
    costs: _Costs,
    relevant: list[Estimate],
    points: list[float],
    profile: WorkloadProfile,
    hours: float,
) -> list[BreakEven]:
    apis = [e for e in relevant if e.billing_model == "per_token"]
    # Self-hosting: your own always-on GPUs (not the provider's hosted capacity), the
    # cheapest option of each target.
    gpus = _cheapest_per_target(
        [
            e
            for e in relevant
            if not e.scales_to_zero and costs.catalog.target(e.target).serves == "model"
        ]
    )
    tokens = profile.input_tokens_per_request + profile.output_tokens_per_request
    days = hours / 24
    out = []
    for api in apis:
        per_req = costs.usd(api.id, 1e6) / 1e6
        api_per_1m = per_req / tokens * 1e6
        for gpu in gpus:
            full = None
            if profile.self_host_tokens_per_s:
                one = costs.usd(gpu.id, 1.0) / profile.min_instances
                full = one / (profile.self_host_tokens_per_s * hours * 3600) * 1e6
            n = crossover_volume(costs, api.id, gpu.id, points)
            if n is None:
                text = (
                    f"self-hosting on {gpu.name} does not break even with {api.name} "
                    "up to 10^11 requests a month"
                )
                if full is not None:
                    text += (
                        f" (fully loaded it costs ${full:,.2f} per 1M output tokens; "
                        f"the API ${api_per_1m:,.2f} per 1M tokens)"
                    )
                out.append(BreakEven(api.id, gpu.id, None, None, api_per_1m, full, text))
                continue
            per_day = n * tokens / days
            out.append(
                BreakEven(
                    api.id,
                    gpu.id,
                    n,
                    per_day,
                    api_per_1m,
                    full,
                    f"above {fmt(round(per_day))} tokens a day ({fmt(round(n))} requests a month), "
                    f"self-hosting on {gpu.name} costs less than {api.name}",
                )
            )
    return sorted(out, key=lambda b: (b.tokens_per_day is None, b.tokens_per_day or 0.0))


def _stale_warnings(advice: Advice, catalog: Catalog, today: date) -> None:
    limit = catalog.catalog.stale_after_days
    used = [(e.oldest_as_of, e.id) for e in advice.targets if e.oldest_as_of]
    if not used:
        return
    oldest = min(used)[0]
    advice.oldest_as_of = oldest
    age = (today - date.fromisoformat(oldest)).days
    if age > limit:
        who = sorted({i for d, i in used if (today - date.fromisoformat(d)).days > limit})
        advice.warnings.append(
            f"prices older than {limit} days were used; the oldest as-of date is {oldest} "
            f"({age} days), in {', '.join(who)}"
        )
    rec = next((e for e in advice.targets if e.id == advice.recommendation), None)
    if rec is not None:
        shaky = sorted({li.confidence for li in rec.line_items} & {"estimate", "volatile"})
        if shaky:
            advice.warnings.append(
                f"the recommendation uses {' and '.join(shaky)} prices; check them before deciding"
            )


def _summary(advice: Advice, best: Estimate | None, profile: WorkloadProfile) -> str:
    if best is None:
        return "no target is feasible for this workload; see the reasons per target"
    text = (
        f"cheapest feasible for {fmt(round(profile.requests_per_month))} requests a month: "
        f"{best.name} at ${best.monthly_usd or 0:,.2f} a month"
    )
    for change in advice.changes:
        text += f"; {change.text}"
    return text
