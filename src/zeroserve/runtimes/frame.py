"""Building the pandas DataFrame a table model was trained on, from one array per column."""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroserve.types import Arrays, ColumnSpec, ColumnType


def to_dataframe(inputs: Arrays, columns: list[ColumnSpec]) -> Any:
    """Columns in the signature's order, each in the dtype the model was fitted with."""
    import pandas as pd

    data: dict[str, Any] = {}
    for col in columns:
        arr = inputs[col.name]
        if arr.ndim == 2 and arr.shape[1] == 1:
            arr = arr.reshape(-1)
        data[col.name] = _series(pd, arr, col)
    return pd.DataFrame(data, copy=False)


def _series(pd: Any, arr: np.ndarray[Any, Any], col: ColumnSpec) -> Any:
    if col.categories is not None or col.dtype == "category":
        values = pd.Series(arr.astype(object) if arr.dtype.kind in "US" else arr)
        return pd.Categorical(values, categories=col.categories)
    if col.type is ColumnType.STRING:
        values = arr.astype(object) if arr.dtype.kind in "US" else arr
        # scikit-learn's imputers and encoders recognise NaN as missing, not None.
        out = np.empty(len(values), dtype=object)
        out[:] = [np.nan if v is None else v for v in values]
        if col.dtype in ("str", "string"):
            return pd.array(out, dtype=col.dtype)
        return out
    if col.type is ColumnType.DATETIME:
        return pd.to_datetime(arr)
    if col.type is ColumnType.BOOL and arr.dtype.kind == "O":
        return pd.array([None if v is None else bool(v) for v in arr], dtype="boolean")
    has_nan = arr.dtype.kind == "f" and bool(np.isnan(arr).any())
    if col.dtype and not has_nan:
        try:
            if arr.dtype != np.dtype(col.dtype):
                return arr.astype(col.dtype)
        except (TypeError, ValueError):  # a pandas-only dtype: pandas converts it
            return pd.array(arr, dtype=col.dtype)
    return arr
