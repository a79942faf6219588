from collections import Counter

import numpy as np

from zeroserve.control.policy import cumulative, pick


def test_weighted_split_follows_weights() -> None:
    cum = cumulative([9, 1])
    draws = np.random.default_rng(0).random(20_000)
    counts = Counter(pick(cum, float(u)) for u in draws)
    assert abs(counts[0] / 20_000 - 0.9) < 0.01
    assert abs(counts[1] / 20_000 - 0.1) < 0.01


def test_zero_weights_split_evenly_and_edges() -> None:
    cum = cumulative([0, 0])
    assert cum == [0.5, 1.0]
    assert pick(cum, 0.0) == 0
    assert pick(cum, 0.999999) == 1
    assert pick(cumulative([1, 0]), 0.99) == 0
