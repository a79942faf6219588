import numpy as np
import pytest

from zeroserve.monitor.abtest import ab_report, auc, sample_ratio


def arm(rng: np.random.Generator, n: int, skill: float) -> dict[str, np.ndarray]:
    y = (rng.random(n) < 0.4).astype(np.int64)
    noise = rng.normal(0, 1, n)
    logit = skill * (2 * y - 1) + noise
    score = 1 / (1 + np.exp(-logit))
    return {"y": y, "label": (score > 0.5).astype(np.int64), "score": score}


def test_auc_matches_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y = (rng.random(2000) < 0.3).astype(np.int64)
    s = np.round(rng.random(2000) + 0.3 * y, 2)  # with ties
    a, se = auc(y, s)
    assert a == pytest.approx(metrics.roc_auc_score(y, s))
    assert 0 < se < 0.05


def test_better_variant_is_significant_and_identical_is_not() -> None:
    rng = np.random.default_rng(2)
    report = ab_report(
        {"a": arm(rng, 5000, 1.0), "b": arm(rng, 5000, 1.5), "c": arm(rng, 5000, 1.0)},
        {"a": 5000, "b": 5000, "c": 5000},
        {"a": 1, "b": 1, "c": 1},
    )
    by = {(c["variant"], c["metric"]): c for c in report["comparisons"]}
    assert by[("b", "accuracy")]["verdict"] == "better"
    assert by[("b", "log_loss")]["verdict"] == "better"  # lower loss is better
    assert by[("b", "auc")]["verdict"] == "better"
    assert by[("c", "accuracy")]["verdict"] == "no significant difference"
    acc = report["variants"]["b"]["accuracy"]
    assert acc["ci95"][0] < acc["value"] < acc["ci95"][1]
    assert not report["sample_ratio"]["mismatch"]


def test_regressors_get_rmse_with_interval() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(size=4000)
    report = ab_report(
        {
            "a": {"y": y[:2000], "prediction": y[:2000] + rng.normal(0, 1.0, 2000)},
            "b": {"y": y[2000:], "prediction": y[2000:] + rng.normal(0, 0.5, 2000)},
        },
        {"a": 2000, "b": 2000},
        {"a": 1, "b": 1},
    )
    rmse_b = report["variants"]["b"]["rmse"]
    assert rmse_b["value"] == pytest.approx(0.5, rel=0.1)
    assert rmse_b["ci95"][0] < 0.5 < rmse_b["ci95"][1]
    (cmp,) = report["comparisons"]
    assert (cmp["metric"], cmp["verdict"]) == ("rmse", "better")
    assert cmp["difference"] == pytest.approx(-0.5, abs=0.1)


def test_sample_ratio_mismatch_is_flagged() -> None:
    assert sample_ratio({"a": 9000, "b": 1000}, {"a": 90, "b": 10})["mismatch"] is False
    flagged = sample_ratio({"a": 9300, "b": 700}, {"a": 90, "b": 10})
    assert flagged["mismatch"] is True and flagged["p_value"] < 1e-6
    assert sample_ratio({"a": 10}, {"a": 1})["checked"] is False
