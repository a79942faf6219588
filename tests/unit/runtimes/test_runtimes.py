"""Each runtime predicts what the model predicts in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests import modelkit
from zeroserve.errors import MissingExtra, UntrustedArtifact, require
from zeroserve.registry.packaging import PackageRequest, package
from zeroserve.runtimes import create_runtime, runtime_class
from zeroserve.runtimes.base import ArtifactMeta


def load(models_dir: Path, tmp_path: Path, name: str, **kwargs: object):  # type: ignore[no-untyped-def]
    dest = tmp_path / name.replace(".", "_")
    package(
        PackageRequest(
            source=models_dir / name, dest=dest, sample=models_dir / "sample.npy", **kwargs
        )
    )  # type: ignore[arg-type]
    runtime = create_runtime(ArtifactMeta.read(dest))
    runtime.load(dest)
    return runtime


X = modelkit.data()[0][:64]


def test_xgboost(models_dir: Path, tmp_path: Path) -> None:
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(models_dir / "xgb.ubj"))
    got = load(models_dir, tmp_path, "xgb.ubj").predict({"input": X})
    p = booster.predict(xgb.DMatrix(X))  # binary:logistic, as XGBClassifier answers it
    np.testing.assert_allclose(got["probabilities"], np.column_stack([1 - p, p]), rtol=1e-6)
    np.testing.assert_array_equal(got["label"], (p > 0.5).astype(np.int64))


def test_lightgbm(models_dir: Path, tmp_path: Path) -> None:
    import lightgbm as lgb

    booster = lgb.Booster(model_file=str(models_dir / "lgb.txt"))
    got = load(models_dir, tmp_path, "lgb.txt", flavor="lightgbm").predict({"input": X})
    p = booster.predict(X)  # objective binary, as LGBMClassifier answers it
    np.testing.assert_allclose(got["probabilities"], np.column_stack([1 - p, p]), rtol=1e-9)
    np.testing.assert_array_equal(got["label"], (p > 0.5).astype(np.int64))


def test_sklearn_regressor(models_dir: Path, tmp_path: Path) -> None:
    import skops.io as sio

    ridge = sio.load(
        models_dir / "ridge.skops", trusted=sio.get_untrusted_types(file=models_dir / "ridge.skops")
    )
    got = load(models_dir, tmp_path, "ridge.skops").predict({"input": X})
    np.testing.assert_allclose(got["prediction"], ridge.predict(X))


def test_python_model(models_dir: Path, tmp_path: Path) -> None:
    runtime = load(models_dir, tmp_path, "echo.py", trusted=True)
    np.testing.assert_allclose(
        runtime.predict({"input": X})["score"], modelkit.python_model_predict(X)
    )


def test_python_model_refused_without_trust_at_load(models_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "py"
    package(
        PackageRequest(
            source=models_dir / "echo.py", dest=dest, trusted=True, sample=models_dir / "sample.npy"
        )
    )
    meta = ArtifactMeta.read(dest).model_copy(update={"trusted": False})
    with pytest.raises(UntrustedArtifact):
        create_runtime(meta).load(dest)


def test_unknown_flavor_and_missing_extra() -> None:
    with pytest.raises(Exception, match="unknown flavor"):
        runtime_class("tensorflow")
    with pytest.raises(MissingExtra, match=r"pip install 'zeroserve\[x\]'"):
        require("zeroserve_no_such_module", "x")


@pytest.mark.parametrize("kind", ["rf-classifier", "et-classifier", "rf-regressor"])
def test_forest_fast_path_is_bit_identical(kind: str) -> None:
    from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier, RandomForestRegressor

    from zeroserve.runtimes import sklearn_trees

    x, y = modelkit.data(rows=600, features=12)
    model = {
        "rf-classifier": RandomForestClassifier(n_estimators=15, random_state=0),
        "et-classifier": ExtraTreesClassifier(n_estimators=15, random_state=0),
        "rf-regressor": RandomForestRegressor(n_estimators=15, random_state=0),
    }[kind]
    model.fit(x, y if "classifier" in kind else x[:, 0] * 2.0)
    fast = sklearn_trees.build(model, x[:100])
    assert fast is not None
    probe = np.random.default_rng(1).standard_normal((300, 12)).astype(np.float32)
    want = model.predict_proba(probe) if "classifier" in kind else model.predict(probe)
    assert np.array_equal(fast(probe), want)


def test_fast_path_refuses_what_it_cannot_reproduce() -> None:
    from sklearn.ensemble import GradientBoostingClassifier

    from zeroserve.runtimes import sklearn_trees

    x, y = modelkit.data(rows=300, features=8)
    assert sklearn_trees.build(GradientBoostingClassifier(n_estimators=5).fit(x, y), x) is None


def test_sklearn_runtime_uses_the_fast_path_and_matches(models_dir: Path, tmp_path: Path) -> None:
    import skops.io as sio

    runtime = load(models_dir, tmp_path, "forest.skops")
    assert runtime.fast is not None
    forest = sio.load(
        models_dir / "forest.skops",
        trusted=sio.get_untrusted_types(file=models_dir / "forest.skops"),
    )
    got = runtime.predict({"input": X})
    assert np.array_equal(got["probabilities"], forest.predict_proba(X))
    assert np.array_equal(got["label"], forest.predict(X))
    with_nan = X.copy()
    with_nan[0, 3] = np.nan  # falls back to scikit-learn's own path
    np.testing.assert_array_equal(
        runtime.predict({"input": with_nan})["probabilities"][1:],
        forest.predict_proba(with_nan)[1:],
    )
