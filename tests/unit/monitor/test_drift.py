import numpy as np
import pytest

from zeroserve.monitor.drift import DriftThresholds, compare, psi
from zeroserve.monitor.profile import Profile, build_profile, numeric_profile
from zeroserve.sketch import CategoryCounts, ks_statistic, wasserstein
from zeroserve.types import Signature, TensorSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 4])],
    outputs=[TensorSpec(name="prediction", dtype="float64", shape=[-1])],
)


def live_of(reference: np.ndarray, live: np.ndarray) -> tuple[Profile, Profile]:
    profile = build_profile(SIG, {"input": reference})
    window = profile.live()
    window.observe(SIG, {"input": live})
    return profile, window


def test_sketch_distances_match_exact_values() -> None:
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(4)
    ref = rng.normal(size=100_000)
    cur = rng.normal(0.3, 1.2, size=200_000)
    a = numeric_profile(ref)
    b = a.empty_like()
    b.add(cur)
    exact_w = scipy_stats.wasserstein_distance(ref, cur)
    exact_d = scipy_stats.ks_2samp(ref, cur).statistic
    assert wasserstein(a, b) == pytest.approx(exact_w, abs=0.01)
    assert ks_statistic(a, b) == pytest.approx(exact_d, abs=0.01)
    assert psi(a, a) == pytest.approx(0.0, abs=1e-9)
    assert psi(a, b) > 0.1


def test_shift_of_02_sigma_found_at_one_million_rows_and_only_there() -> None:
    rng = np.random.default_rng(5)
    reference = rng.normal(size=(100_000, 4))
    live = rng.normal(size=(1_000_000, 4))
    live[:, 2] += 0.2
    profile, window = live_of(reference, live)
    results = {r.feature: r for r in compare(profile.inputs, window.inputs)}
    assert results["input_2"].drifted
    assert results["input_2"].score == pytest.approx(0.2, abs=0.02)
    assert [name for name, r in results.items() if r.drifted] == ["input_2"]


def test_small_windows_need_the_test_too() -> None:
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(10_000, 4))
    live = rng.normal(size=(300, 4))
    live[:, 0] += 1.0
    profile, window = live_of(reference, live)
    results = {r.feature: r for r in compare(profile.inputs, window.inputs)}
    assert results["input_0"].drifted
    # Noise at n=300 gives Wasserstein effects near 0.1, but the K-S test holds them back.
    assert not any(results[f"input_{i}"].drifted for i in (1, 2, 3))


def test_false_positive_rate_on_unshifted_features() -> None:
    rng = np.random.default_rng(7)
    reference = rng.normal(size=(20_000, 4))
    flagged = 0
    for _ in range(50):
        profile, window = live_of(reference, rng.normal(size=(2_000, 4)))
        flagged += sum(r.drifted for r in compare(profile.inputs, window.inputs))
    assert flagged <= 2  # of 200 feature checks


def test_categorical_drift_uses_jensen_shannon_and_chi_squared() -> None:
    ref, same, moved = CategoryCounts(), CategoryCounts(), CategoryCounts()
    rng = np.random.default_rng(8)
    ref.add(rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=10_000))
    same.add(rng.choice(["a", "b", "c"], p=[0.5, 0.3, 0.2], size=5_000))
    moved.add(rng.choice(["a", "b", "c"], p=[0.2, 0.3, 0.5], size=5_000))
    from zeroserve.monitor.profile import Window

    results = compare(Window({"x": ref}), Window({"x": same}))
    assert not results[0].drifted and results[0].method == "jensen_shannon"
    results = compare(Window({"x": ref}), Window({"x": moved}))
    assert results[0].drifted and results[0].score > 0.2 and results[0].p_value < 1e-10


def test_too_few_rows_is_no_verdict() -> None:
    rng = np.random.default_rng(9)
    profile, window = live_of(rng.normal(size=(1000, 4)), rng.normal(5, 1, size=(10, 4)))
    results = compare(profile.inputs, window.inputs, DriftThresholds(min_rows=30))
    assert not any(r.drifted for r in results)
    assert "too few" in results[0].note
