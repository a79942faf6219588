"""Distribution tails and corrections the monitor needs, without SciPy.

SciPy is not a core dependency; these few functions are exact enough for
p-values that are compared with thresholds like 0.01 or 1e-6.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def norm_sf(z: float) -> float:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


def norm_ppf(p: float) -> float:
    """The standard normal quantile (Acklam's rational approximation, refined once)."""
    if not 0.0 < p < 1.0:
        raise ValueError("p must be in (0, 1)")
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687,
         138.3577518672690, -30.66479806614716, 2.506628277459239)  # fmt: skip
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866,
         66.80131188771972, -13.28068155288572)  # fmt: skip
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838,
         -2.549732539343734, 4.374664141464968, 2.938163982698783)  # fmt: skip
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    low = 0.02425
    if p < low:
        q = math.sqrt(-2 * math.log(p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
    elif p > 1 - low:
        return -norm_ppf(1 - p)
    else:
        q = p - 0.5
        r = q * q
        x = (
            (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
            * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        )
    # One Halley step against erfc brings it to ~1e-15.
    e = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


def _gammaincc(a: float, x: float) -> float:
    """Regularised upper incomplete gamma Q(a, x) (series or continued fraction)."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:
        term = total = 1.0 / a
        n = a
        for _ in range(10_000):
            n += 1
            term *= x / n
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    # Lentz's continued fraction.
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 10_000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - lg) * h)


def chi2_sf(x: float, dof: int) -> float:
    """P(X > x) for a chi-squared X with ``dof`` degrees of freedom."""
    if dof <= 0:
        return 1.0
    return _gammaincc(dof / 2.0, x / 2.0)


def kolmogorov_sf(lam: float) -> float:
    """P(K > lam) for the Kolmogorov distribution (the two-sample K-S limit)."""
    if lam <= 0.2:
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = 2 * (-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-16:
            break
    return min(1.0, max(0.0, total))


def ks_pvalue(d: float, n_a: float, n_b: float) -> float:
    """Asymptotic two-sample K-S p-value for statistic ``d`` (Stephens' correction)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    ne = n_a * n_b / (n_a + n_b)
    root = math.sqrt(ne)
    return kolmogorov_sf((root + 0.12 + 0.11 / root) * d)


def binomial_upper_pvalue(successes: int, n: int, p0: float) -> float:
    """P(X >= successes) for X ~ Binomial(n, p0), summed exactly in log space.

    The terms after the first fall geometrically once ``successes`` is above the
    mean, so the sum stops after a few dozen terms for the tails a test looks at.
    """
    if n <= 0 or successes <= 0:
        return 1.0
    if successes > n:
        return 0.0
    if p0 <= 0:
        return 0.0
    if p0 >= 1:
        return 1.0
    if successes <= n * p0:
        return (
            1.0
            if successes <= n * p0 - 3 * math.sqrt(n * p0 * (1 - p0))
            else _tail_sum(successes, n, p0)
        )
    return _tail_sum(successes, n, p0)


def _tail_sum(k: int, n: int, p0: float) -> float:
    log_pmf = (
        math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
        + k * math.log(p0) + (n - k) * math.log1p(-p0)
    )  # fmt: skip
    term = math.exp(log_pmf)
    total = term
    ratio = p0 / (1 - p0)
    for j in range(k, n):
        term *= (n - j) / (j + 1) * ratio
        total += term
        if term < total * 1e-12 and j > n * p0:
            break
    return min(1.0, total)


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """BH-adjusted p-values (q-values), in the input order."""
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, pvalues[i] * m / rank)
        adjusted[i] = min(1.0, running)
    return adjusted


def look_alpha(alpha: float, look: int) -> float:
    """The level for the ``look``-th (1-based) look of a sequential test.

    Spending ``alpha * 6 / (pi^2 k^2)`` on look ``k`` sums to ``alpha`` over any
    number of looks (a union bound), so a test run at every controller tick keeps
    its overall false-alarm rate at ``alpha`` however long it runs.
    """
    k = max(1, look)
    return alpha * 6.0 / (math.pi**2 * k * k)


def wilson(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion."""
    if n == 0:
        return (0.0, 1.0)
    z = norm_ppf(0.5 + confidence / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def finite(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj
