"""Traffic policy: which variant serves a request. Pure functions."""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate


def cumulative(weights: Sequence[float]) -> list[float]:
    """Normalised cumulative weights; all-zero weights split evenly."""
    total = float(sum(weights))
    if total <= 0:
        weights = [1.0] * len(weights)
        total = float(len(weights))
    return [w / total for w in accumulate(weights)]


def pick(cum_weights: Sequence[float], u: float) -> int:
    """The variant index for a uniform draw ``u`` in [0, 1)."""
    return min(bisect_right(cum_weights, u), len(cum_weights) - 1)
