"""Compile a scikit-learn model to ONNX and prove the outputs still match.

The check runs the original and the compiled model on the reference sample
(or, without one, on rows drawn to cross the trees' split thresholds) and
refuses the conversion when any output differs by more than the tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from zeroserve.errors import InvalidArtifact, require
from zeroserve.runtimes.onnx import make_session
from zeroserve.types import Signature, TensorSpec

CHECK_ROWS = 2_000


@dataclass
class CompileReport:
    onnx_bytes: bytes
    signature: Signature
    rows_checked: int
    sample_source: str
    max_abs_diff: float
    labels_equal: bool
    tolerance: float

    def summary(self) -> dict[str, Any]:
        return {
            "compiled_from": "sklearn",
            "check_rows": self.rows_checked,
            "check_sample": self.sample_source,
            "max_abs_diff": self.max_abs_diff,
            "labels_equal": self.labels_equal,
            "tolerance": self.tolerance,
        }


def check_rows(
    model: Any, n_features: int, sample: np.ndarray[Any, Any] | None
) -> tuple[np.ndarray[Any, Any], str]:
    """Rows to compare on: the reference sample, else rows that cross the split thresholds."""
    if sample is not None:
        return sample[:CHECK_ROWS].astype(np.float32), "reference sample"
    rng = np.random.default_rng(0)
    found = [getattr(e, "tree_", None) for e in getattr(model, "estimators_", [model])]
    trees: list[Any] = [t for t in np.ravel(np.asarray(found, dtype=object)) if t is not None]
    if not trees:
        return rng.standard_normal((CHECK_ROWS, n_features)).astype(np.float32), "N(0,1) draws"
    low = np.full(n_features, np.inf)
    high = np.full(n_features, -np.inf)
    for tree in trees:
        split = tree.feature >= 0
        np.minimum.at(low, tree.feature[split], tree.threshold[split])
        np.maximum.at(high, tree.feature[split], tree.threshold[split])
    unused = ~np.isfinite(low)
    low[unused], high[unused] = -1.0, 1.0
    span = np.maximum(high - low, 1e-6)
    rows = rng.uniform(low - 0.1 * span, high + 0.1 * span, size=(CHECK_ROWS, n_features))
    return rows.astype(np.float32), "rows drawn across the split thresholds"


def compile_sklearn_to_onnx(
    model: Any, signature: Signature, sample: np.ndarray[Any, Any] | None, tolerance: float
) -> CompileReport:
    skl2onnx = require("skl2onnx", "onnx")
    from skl2onnx.common.data_types import FloatTensorType

    n_features = signature.inputs[0].shape[-1]
    is_classifier = hasattr(model, "predict_proba") and hasattr(model, "classes_")
    options = {id(model): {"zipmap": False}} if is_classifier else None
    try:
        onx = skl2onnx.convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options=options,
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    except Exception as exc:
        raise InvalidArtifact(
            f"skl2onnx cannot convert {type(model).__name__}: {exc}; serve it without --compile"
        ) from exc
    onnx_bytes = onx.SerializeToString()
    session = make_session(onnx_bytes)
    rows, source = check_rows(model, n_features, sample)
    got = dict(
        zip(
            [o.name for o in session.get_outputs()], session.run(None, {"input": rows}), strict=True
        )
    )
    if is_classifier:
        want_proba = model.predict_proba(rows)
        want_label = model.classes_.take(np.argmax(want_proba, axis=1))
        diff = float(np.max(np.abs(got["probabilities"] - want_proba)))
        labels_equal = bool(np.array_equal(got["label"], want_label))
        outputs = [
            TensorSpec(name="label", dtype=str(got["label"].dtype), shape=[-1]),
            TensorSpec(
                name="probabilities",
                dtype="float32",
                shape=[-1, int(got["probabilities"].shape[1])],
            ),
        ]
    else:
        out_name = session.get_outputs()[0].name
        want = np.asarray(model.predict(rows), dtype=np.float64).reshape(len(rows), -1)
        diff = float(np.max(np.abs(got[out_name].reshape(len(rows), -1) - want)))
        labels_equal = True
        outputs = [TensorSpec(name=out_name, dtype="float32", shape=[-1, 1])]
    if diff > tolerance or not labels_equal:
        raise InvalidArtifact(
            f"the ONNX conversion does not reproduce the model: on {len(rows)} rows "
            f"({source}) the largest output difference is {diff:.3g} (tolerance {tolerance:g})"
            f"{'' if labels_equal else ' and some predicted labels differ'}; "
            "serve the original (drop --compile) or raise --tolerance if that difference is fine"
        )
    spec = signature.inputs[0]
    inputs = [
        TensorSpec(
            name="input",
            dtype="float32",
            shape=[-1, n_features],
            allow_nan=spec.allow_nan,
            names=spec.names,
        )
    ]
    return CompileReport(
        onnx_bytes=onnx_bytes,
        signature=Signature(inputs=inputs, outputs=outputs),
        rows_checked=len(rows),
        sample_source=source,
        max_abs_diff=diff,
        labels_equal=labels_equal,
        tolerance=tolerance,
    )
