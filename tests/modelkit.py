"""Small models of every flavor, for tests; each file's in-process twin is rebuilt on load."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import joblib
import numpy as np

N_FEATURES = 98
SEED = 0


def data(rows: int = 2_000, features: int = N_FEATURES) -> tuple[Any, Any]:
    from sklearn.datasets import make_classification

    x, y = make_classification(
        n_samples=rows,
        n_features=features,
        n_informative=min(20, features // 2),
        n_redundant=min(2, features // 4),
        random_state=SEED,
    )
    return x.astype(np.float32), y


def build_all(root: Path) -> Path:
    import lightgbm as lgb
    import skops.io as sio
    import xgboost as xgb
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge

    x, y = data()
    np.save(root / "sample.npy", x[:500])
    forest = RandomForestClassifier(n_estimators=20, max_depth=8, random_state=SEED).fit(x, y)
    sio.dump(forest, root / "forest.skops")
    joblib.dump(forest, root / "forest.joblib")
    ridge = Ridge().fit(x, y.astype(np.float64))
    sio.dump(ridge, root / "ridge.skops")
    booster = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "nthread": 1},
        xgb.DMatrix(x, label=y),
        num_boost_round=20,
    )
    booster.save_model(root / "xgb.ubj")
    lgb.train(
        {"objective": "binary", "verbose": -1, "num_threads": 1},
        lgb.Dataset(x, label=y),
        num_boost_round=20,
    ).save_model(root / "lgb.txt")
    (root / "echo.py").write_text(PYTHON_MODEL)
    return root


# A python-flavor model: weighted sum of the features. Input value -999 in the
# first feature makes the worker exit abruptly (to test crash isolation);
# -555 makes predict raise; -777 allocates memory until killed; -111 sleeps
# for the number of seconds in the second feature.
PYTHON_MODEL = textwrap.dedent("""
    import os
    import time
    import numpy as np

    class Model:
        def load(self, artifact_dir):
            self.weights = np.linspace(-1.0, 1.0, 98)

        def predict(self, inputs):
            x = inputs["input"]
            if (x[:, 0] == -999).any():
                os._exit(3)
            if (x[:, 0] == -555).any():
                raise ValueError("feature 0 may not be -555")
            if (x[:, 0] == -777).any():
                hog = []
                while True:
                    hog.append(np.ones(5_000_000))
                    time.sleep(0.02)
            if (x[:, 0] == -111).any():
                time.sleep(float(x[0, 1]))
            return {"score": x @ self.weights}
""")


def python_model_predict(x: Any) -> Any:
    return x @ np.linspace(-1.0, 1.0, N_FEATURES)
