"""A/B verdicts from predictions joined to feedback.

Per variant: accuracy (Wilson interval), log loss, AUC (Hanley-McNeil standard
error) for classifiers; RMSE for regressors; each with a 95% interval. Each
variant is compared with the control (the first variant) by a two-sided z-test on
the per-row metric, and the traffic split is checked for a sample-ratio mismatch
(chi-squared against the configured weights, flagged at p < 0.001).
Fixed-horizon tests: read the verdict once, at the sample size you planned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zeroserve.stats import chi2_sf, norm_ppf, norm_sf, wilson

SRM_ALPHA = 0.001
EPS = 1e-15


@dataclass
class Metric:
    name: str
    value: float
    ci95: tuple[float, float]
    se: float
    n: int
    higher_is_better: bool


@dataclass
class Comparison:
    metric: str
    variant: str
    control: str
    difference: float
    ci95: tuple[float, float]
    p_value: float
    verdict: str  # better | worse | no significant difference


def _mean_metric(
    name: str, per_row: np.ndarray[Any, Any], higher: bool
) -> tuple[Metric, np.ndarray[Any, Any]]:
    n = per_row.size
    mean = float(per_row.mean()) if n else math.nan
    se = float(per_row.std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf
    z = norm_ppf(0.975)
    return Metric(name, mean, (mean - z * se, mean + z * se), se, n, higher), per_row


def auc(y: np.ndarray[Any, Any], score: np.ndarray[Any, Any]) -> tuple[float, float]:
    """AUC (Mann-Whitney, ties averaged) and its Hanley-McNeil standard error."""
    pos = y == 1
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return math.nan, math.inf
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(score.size, dtype=np.float64)
    sorted_scores = score[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    a = float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n0 - 1) * (q2 - a * a)) / (n1 * n0)
    return a, math.sqrt(max(var, 0.0))


def classifier_metrics(
    y: np.ndarray[Any, Any], label: np.ndarray[Any, Any], score: np.ndarray[Any, Any] | None
) -> dict[str, tuple[Metric, np.ndarray[Any, Any] | None]]:
    out: dict[str, tuple[Metric, np.ndarray[Any, Any] | None]] = {}
    correct = (np.asarray(label).astype(str) == np.asarray(y).astype(str)).astype(np.float64)
    acc, rows = _mean_metric("accuracy", correct, True)
    acc.ci95 = wilson(int(correct.sum()), correct.size)
    out["accuracy"] = (acc, rows)
    if score is not None:
        try:
            y01 = np.asarray(y).astype(np.float64)
        except ValueError:
            return out
        if set(np.unique(y01).tolist()) <= {0.0, 1.0}:
            p = np.clip(np.asarray(score, dtype=np.float64), EPS, 1 - EPS)
            loss = -(y01 * np.log(p) + (1 - y01) * np.log(1 - p))
            out["log_loss"] = _mean_metric("log_loss", loss, False)
            a, se = auc(y01.astype(np.int64), p)
            z = norm_ppf(0.975)
            out["auc"] = (Metric("auc", a, (a - z * se, a + z * se), se, y01.size, True), None)
    return out


def regressor_metrics(
    y: np.ndarray[Any, Any], prediction: np.ndarray[Any, Any]
) -> dict[str, tuple[Metric, np.ndarray[Any, Any] | None]]:
    sq = (np.asarray(prediction, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2
    mse, rows = _mean_metric("mse", sq, False)
    low, high = max(mse.ci95[0], 0.0), max(mse.ci95[1], 0.0)
    rmse = Metric(
        "rmse",
        math.sqrt(mse.value),
        (math.sqrt(low), math.sqrt(high)),
        mse.se / (2 * math.sqrt(mse.value) + EPS),
        mse.n,
        False,
    )
    return {"rmse": (rmse, rows)}


def compare(
    metric: str,
    variant: str,
    control: str,
    mine: tuple[Metric, np.ndarray[Any, Any] | None],
    theirs: tuple[Metric, np.ndarray[Any, Any] | None],
    alpha: float = 0.05,
) -> Comparison:
    a, rows_a = mine
    b, rows_b = theirs
    if metric == "rmse" and rows_a is not None and rows_b is not None:
        # Compare on squared error (the per-row metric), report the RMSE difference.
        diff_mse = float(rows_a.mean() - rows_b.mean())
        se = math.sqrt(rows_a.var(ddof=1) / rows_a.size + rows_b.var(ddof=1) / rows_b.size)
        z = diff_mse / se if se > 0 else 0.0
        diff = a.value - b.value
        scale = diff / diff_mse if diff_mse else 0.0
        half = norm_ppf(1 - alpha / 2) * se * abs(scale)
    else:
        diff = a.value - b.value
        se = math.sqrt(a.se**2 + b.se**2)
        z = diff / se if se > 0 and math.isfinite(se) else 0.0
        half = norm_ppf(1 - alpha / 2) * se
    p = 2 * norm_sf(abs(z))
    if p >= alpha:
        verdict = "no significant difference"
    else:
        verdict = "better" if (diff > 0) == a.higher_is_better else "worse"
    return Comparison(metric, variant, control, diff, (diff - half, diff + half), p, verdict)


def sample_ratio(counts: dict[str, int], weights: dict[str, float]) -> dict[str, Any]:
    """Chi-squared test of the observed split against the configured weights."""
    names = [v for v in weights if weights[v] > 0]
    total_w = sum(weights[v] for v in names)
    n = sum(counts.get(v, 0) for v in names)
    if n == 0 or len(names) < 2:
        return {"checked": False, "reason": "needs two variants with weight and traffic"}
    stat = 0.0
    expected: dict[str, float] = {}
    for v in names:
        e = n * weights[v] / total_w
        expected[v] = e
        stat += (counts.get(v, 0) - e) ** 2 / e
    p = chi2_sf(stat, len(names) - 1)
    return {
        "checked": True,
        "observed": {v: counts.get(v, 0) for v in names},
        "expected": expected,
        "chi2": stat,
        "p_value": p,
        "mismatch": p < SRM_ALPHA,
    }


def ab_report(
    arms: dict[str, dict[str, np.ndarray[Any, Any]]],
    counts: dict[str, int],
    weights: dict[str, float],
    alpha: float = 0.05,
) -> dict[str, Any]:
    """``arms[variant]`` holds ``y`` (observed) and ``label``/``score`` (classifier) or
    ``prediction`` (regressor) for the joined rows; ``counts`` the requests served."""
    metrics: dict[str, dict[str, tuple[Metric, np.ndarray[Any, Any] | None]]] = {}
    for variant, cols in arms.items():
        y = cols["y"]
        if y.size == 0:
            continue
        if "label" in cols:
            metrics[variant] = classifier_metrics(y, cols["label"], cols.get("score"))
        elif "prediction" in cols:
            metrics[variant] = regressor_metrics(y, cols["prediction"])
    variants = list(metrics)
    comparisons: list[Comparison] = []
    if len(variants) >= 2:
        control = variants[0]
        for variant in variants[1:]:
            for name, mine in metrics[variant].items():
                if name in metrics[control]:
                    comparisons.append(
                        compare(name, variant, control, mine, metrics[control][name], alpha)
                    )
    return {
        "variants": {
            v: {name: asdict(m) for name, (m, _) in ms.items()} for v, ms in metrics.items()
        },
        "comparisons": [asdict(c) for c in comparisons],
        "sample_ratio": sample_ratio(counts, weights),
        "alpha": alpha,
    }
