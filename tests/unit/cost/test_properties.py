"""Properties every target in the catalog must have, over a grid of volumes and durations.

A bill never falls when the same traffic shape grows, never falls when each request takes
longer, and a target that scales to zero never bills less than the time it is busy.
"""

from __future__ import annotations

import itertools

import pytest

from zeroserve.cost.catalog import Catalog, load_catalog
from zeroserve.cost.evaluate import candidates, estimate
from zeroserve.cost.profile import WorkloadProfile

from .conftest import TODAY

VOLUMES = [0, 1, 30, 1_000, 20_000, 300_000, 1_000_000, 5_000_000, 30_000_000, 400_000_000]
DURATIONS = [0.001, 0.03, 0.4, 3.0]
SHAPES = {
    "plain": {},
    "bursty LLM": {
        "peak_to_average": 5.0,
        "input_tokens_per_request": 800,
        "output_tokens_per_request": 200,
        "cached_input_share": 0.5,
        "cache_write_share": 0.1,
        "batch_share": 0.3,
        "replica_concurrency": 4.0,
    },
    "free tier, model load": {"free_tier": True, "model_load_s": 20.0, "memory_mb": 3000},
}
EPS = 1e-9  # relative: Decimal arithmetic turned to float


def _ids(catalog: Catalog) -> list[tuple[str, str | None]]:
    probe = WorkloadProfile(requests_per_month=1, duration_s=0.1)
    return [(t.id, o) for t, o in candidates(catalog, probe)]


CANDIDATES = _ids(load_catalog())


def _cost(
    catalog: Catalog, shape: dict[str, object], target: str, option: str | None, n: float, d: float
) -> float:
    profile = WorkloadProfile(requests_per_month=n, duration_s=d, allow_async=True, **shape)
    e = estimate(catalog, profile, target, option, today=TODAY, explain=False)
    assert e.monthly_usd_unrounded is not None
    if e.busy_s is not None and e.alive_s is not None and e.scales_to_zero:
        assert e.alive_s >= e.busy_s * (1 - EPS), (target, option, n, d)
    return e.monthly_usd_unrounded


@pytest.mark.parametrize("shape", list(SHAPES), ids=list(SHAPES))
@pytest.mark.parametrize(("target", "option"), CANDIDATES, ids=[f"{t}:{o}" for t, o in CANDIDATES])
def test_bill_never_falls_as_volume_or_duration_grows(
    catalog: Catalog, target: str, option: str | None, shape: str
) -> None:
    fields = SHAPES[shape]
    grid = {
        (n, d): _cost(catalog, fields, target, option, n, d)
        for n, d in itertools.product(VOLUMES, DURATIONS)
    }
    for d in DURATIONS:
        for lo, hi in itertools.pairwise(VOLUMES):
            assert grid[hi, d] >= grid[lo, d] - EPS * abs(grid[lo, d]), (
                f"{target}:{option} falls from ${grid[lo, d]:.4f} at {lo:,} requests to "
                f"${grid[hi, d]:.4f} at {hi:,} ({d} s each)"
            )
    for n in VOLUMES:
        for lo, hi in itertools.pairwise(DURATIONS):
            assert grid[n, hi] >= grid[n, lo] - EPS * abs(grid[n, lo]), (
                f"{target}:{option} falls from ${grid[n, lo]:.4f} at {lo} s to "
                f"${grid[n, hi]:.4f} at {hi} s ({n:,} requests)"
            )


def test_every_container_target_reports_its_lifetime(catalog: Catalog) -> None:
    """The property above checks alive >= busy; make sure it had lifetimes to check."""
    lifetimes = 0
    for target, option in CANDIDATES:
        t = catalog.target(target)
        if t.billing_model != "per_second_container" and not (
            t.billing_model == "instance_hours" and t.scales_to_zero
        ):
            continue
        e = estimate(
            catalog,
            WorkloadProfile(requests_per_month=50_000, duration_s=0.2, allow_async=True),
            target,
            option,
            today=TODAY,
        )
        # 10,000 busy seconds, shared by the replicas an instance hosts (async) or not.
        assert e.busy_s is not None and 0 < e.busy_s <= 10_000
        assert e.alive_s is not None and e.alive_s >= e.busy_s
        lifetimes += 1
    assert lifetimes >= 20


def test_huge_workloads_are_priced_at_once_and_stay_monotone(catalog: Catalog) -> None:
    """Beyond EXACT_CONTAINERS the lifetime is a closed-form bound: fast, and never lower."""
    from zeroserve.cost.estimators import EXACT_CONTAINERS

    month = 730 * 3600
    for target, option in CANDIDATES:
        if not target.startswith(("modal", "gcp.cloudrun", "runpod", "replicate", "hf.")):
            continue
        # In-flight load just under and just over the switch, and absurdly far past it.
        below = EXACT_CONTAINERS * 0.98 * month  # requests of 1 s in a month
        bills = [
            _cost(catalog, {}, target, option, n, 1.0)
            for n in (below, below * 1.05, below * 10, 1e15)
        ]
        assert bills == sorted(bills), (target, option, bills)


def test_absurd_values_are_refused_not_crashed() -> None:
    with pytest.raises(ValueError, match="requests_per_month\n  Input should be less than"):
        WorkloadProfile(requests_per_month=1e300, duration_s=0.1)
