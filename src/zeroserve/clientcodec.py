"""How the client turns DataFrames and arrays into JSON columns and back.

pandas is imported only when the caller passes a DataFrame, so the client
works without it.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np


def is_dataframe(data: Any) -> bool:
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(data, pandas.DataFrame)


def frame_columns(frame: Any) -> dict[str, list[Any]]:
    """``{column: [values]}`` by name; NaN and NaT become null, datetimes ISO text."""
    import pandas as pd

    columns: dict[str, list[Any]] = {}
    for name in frame.columns:
        series = frame[name]
        if pd.api.types.is_datetime64_any_dtype(series.dtype):
            values = [None if pd.isna(v) else v.isoformat() for v in series]
        elif series.dtype.kind in "biuf":
            values = series.to_numpy().tolist()
            if series.dtype.kind == "f" and series.isna().any():
                values = [None if np.isnan(v) else v for v in values]
        else:
            values = [None if _missing(v) else _plain(v) for v in series]
        columns[str(name)] = values
    return columns


def _missing(value: Any) -> bool:
    import pandas as pd

    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists and arrays are not missing values
        return False


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def to_array(values: Any, dtype: str | None) -> np.ndarray[Any, Any]:
    """An output as the signature's dtype (JSON has lost float32 and int widths)."""
    arr = np.asarray(values)
    if dtype and dtype != "object" and arr.dtype.kind in "biuf":
        return arr.astype(dtype, copy=False)
    return arr


def arrays_to_frame(arrays: dict[str, np.ndarray[Any, Any]], index: Any) -> Any:
    """One column per 1-D output; ``name_0``, ``name_1``, ... for each column of a 2-D one."""
    import pandas as pd

    columns: dict[str, Any] = {}
    for name, arr in arrays.items():
        if arr.ndim == 2:
            for j in range(arr.shape[1]):
                columns[f"{name}_{j}"] = arr[:, j]
        elif arr.ndim <= 1:
            columns[name] = arr
        else:
            columns[name] = list(arr)
    rows = len(next(iter(columns.values()))) if columns else 0
    return pd.DataFrame(columns, index=index if index is not None and len(index) == rows else None)
