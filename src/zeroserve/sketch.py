"""Mergeable, serialisable sketches of a stream of values.

- ``BinnedSketch``: counts over fixed bin edges (a reference profile's quantiles,
  or a uniform grid for probabilities). Two sketches over the same edges merge by
  adding counts, so windows from several gateway processes and several hours
  combine exactly, and distances between them are deterministic.
- ``QuantileSketch``: logarithmic buckets with relative accuracy ``alpha`` on every
  quantile (the DDSketch idea), for values with no reference grid: latencies,
  regression outputs, score differences.
- ``CategoryCounts``: counts per category, capped, the rest in one ``__other__``.

Each has ``add(values)`` (vectorised), ``merge(other)``, ``to_dict``/``from_dict``.
Pure NumPy, below every other layer: rollouts (control) and monitoring both use it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FloatArray = np.ndarray[Any, np.dtype[np.float64]]
OTHER = "__other__"


@dataclass
class Moments:
    """Count, sum, sum of squares, min and max: exact and mergeable."""

    count: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    low: float = math.inf
    high: float = -math.inf

    def add(self, values: FloatArray) -> None:
        if values.size == 0:
            return
        self.count += int(values.size)
        self.total += float(values.sum())
        self.total_sq += float(np.einsum("i,i->", values, values))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))

    def merge(self, other: Moments) -> None:
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq
        self.low = min(self.low, other.low)
        self.high = max(self.high, other.high)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    @property
    def std(self) -> float:
        if self.count < 2:
            return 0.0
        var = (self.total_sq - self.total * self.total / self.count) / (self.count - 1)
        return math.sqrt(max(var, 0.0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "sum": self.total,
            "sum_sq": self.total_sq,
            "min": self.low if self.count else None,
            "max": self.high if self.count else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Moments:
        low, high = data.get("min"), data.get("max")
        return cls(
            count=int(data["count"]),
            total=float(data["sum"]),
            total_sq=float(data["sum_sq"]),
            low=math.inf if low is None else float(low),
            high=-math.inf if high is None else float(high),
        )


def _finite(values: Any) -> tuple[FloatArray, int]:
    """The finite values as float64, and how many were NaN or infinite."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    ok = np.isfinite(arr)
    if ok.all():
        return arr, 0
    return arr[ok], int(arr.size - ok.sum())


