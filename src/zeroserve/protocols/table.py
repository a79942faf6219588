"""Table inputs: named, typed columns checked and cast one column at a time.

A table signature (``Signature.columns``) travels as one 1-D array per column:
floats and ints as numbers (NaN for a null in a nullable column), strings and
nullable booleans as objects (None for null), datetimes as ``datetime64[ns]``.
Every refusal names the row, the column and the type it expected.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from zeroserve.errors import InvalidInput
from zeroserve.types import Arrays, ColumnSpec, ColumnType, Signature

EXPECTED = {
    ColumnType.FLOAT: "a number",
    ColumnType.INT: "an integer",
    ColumnType.BOOL: "true or false",
    ColumnType.STRING: "a string",
    ColumnType.DATETIME: "an ISO 8601 date or time string",
}


def describe(col: ColumnSpec) -> str:
    return f"{col.name} ({col.type.value}{', nullable' if col.nullable else ''})"


def check_names(given: Any, signature: Signature) -> None:
    """A 4xx naming every missing or unknown column."""
    names = [c.name for c in signature.columns or ()]
    missing = [n for n in names if n not in given]
    unknown = [n for n in given if n not in set(names)]
    if not missing and not unknown:
        return
    parts = []
    if missing:
        parts.append(f"missing column{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if unknown:
        parts.append(f"unknown column{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    takes = ", ".join(describe(c) for c in signature.columns or ())
    raise InvalidInput("; ".join(parts) + f" (the model takes: {takes})")


def columns_to_table(columns: Mapping[str, Any], signature: Signature, where: str) -> Arrays:
    """``{"column": [values...]}`` to one checked array per column, in signature order."""
    check_names(columns, signature)
    arrays: Arrays = {}
    rows = -1
    for col in signature.columns or ():
        arr = to_column(columns[col.name], col, where)
        if rows >= 0 and len(arr) != rows:
            raise InvalidInput(
                f"{where}: column {col.name!r} has {len(arr)} values, the others {rows}; "
                "every column needs one value per row"
            )
        rows = len(arr)
        arrays[col.name] = arr
    if rows == 0:
        raise InvalidInput(f"{where} is empty; send at least one row")
    return arrays


def records_to_table(records: list[Any], signature: Signature, where: str) -> Arrays:
    """Rows as objects keyed by column name (``{"instances": [{...}, ...]}``)."""
    names = [c.name for c in signature.columns or ()]
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InvalidInput(
                f"{where}[{i}] is {_kind(record)}; this model takes named columns, so send "
                f"each row as an object like {{{', '.join(repr(n) for n in names[:3])}, ...}}"
            )
        if record.keys() != set(names):
            check_names(record, signature)
    columns = {n: [r[n] for r in records] for n in names}
    return columns_to_table(columns, signature, where)


def to_column(values: Any, col: ColumnSpec, where: str) -> np.ndarray[Any, Any]:
    """One column's values, cast to the type the signature gives it, or a 4xx."""
    if isinstance(values, np.ndarray):
        if values.ndim == 2 and values.shape[1] == 1:
            values = values.reshape(-1)
        if values.ndim != 1:
            raise InvalidInput(
                f"{where}: column {col.name!r} must be a list of values, one per row; "
                f"got shape {list(values.shape)}"
            )
        if values.dtype.kind == "M" and col.type is ColumnType.DATETIME:
            return np.asarray(values, dtype="datetime64[ns]")
        fast = _numeric_fast(values, col)
        if fast is not None:
            return fast
        values = values.tolist()
    if not isinstance(values, list):
        raise InvalidInput(
            f"{where}: column {col.name!r} must be a list of values, one per row; "
            f"got {_kind(values)}"
        )
    if values and isinstance(values[0], list) and all(len(v) == 1 for v in values if v):
        values = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in values]
    if col.type in (ColumnType.FLOAT, ColumnType.INT):
        try:
            arr = np.asarray(values)
        except ValueError:
            arr = np.asarray(values, dtype=object)
        fast = _numeric_fast(arr, col) if arr.ndim == 1 else None
        if fast is not None:
            return fast
    return _slow(values, col, where)


def _numeric_fast(arr: np.ndarray[Any, Any], col: ColumnSpec) -> np.ndarray[Any, Any] | None:
    """The cast without looking at each value, when the dtype already says it is fine."""
    kind = arr.dtype.kind
    if col.type is ColumnType.FLOAT and kind in "iuf":
        out = arr.astype(np.float64, copy=False)
        return out if col.nullable or not np.isnan(out).any() else None
    if col.type is ColumnType.INT and kind in "iu":
        return arr.astype(np.float64 if col.nullable else np.int64, copy=False)
    if col.type is ColumnType.BOOL and kind == "b" and not col.nullable:
        return arr
    return None


def _slow(values: list[Any], col: ColumnSpec, where: str) -> np.ndarray[Any, Any]:
    """Value by value, so the first bad one can be named."""
    cast = _CASTS[col.type]
    out: list[Any] = []
    for row, value in enumerate(values):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not col.nullable:
                raise InvalidInput(
                    f"{where}: row {row}, column {col.name!r} is null; this column does not "
                    f"accept missing values (it takes {EXPECTED[col.type]})"
                )
            out.append(None)
            continue
        try:
            out.append(cast(value))
        except (TypeError, ValueError):
            raise InvalidInput(
                f"{where}: row {row}, column {col.name!r}: {_kind(value)} is not "
                f"{EXPECTED[col.type]} ({col.type.value})"
            ) from None
    return _pack(out, col)


def _pack(values: list[Any], col: ColumnSpec) -> np.ndarray[Any, Any]:
    dtype = col.tensor().dtype
    if col.type is ColumnType.DATETIME:
        return np.array(
            [np.datetime64("NaT") if v is None else v for v in values], dtype="datetime64[ns]"
        )
    if dtype == "object":
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
        return arr
    return np.array([math.nan if v is None else v for v in values], dtype=dtype)


def _float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError
    return float(value)


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError
    if isinstance(value, float | np.floating) and not float(value).is_integer():
        raise ValueError
    return int(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError
    return bool(value)


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


def _datetime(value: Any) -> Any:
    if isinstance(value, np.datetime64):
        return value.astype("datetime64[ns]")
    if isinstance(value, datetime.datetime):
        return np.datetime64(value.replace(tzinfo=None).isoformat(), "ns")
    if isinstance(value, datetime.date):
        return np.datetime64(value.isoformat(), "ns")
    if not isinstance(value, str):
        raise TypeError
    return np.datetime64(value.rstrip("Z"), "ns")


_CASTS: dict[ColumnType, Any] = {
    ColumnType.FLOAT: _float,
    ColumnType.INT: _int,
    ColumnType.BOOL: _bool,
    ColumnType.STRING: _string,
    ColumnType.DATETIME: _datetime,
}


def _kind(item: Any) -> str:
    if isinstance(item, str):
        return f"the string {item[:40]!r}"
    if item is None:
        return "null"
    if isinstance(item, bool | int | float):
        return repr(item)
    return f"a {type(item).__name__}"
