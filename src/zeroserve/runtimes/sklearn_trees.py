"""A faster path for scikit-learn random forests and extra-trees, proven identical at load.

``RandomForestClassifier.predict_proba`` spends most of a small batch on
per-tree Python overhead (joblib dispatch, input checks): about 6.5 ms for
one row of a 100-tree forest, against 0.95 ms for the same fitted trees
called directly. This module calls each tree's own ``tree_.predict`` and
accumulates in the same order as scikit-learn, so results are bit for bit the
same; ``build`` checks that on probe rows and returns None (use the model's
own methods) if anything differs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

FORESTS = {
    "RandomForestClassifier",
    "ExtraTreesClassifier",
    "RandomForestRegressor",
    "ExtraTreesRegressor",
}
Array = np.ndarray[Any, Any]


def _classifier(model: Any) -> Callable[[Array], Array]:
    trees = [e.tree_ for e in model.estimators_]
    n_classes = int(model.n_classes_)
    count = len(trees)

    def predict_proba(x: Array) -> Array:
        total: Array | None = None
        for tree in trees:
            proba = tree.predict(x)[:, :n_classes]
            normalizer = proba.sum(axis=1)[:, np.newaxis]
            normalizer[normalizer == 0.0] = 1.0
            proba /= normalizer
            total = proba if total is None else total + proba
        assert total is not None
        total /= count
        return total

    return predict_proba


def _regressor(model: Any) -> Callable[[Array], Array]:
    trees = [e.tree_ for e in model.estimators_]
    count = len(trees)

    def predict(x: Array) -> Array:
        total: Array | None = None
        for tree in trees:
            y = tree.predict(x)[:, 0]
            total = y if total is None else total + y
        assert total is not None
        total /= count
        return total

    return predict


def build(model: Any, probe: Array) -> Callable[[Array], Array] | None:
    """The fast predict (proba for classifiers) if it reproduces the model on ``probe``."""
    if type(model).__name__ not in FORESTS or getattr(model, "n_outputs_", 1) != 1:
        return None
    if not hasattr(model, "estimators_"):
        return None
    is_classifier = hasattr(model, "predict_proba")
    fast = _classifier(model) if is_classifier else _regressor(model)
    x = np.ascontiguousarray(probe, dtype=np.float32)
    try:
        got = fast(x)
        want = model.predict_proba(x) if is_classifier else model.predict(x)
    except Exception:
        return None
    if got.shape != want.shape or not np.array_equal(got, want):
        return None
    return fast
