"""Drift between a reference sketch and a live one, per feature.

Numbers: the effect size is the Wasserstein-1 distance divided by the reference's
standard deviation ("normed Wasserstein"). It estimates a distance between
distributions, so it does not grow with the sample size the way a p-value or PSI
does. A feature drifts when the effect reaches the threshold (0.1 by default)
*and* a two-sample K-S test on the same sketches rejects at ``alpha`` after a
Benjamini-Hochberg correction across features; the test is what stops small live
windows (a few hundred rows) from alarming on noise. PSI over ten reference-decile
bins is reported beside it.

Categories: Jensen-Shannon distance (base 2, in [0, 1]; threshold 0.1) with a
chi-squared test on the same counts.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from zeroserve.monitor.profile import Window
from zeroserve.sketch import BinnedSketch, CategoryCounts, Sketch, ks_statistic, wasserstein
from zeroserve.stats import benjamini_hochberg, chi2_sf, ks_pvalue

WASSERSTEIN_THRESHOLD = 0.1
JS_THRESHOLD = 0.1
ALPHA = 0.01
PSI_BINS = 10
PSI_EPS = 1e-4


@dataclass
class DriftThresholds:
    """Per-endpoint drift thresholds."""

    wasserstein: float = WASSERSTEIN_THRESHOLD
    jensen_shannon: float = JS_THRESHOLD
    alpha: float = ALPHA
    min_rows: int = 30


@dataclass
class FeatureDrift:
    """One feature's verdict and the numbers behind it."""

    feature: str
    kind: str  # numeric | categorical
    method: str  # wasserstein | jensen_shannon
    score: float
    threshold: float
    p_value: float
    q_value: float = 1.0
    drifted: bool = False
    n_reference: int = 0
    n_live: int = 0
    psi: float | None = None
    ks: float | None = None
    reference_mean: float | None = None
    live_mean: float | None = None
    note: str = ""
    hist: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self, with_hist: bool = False) -> dict[str, Any]:
        data = asdict(self)
        if not with_hist:
            data.pop("hist")
        return data


def psi(reference: BinnedSketch, live: BinnedSketch, bins: int = PSI_BINS) -> float:
    """Population stability index over ``bins`` groups of the reference's quantile bins."""
    ref = reference.counts / max(int(reference.counts.sum()), 1)
    cur = live.counts / max(int(live.counts.sum()), 1)
    group = np.minimum((np.cumsum(ref) - ref / 2) * bins, bins - 1).astype(np.int64)
    p = np.bincount(group, weights=ref, minlength=bins) + PSI_EPS
    q = np.bincount(group, weights=cur, minlength=bins) + PSI_EPS
    return float(np.sum((q - p) * np.log(q / p)))


def numeric_drift(
    name: str, reference: BinnedSketch, live: BinnedSketch, t: DriftThresholds
) -> FeatureDrift:
    scale = reference.moments.std
    if not scale > 0:
        scale = max(abs(reference.moments.mean), 1.0)
    w = wasserstein(reference, live) / scale
    d = ks_statistic(reference, live)
    p = ks_pvalue(d, reference.count, live.count)
    return FeatureDrift(
        feature=name,
        kind="numeric",
        method="wasserstein",
        score=w,
        threshold=t.wasserstein,
        p_value=p,
        n_reference=reference.count,
        n_live=live.count,
        psi=psi(reference, live),
        ks=d,
        reference_mean=reference.moments.mean,
        live_mean=live.moments.mean if live.count else None,
    )


def _js_distance(p: np.ndarray[Any, Any], q: np.ndarray[Any, Any]) -> float:
    m = (p + q) / 2

    def kl(x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
        keep = x > 0
        return float(np.sum(x[keep] * np.log2(x[keep] / y[keep])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


def categorical_drift(
    name: str, reference: CategoryCounts, live: CategoryCounts, t: DriftThresholds
) -> FeatureDrift:
    keys = sorted(set(reference.counts) | set(live.counts))
    ref = np.array([reference.counts.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([live.counts.get(k, 0) for k in keys], dtype=np.float64)
    n_ref, n_cur = ref.sum(), cur.sum()
    js = _js_distance(ref / max(n_ref, 1), cur / max(n_cur, 1)) if n_ref and n_cur else 0.0
    # Chi-squared test of homogeneity on the 2 x k table.
    total = ref + cur
    keep = total > 0
    grand = n_ref + n_cur
    stat = 0.0
    if n_ref and n_cur:
        for row, n_row in ((ref, n_ref), (cur, n_cur)):
            expected = total[keep] * n_row / grand
            stat += float(np.sum((row[keep] - expected) ** 2 / expected))
    p = chi2_sf(stat, int(keep.sum()) - 1) if n_ref and n_cur else 1.0
    return FeatureDrift(
        feature=name,
        kind="categorical",
        method="jensen_shannon",
        score=js,
        threshold=t.jensen_shannon,
        p_value=p,
        n_reference=int(n_ref),
        n_live=int(n_cur),
    )


def feature_drift(name: str, reference: Sketch, live: Sketch, t: DriftThresholds) -> FeatureDrift:
    if isinstance(reference, BinnedSketch) and isinstance(live, BinnedSketch):
        return numeric_drift(name, reference, live, t)
    if isinstance(reference, CategoryCounts) and isinstance(live, CategoryCounts):
        return categorical_drift(name, reference, live, t)
    raise TypeError(f"feature {name!r}: reference and live sketches differ in kind")


def compare(
    reference: Window, live: Window, t: DriftThresholds | None = None
) -> list[FeatureDrift]:
    """Every feature's drift, most drifted first; p-values corrected across features."""
    t = t or DriftThresholds()
    results = [
        feature_drift(name, ref, live.sketches[name], t)
        for name, ref in reference.sketches.items()
        if name in live.sketches
    ]
    qs = benjamini_hochberg([r.p_value for r in results])
    for r, q in zip(results, qs, strict=True):
        r.q_value = q
        if r.n_live < t.min_rows:
            r.note = f"too few live rows ({r.n_live} < {t.min_rows}) for a verdict"
            continue
        r.drifted = r.score >= r.threshold and q < t.alpha
    results.sort(key=lambda r: (not r.drifted, -r.score / r.threshold))
    return results


def histogram(reference: Sketch, live: Sketch, groups: int = 20) -> dict[str, list[float]]:
    """A small reference-vs-live histogram for a plot (``groups`` bins at most)."""
    if isinstance(reference, CategoryCounts) and isinstance(live, CategoryCounts):
        keys = sorted(reference.counts, key=lambda k: -reference.counts[k])[:groups]
        n_r, n_l = max(reference.count, 1), max(live.count, 1)
        return {
            "labels": keys,  # type: ignore[dict-item]
            "reference": [reference.counts.get(k, 0) / n_r for k in keys],
            "live": [live.counts.get(k, 0) / n_l for k in keys],
        }
    assert isinstance(reference, BinnedSketch) and isinstance(live, BinnedSketch)
    lo = min(reference.moments.low, live.moments.low)
    hi = max(reference.moments.high, live.moments.high)
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return {"edges": [], "reference": [], "live": []}
    edges = np.linspace(lo, hi, groups + 1)
    return {
        "edges": edges.tolist(),
        "reference": np.diff(reference.cdf(edges)).tolist(),
        "live": np.diff(live.cdf(edges)).tolist(),
    }
