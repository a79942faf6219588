"""What a model's outputs say, whatever their names: a label and a score per row.

Shared by the rollout guards (control), the shadow comparison and the prediction
log (monitor); pure NumPy, so it sits in the bottom layer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroserve.types import Arrays


def label_and_score(
    outputs: Arrays,
) -> tuple[np.ndarray[Any, Any] | None, np.ndarray[Any, Any] | None]:
    """The predicted label and a scalar score per row, whatever the output names.

    Classifiers (a 2-D probability output): the score is P(class 1) for two classes,
    else the top probability; the label is the label output or the arg-max.
    Regressors (one 1-D numeric output): the score is the prediction, no label.
    """
    label = score = None
    for arr in outputs.values():
        if arr.ndim == 2 and arr.shape[1] >= 2 and arr.dtype.kind == "f":
            score = arr[:, 1] if arr.shape[1] == 2 else arr.max(axis=1)
            if label is None:
                label = arr.argmax(axis=1)
    for name, arr in outputs.items():
        if arr.ndim == 1 and (arr.dtype.kind in "iubOUS" or name == "label"):
            label = arr
            break
    if score is None:
        for arr in outputs.values():
            if arr.ndim == 1 and arr.dtype.kind == "f":
                score = arr
                break
            if arr.ndim == 2 and arr.shape[1] == 1 and arr.dtype.kind == "f":
                score = arr[:, 0]
                break
    return label, score
