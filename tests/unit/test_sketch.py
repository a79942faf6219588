import json

import numpy as np
import pytest

from zeroserve.sketch import BinnedSketch, CategoryCounts, QuantileSketch, sketch_from_dict


def test_quantile_sketch_is_within_relative_accuracy() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(1.0, 1.0, 50_000)
    sketch = QuantileSketch(alpha=0.01)
    sketch.add(values)
    for q in (0.5, 0.9, 0.99):
        exact = float(np.quantile(values, q))
        assert abs(sketch.quantile(q) - exact) / exact < 0.02
    qs = sketch.quantiles(np.array([0.5, 0.99]))
    assert qs[0] == pytest.approx(sketch.quantile(0.5), rel=0.02)


def test_quantile_sketch_handles_negatives_and_zeros() -> None:
    values = np.array([-5.0, -1.0, 0.0, 0.0, 1.0, 5.0])
    sketch = QuantileSketch()
    sketch.add(values)
    assert sketch.quantile(0.0) == pytest.approx(-5.0, rel=0.02)
    assert sketch.quantile(0.5) == 0.0
    assert sketch.quantile(1.0) == pytest.approx(5.0, rel=0.02)
    assert sketch.fraction_above(2.0) == pytest.approx(1 / 6)


def test_sketches_merge_like_one_stream_and_survive_json() -> None:
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=1000), rng.normal(2, 1, size=3000)
    whole = QuantileSketch()
    whole.add(np.concatenate([a, b]))
    left, right = QuantileSketch(), QuantileSketch()
    left.add(a)
    right.add(b)
    left = sketch_from_dict(json.loads(json.dumps(left.to_dict())))  # type: ignore[assignment]
    left.merge(right)
    got, want = left.to_dict(), whole.to_dict()
    assert (got["positive"], got["negative"], got["zeros"]) == (
        want["positive"],
        want["negative"],
        want["zeros"],
    )
    assert got["moments"] == pytest.approx(want["moments"])

    edges = np.linspace(-3, 3, 61)
    binned_whole, binned_a, binned_b = BinnedSketch(edges), BinnedSketch(edges), BinnedSketch(edges)
    binned_whole.add(np.concatenate([a, b]))
    binned_a.add(a)
    binned_b.add(b)
    binned_a.merge(BinnedSketch.from_dict(json.loads(json.dumps(binned_b.to_dict()))))
    assert binned_a.counts.tolist() == binned_whole.counts.tolist()
    assert binned_a.count == 4000


def test_binned_sketch_refuses_other_edges_and_counts_nan() -> None:
    s = BinnedSketch(np.array([0.0, 1.0]))
    s.add(np.array([0.5, np.nan, np.inf, 2.0]))
    assert s.missing == 2
    assert s.counts.tolist() == [0, 1, 1]
    with pytest.raises(ValueError, match="same edges"):
        s.merge(BinnedSketch(np.array([0.0, 2.0])))


def test_binned_cdf_matches_empirical() -> None:
    rng = np.random.default_rng(3)
    values = rng.normal(size=20_000)
    s = BinnedSketch(np.quantile(values, np.linspace(0, 1, 201)))
    s.add(values)
    xs = np.array([-1.5, 0.0, 0.7, 2.0])
    exact = np.array([(values <= x).mean() for x in xs])
    assert np.max(np.abs(s.cdf(xs) - exact)) < 0.006
    assert s.quantile(0.5) == pytest.approx(float(np.median(values)), abs=0.02)


def test_category_counts_cap_to_other() -> None:
    c = CategoryCounts(max_categories=2)
    c.add(np.array(["a", "b", "c", "a"], dtype=object))
    assert c.counts == {"a": 2, "b": 1, "__other__": 1}
    other = CategoryCounts(max_categories=2)
    other.add(np.array(["d", "a"], dtype=object))
    c.merge(other)
    assert c.counts == {"a": 3, "b": 1, "__other__": 2}


def test_float32_values_fall_in_the_same_bins_as_float64() -> None:
    rng = np.random.default_rng(5)
    edges = np.sort(rng.normal(size=101))
    values = rng.normal(size=20_000).astype(np.float32)
    # Values exactly at float32-rounded edges are where a naive cast would differ.
    values[:101] = edges.astype(np.float32)
    as32, as64 = BinnedSketch(edges), BinnedSketch(edges)
    as32.add(values)
    as64.add(values.astype(np.float64))
    assert as32.counts.tolist() == as64.counts.tolist()
    assert as32.moments.total == pytest.approx(as64.moments.total)