@dataclass
class BinnedSketch:
    """Counts of values over sorted, unique ``edges``.

    Bin 0 holds values below ``edges[0]``, bin ``i`` values in
    ``[edges[i-1], edges[i])``, and the last bin values ``>= edges[-1]``.
    """

    edges: FloatArray
    counts: np.ndarray[Any, np.dtype[np.int64]] = field(default=None)  # type: ignore[arg-type]
    moments: Moments = field(default_factory=Moments)
    missing: int = 0

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=np.float64)
        if self.counts is None:
            self.counts = np.zeros(self.edges.size + 1, dtype=np.int64)

    @classmethod
    def uniform(cls, low: float, high: float, bins: int) -> BinnedSketch:
        return cls(np.linspace(low, high, bins + 1))

    def add(self, values: Any) -> None:
        arr = np.asarray(values).ravel()
        if arr.dtype != np.float32:
            arr = arr.astype(np.float64, copy=False)
        ok = np.isfinite(arr)
        if not ok.all():
            self.missing += int(arr.size - ok.sum())
            arr = arr[ok]
        if arr.size == 0:
            return
        # Sorting and then locating the edges in the sorted values is about twice as fast
        # as a binary search per value, and numpy's sort releases the GIL; float32 data
        # is sorted as float32 (4x faster) against edges rounded up exactly.
        ordered = np.sort(arr)
        edges = self.edges if arr.dtype == np.float64 else self._edges32()
        below = np.searchsorted(ordered, edges, side="left")  # values < each edge
        self.counts += np.diff(below, prepend=0, append=ordered.size)
        m = self.moments
        m.count += int(ordered.size)
        m.total += float(ordered.sum(dtype=np.float64))
        # np.einsum, not np.dot: a BLAS call on a busy machine can spin for milliseconds.
        m.total_sq += float(np.einsum("i,i->", ordered, ordered, dtype=np.float64))
        m.low = min(m.low, float(ordered[0]))
        m.high = max(m.high, float(ordered[-1]))

    def _edges32(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """The smallest float32 at or above each edge: for float32 x, x < e exactly
        when x < that value, so float32 data falls into the same bins."""
        cached: np.ndarray[Any, np.dtype[np.float32]] | None = getattr(self, "_e32", None)
        if cached is None:
            cached = self.edges.astype(np.float32)
            low = cached.astype(np.float64) < self.edges
            cached[low] = np.nextafter(cached[low], np.float32(np.inf))
            self._e32 = cached
        return cached

    def merge(self, other: BinnedSketch) -> None:
        if self.edges.shape != other.edges.shape or not np.array_equal(self.edges, other.edges):
            raise ValueError("binned sketches merge only over the same edges")
        self.counts += other.counts
        self.moments.merge(other.moments)
        self.missing += other.missing

    def empty_like(self) -> BinnedSketch:
        return BinnedSketch(self.edges)

    @property
    def count(self) -> int:
        return self.moments.count

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "binned",
            "edges": self.edges.tolist(),
            "counts": self.counts.tolist(),
            "moments": self.moments.to_dict(),
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BinnedSketch:
        return cls(
            edges=np.asarray(data["edges"], dtype=np.float64),
            counts=np.asarray(data["counts"], dtype=np.int64),
            moments=Moments.from_dict(data["moments"]),
            missing=int(data.get("missing", 0)),
        )

    def bins(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(low, high, mass) per bin, mass as fractions; the two open bins are closed by
        the observed min and max, and each bin's mass is spread uniformly over it."""
        e = self.edges
        lo = np.concatenate(([min(self.moments.low, e[0])], e))
        hi = np.concatenate((e, [max(self.moments.high, e[-1])]))
        mass = self.counts / max(int(self.counts.sum()), 1)
        return lo, hi, mass.astype(np.float64)

    def cdf(self, x: FloatArray) -> FloatArray:
        """P(X <= x) under the piecewise-uniform model of ``bins``."""
        lo, hi, mass = self.bins()
        return _piecewise_cdf(lo, hi, mass, x)

    def quantile(self, q: float) -> float:
        lo, hi, mass = self.bins()
        cum = np.cumsum(mass)
        j = min(int(np.searchsorted(cum, q, side="left")), mass.size - 1)
        before = cum[j] - mass[j]
        frac = 0.0 if mass[j] <= 0 else (q - before) / mass[j]
        return float(lo[j] + (hi[j] - lo[j]) * min(max(frac, 0.0), 1.0))


def _piecewise_cdf(lo: FloatArray, hi: FloatArray, mass: FloatArray, x: FloatArray) -> FloatArray:
    before = np.concatenate(([0.0], np.cumsum(mass)))
    j = np.searchsorted(hi, x, side="right")  # bins wholly at or below x
    inside = np.minimum(j, mass.size - 1)
    width = hi[inside] - lo[inside]
    frac = np.where(width > 0, (x - lo[inside]) / np.where(width > 0, width, 1.0), 0.0)
    frac = np.clip(frac, 0.0, 1.0)
    partial = np.where(j < mass.size, mass[inside] * frac, 0.0)
    return np.asarray(before[j] + partial, dtype=np.float64)


@dataclass
class QuantileSketch:
    """Log-bucketed sketch: every quantile within a relative error ``alpha``."""

    alpha: float = 0.01
    positive: dict[int, int] = field(default_factory=dict)
    negative: dict[int, int] = field(default_factory=dict)
    zeros: int = 0
    moments: Moments = field(default_factory=Moments)
    missing: int = 0
    min_value: float = 1e-9

    def __post_init__(self) -> None:
        self._gamma = (1 + self.alpha) / (1 - self.alpha)
        self._log_gamma = math.log(self._gamma)

    @property
    def count(self) -> int:
        return self.moments.count

    def add(self, values: Any) -> None:
        arr, bad = _finite(values)
        self.missing += bad
        if arr.size == 0:
            return
        self.moments.add(arr)
        mag = np.abs(arr)
        small = mag < self.min_value
        self.zeros += int(small.sum())
        for store, sel in (
            (self.positive, arr >= self.min_value),
            (self.negative, arr <= -self.min_value),
        ):
            chosen = mag[sel]
            if chosen.size == 0:
                continue
            keys = np.ceil(np.log(chosen) / self._log_gamma).astype(np.int64)
            base = int(keys.min())
            counts = np.bincount(keys - base)
            for offset in np.flatnonzero(counts):
                key = base + int(offset)
                store[key] = store.get(key, 0) + int(counts[offset])

    def merge(self, other: QuantileSketch) -> None:
        if other.alpha != self.alpha:
            raise ValueError("quantile sketches merge only with the same alpha")
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for key, n in theirs.items():
                mine[key] = mine.get(key, 0) + n
        self.zeros += other.zeros
        self.moments.merge(other.moments)
        self.missing += other.missing

    def _value(self, key: int) -> float:
        # The bucket (gamma^(k-1), gamma^k] is represented by the point with equal
        # relative error to both ends.
        return 2 * self._gamma**key / (self._gamma + 1)

    def quantile(self, q: float) -> float:
        """The ``q``-quantile (0..1); NaN when empty."""
        n = self.count
        if n == 0:
            return math.nan
        rank = q * (n - 1)
        seen = 0
        for key in sorted(self.negative, reverse=True):
            seen += self.negative[key]
            if seen > rank:
                return max(-self._value(key), self.moments.low)
        seen += self.zeros
        if seen > rank:
            return 0.0
        for key in sorted(self.positive):
            seen += self.positive[key]
            if seen > rank:
                return min(self._value(key), self.moments.high)
        return self.moments.high

    def quantiles(self, qs: FloatArray) -> FloatArray:
        """Many quantiles at once (``qs`` sorted ascending)."""
        n = self.count
        if n == 0:
            return np.full(qs.shape, math.nan)
        keys_neg = sorted(self.negative, reverse=True)
        keys_pos = sorted(self.positive)
        values = np.array(
            [-self._value(k) for k in keys_neg] + [0.0] + [self._value(k) for k in keys_pos]
        )
        counts = np.array(
            [self.negative[k] for k in keys_neg]
            + [self.zeros]
            + [self.positive[k] for k in keys_pos],
            dtype=np.float64,
        )
        cum = np.cumsum(counts)
        idx = np.searchsorted(cum, qs * (n - 1), side="right")
        out = values[np.minimum(idx, values.size - 1)]
        return np.asarray(np.clip(out, self.moments.low, self.moments.high), dtype=np.float64)

    def steps(self) -> tuple[FloatArray, FloatArray]:
        """(value, fraction) per bucket in ascending order: the sketch as a step CDF."""
        keys_neg = sorted(self.negative, reverse=True)
        keys_pos = sorted(self.positive)
        values = [-self._value(k) for k in keys_neg] + [0.0] + [self._value(k) for k in keys_pos]
        counts = [self.negative[k] for k in keys_neg] + [self.zeros]
        counts += [self.positive[k] for k in keys_pos]
        n = max(self.count, 1)
        return np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=np.float64) / n

    def cdf(self, x: FloatArray) -> FloatArray:
        """P(X <= x), each value taken at its bucket's representative point."""
        values, mass = self.steps()
        cum = np.concatenate(([0.0], np.cumsum(mass)))
        return np.asarray(cum[np.searchsorted(values, x, side="right")], dtype=np.float64)

    def fraction_above(self, threshold: float) -> float:
        """The fraction of values above ``threshold`` (to bucket resolution)."""
        n = self.count
        if n == 0:
            return 0.0
        above = 0
        if threshold < 0:
            above += self.zeros + sum(self.positive.values())
            above += sum(c for k, c in self.negative.items() if -self._value(k) > threshold)
        else:
            above += sum(c for k, c in self.positive.items() if self._value(k) > threshold)
        return above / n

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "quantile",
            "alpha": self.alpha,
            "positive": {str(k): v for k, v in self.positive.items()},
            "negative": {str(k): v for k, v in self.negative.items()},
            "zeros": self.zeros,
            "moments": self.moments.to_dict(),
            "missing": self.missing,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantileSketch:
        return cls(
            alpha=float(data["alpha"]),
            positive={int(k): int(v) for k, v in data["positive"].items()},
            negative={int(k): int(v) for k, v in data["negative"].items()},
            zeros=int(data["zeros"]),
            moments=Moments.from_dict(data["moments"]),
            missing=int(data.get("missing", 0)),
        )


@dataclass
class CategoryCounts:
    """Counts per category; past ``max_categories`` new ones go to ``__other__``."""

    counts: dict[str, int] = field(default_factory=dict)
    max_categories: int = 1000

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def add(self, values: Any) -> None:
        arr = np.asarray(values).ravel()
        if arr.size == 0:
            return
        if arr.dtype.kind == "O":
            arr = arr.astype(str)
        uniques, counts = np.unique(arr, return_counts=True)
        for value, n in zip(uniques.tolist(), counts.tolist(), strict=True):
            self._bump(str(value), int(n))

    def _bump(self, value: str, n: int) -> None:
        if value in self.counts or len(self.counts) < self.max_categories:
            self.counts[value] = self.counts.get(value, 0) + n
        else:
            self.counts[OTHER] = self.counts.get(OTHER, 0) + n

    def merge(self, other: CategoryCounts) -> None:
        for value, n in other.counts.items():
            self._bump(value, n)

    def empty_like(self) -> CategoryCounts:
        return CategoryCounts(max_categories=self.max_categories)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "categories", "counts": dict(self.counts), "max": self.max_categories}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CategoryCounts:
        return cls(
            counts={str(k): int(v) for k, v in data["counts"].items()},
            max_categories=int(data.get("max", 1000)),
        )


def _union_grid(a: BinnedSketch, b: BinnedSketch) -> np.ndarray[Any, Any]:
    lo_a, hi_a, _ = a.bins()
    lo_b, hi_b, _ = b.bins()
    return np.unique(np.concatenate((lo_a, hi_a, lo_b, hi_b)))


def wasserstein(a: BinnedSketch, b: BinnedSketch) -> float:
    """W1 = integral of |F_a - F_b|, exact for the piecewise-uniform bin model
    wherever the two CDFs do not cross inside one grid segment."""
    grid = _union_grid(a, b)
    if grid.size < 2:
        return 0.0
    mids = (grid[:-1] + grid[1:]) / 2
    return float(np.sum(np.abs(a.cdf(mids) - b.cdf(mids)) * np.diff(grid)))


def ks_statistic(a: BinnedSketch, b: BinnedSketch) -> float:
    grid = _union_grid(a, b)
    return float(np.max(np.abs(a.cdf(grid) - b.cdf(grid)))) if grid.size else 0.0


def distance(
    a: BinnedSketch | QuantileSketch, b: BinnedSketch | QuantileSketch
) -> tuple[float, float]:
    """(Wasserstein-1, K-S statistic) between two sketches of one kind."""
    if isinstance(a, BinnedSketch) and isinstance(b, BinnedSketch):
        return wasserstein(a, b), ks_statistic(a, b)
    if isinstance(a, QuantileSketch) and isinstance(b, QuantileSketch):
        grid = np.unique(np.concatenate((a.steps()[0], b.steps()[0])))
        if grid.size < 2:
            return 0.0, 0.0
        fa, fb = a.cdf(grid), b.cdf(grid)
        return float(np.sum(np.abs(fa - fb)[:-1] * np.diff(grid))), float(np.max(np.abs(fa - fb)))
    raise TypeError("distance needs two sketches of the same kind")


Sketch = BinnedSketch | QuantileSketch | CategoryCounts


def sketch_from_dict(data: dict[str, Any]) -> Sketch:
    kind = data.get("kind")
    if kind == "binned":
        return BinnedSketch.from_dict(data)
    if kind == "quantile":
        return QuantileSketch.from_dict(data)
    if kind == "categories":
        return CategoryCounts.from_dict(data)
    raise ValueError(f"unknown sketch kind {kind!r}")
