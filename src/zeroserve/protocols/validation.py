"""Turn decoded JSON into tensors that match a signature, or say exactly why not.

The fast path is one ``np.asarray`` per input and a few checks; only when it
fails do we walk the payload to name the offending row and value.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import numpy as np

from zeroserve.errors import InvalidInput
from zeroserve.types import Arrays, Signature, TensorSpec

NUMERIC_KINDS = "biuf"
may_hold_bools: ContextVar[bool] = ContextVar("may_hold_bools", default=True)
"""False when the request body has no ``true``/``false`` token (the decoders set it after a
byte scan), so the walk that refuses booleans as numbers runs only when one may be there."""


def first_bool(value: Any, where: str = "") -> str | None:
    """The index path (``[2][0]``) of the first boolean in nested lists, or None."""
    if isinstance(value, bool):
        return where
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, bool | list):
                found = first_bool(item, f"{where}[{i}]")
                if found is not None:
                    return found
    return None


def expected(spec: TensorSpec) -> str:
    shape = spec.describe_shape()
    if len(spec.shape) == 2 and spec.shape[1] > 0:
        return f"{spec.shape[1]} values per row ({spec.name}: {spec.dtype} {shape})"
    return f"{spec.name}: {spec.dtype} {shape}"


def to_tensor(value: Any, spec: TensorSpec, where: str) -> np.ndarray[Any, Any]:
    """Convert ``value`` (nested lists or an array) to ``spec``'s dtype and check its shape."""
    try:
        arr = np.asarray(value)
    except ValueError:
        raise InvalidInput(_diagnose(value, spec, where)) from None
    if arr.dtype.kind not in NUMERIC_KINDS:
        if spec.dtype == "object":
            if arr.dtype.kind not in "USO":
                raise InvalidInput(f"{where}: input {spec.name!r} takes strings (BYTES)")
            arr = arr.astype(object)
            if arr.ndim == 1 and spec.shape[1:] == [1]:
                arr = arr.reshape(-1, 1)
            check_shape(arr, spec, where)
            return arr
        nullable = arr.dtype.kind == "O" and spec.allow_nan and spec.dtype.startswith("float")
        if nullable:
            try:
                arr = np.array(value, dtype=spec.dtype)  # null becomes NaN
            except (ValueError, TypeError):
                raise InvalidInput(_diagnose(value, spec, where)) from None
        else:
            raise InvalidInput(_diagnose(value, spec, where))
    if spec.dtype != "bool" and (arr.dtype.kind == "b" or may_hold_bools.get()):
        bad = first_bool(value)
        if bad is not None:
            raise InvalidInput(
                f"{where}{bad} is a boolean; input {spec.name!r} takes numbers ({spec.dtype})"
            )
    if arr.dtype != spec.dtype:
        arr = _cast(arr, spec, where)
    if arr.ndim == 1 and spec.shape[1:] == [1] and spec.shape[0] < 0:
        arr = arr.reshape(-1, 1)  # a column of scalars for an [N, 1] input (ONNX per-column)
    elif arr.ndim == len(spec.shape) - 1 and arr.ndim >= 1 and spec.shape[0] < 0:
        arr = arr.reshape(1, *arr.shape)  # one row given without the batch dimension
    check_shape(arr, spec, where)
    if not spec.allow_nan and arr.dtype.kind == "f" and np.isnan(arr).any():
        row = int(np.argwhere(np.isnan(arr))[0][0])
        raise InvalidInput(
            f"{where}[{row}] contains NaN or null; input {spec.name!r} does not accept missing "
            "values: impute them before sending"
        )
    return arr


def _cast(arr: np.ndarray[Any, Any], spec: TensorSpec, where: str) -> np.ndarray[Any, Any]:
    target = np.dtype(spec.dtype)
    fractional = target.kind in "iu" and arr.dtype.kind == "f"
    if fractional and not np.all(np.mod(arr[np.isfinite(arr)], 1) == 0):
        raise InvalidInput(
            f"{where}: input {spec.name!r} takes integers ({spec.dtype}); got fractional numbers"
        )
    if target.kind == "b" and arr.dtype.kind != "b":
        raise InvalidInput(f"{where}: input {spec.name!r} takes booleans, got {arr.dtype}")
    return arr.astype(target, copy=False)


def check_shape(arr: np.ndarray[Any, Any], spec: TensorSpec, where: str) -> None:
    if arr.ndim == 0 or not spec.shape:
        raise InvalidInput(
            f"{where} is a single value; expected {expected(spec)}: send a list of rows"
            if arr.ndim == 0
            else f"input {spec.name!r} has a scalar shape in the model's signature; "
            "register the version again with a batch dimension, e.g. [-1]"
        )
    if arr.ndim != len(spec.shape):
        raise InvalidInput(
            f"{where} has shape {list(arr.shape)}; expected {expected(spec)}"
            + (": send a list of rows, e.g. [[...], [...]]" if arr.ndim < len(spec.shape) else "")
        )
    for axis, (got, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
        if want >= 0 and got != want:
            if axis == 1 and arr.ndim == 2:
                raise InvalidInput(
                    f"each row of {where} has {got} values; expected {expected(spec)}"
                )
            raise InvalidInput(
                f"{where} has {got} values along axis {axis}; expected {expected(spec)}"
            )
    if arr.shape[0] == 0:
        raise InvalidInput(f"{where} is empty; send at least one row")


def _diagnose(value: Any, spec: TensorSpec, where: str) -> str:
    """Name the first row or value that stops ``value`` from being a tensor of ``spec``."""
    if not isinstance(value, list):
        return f"{where} must be a list of rows; got {type(value).__name__}"
    width = spec.shape[1] if len(spec.shape) == 2 else None
    for i, row in enumerate(value):
        if len(spec.shape) >= 2 and not isinstance(row, list):
            return f"{where}[{i}] is {_kind(row)}, not a list; expected {expected(spec)}"
        items = row if isinstance(row, list) else [row]
        if width is not None and width > 0 and len(items) != width:
            return f"{where}[{i}] has {len(items)} values; expected {expected(spec)}"
        for j, item in enumerate(items):
            if item is None:
                return (
                    f"{where}[{i}][{j}] is null; input {spec.name!r} does not accept "
                    "missing values: impute them before sending"
                )
            if isinstance(item, list):
                return f"{where}[{i}][{j}] is a list; expected a number ({expected(spec)})"
            is_bool = isinstance(item, bool) and spec.dtype != "bool"
            if not isinstance(item, int | float) or is_bool:
                return f"{where}[{i}][{j}] is {_kind(item)}, not a number ({spec.dtype})"
    return f"{where} is not a regular array; expected {expected(spec)}"


def _kind(item: Any) -> str:
    if isinstance(item, str):
        return f"the string {item[:40]!r}"
    if item is None:
        return "null"
    return f"a {type(item).__name__}"


def rows_of(arrays: Arrays) -> int:
    return int(next(iter(arrays.values())).shape[0])


def instances_to_arrays(instances: Any, signature: Signature) -> Arrays:
    """``{"instances": [...]}``: rows of one input, or objects keyed by input name."""
    if not isinstance(instances, list) or not instances:
        raise InvalidInput('"instances" must be a non-empty list of rows')
    if len(signature.inputs) == 1:
        spec = signature.inputs[0]
        if isinstance(instances[0], dict):
            return columns_to_arrays(_transpose(instances), signature)
        return {spec.name: to_tensor(instances, spec, "instances")}
    if not all(isinstance(i, dict) for i in instances):
        names = ", ".join(s.name for s in signature.inputs)
        raise InvalidInput(
            f"this model takes several inputs ({names}); send each instance "
            "as an object keyed by input name"
        )
    return columns_to_arrays(_transpose(instances), signature)


def _transpose(instances: list[Any]) -> dict[str, list[Any]]:
    columns: dict[str, list[Any]] = {}
    for i, item in enumerate(instances):
        if not isinstance(item, dict):
            raise InvalidInput(
                f"instances[{i}] is {_kind(item)}; expected an object like the others"
            )
        for key, val in item.items():
            columns.setdefault(key, []).append(val)
    return columns


def columns_to_arrays(inputs: Any, signature: Signature) -> Arrays:
    """``{"inputs": {...}}``: tensors by input name, or columns by feature name."""
    if not isinstance(inputs, dict) or not inputs:
        raise InvalidInput('"inputs" must be an object of named inputs or columns')
    names = {s.name for s in signature.inputs}
    if set(inputs) <= names:
        absent = names - set(inputs)
        if absent:
            raise InvalidInput(f"missing inputs: {', '.join(sorted(absent))}")
        arrays = {
            s.name: to_tensor(inputs[s.name], s, f"inputs.{s.name}") for s in signature.inputs
        }
        _same_rows(arrays)
        return arrays
    spec = signature.inputs[0]
    if len(signature.inputs) == 1 and spec.names:
        missing = [n for n in spec.names if n not in inputs]
        unknown = [n for n in inputs if n not in set(spec.names)]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(
                    f"missing columns: {', '.join(missing[:10])}"
                    + (" ..." if len(missing) > 10 else "")
                )
            if unknown:
                parts.append(f"unknown columns: {', '.join(unknown[:10])}")
            raise InvalidInput("; ".join(parts) + f" (the model takes {len(spec.names)} columns)")
        lengths = {len(v) if isinstance(v, list) else -1 for v in inputs.values()}
        if len(lengths) != 1 or -1 in lengths:
            raise InvalidInput('every column in "inputs" must be a list of the same length')
        matrix = [[inputs[n][i] for n in spec.names] for i in range(lengths.pop())]
        return {spec.name: to_tensor(matrix, spec, "inputs")}
    expected_names = ", ".join(sorted(names))
    raise InvalidInput(
        f"unknown inputs {', '.join(sorted(set(inputs) - names))}; "
        f"this model takes: {expected_names}"
    )


def _same_rows(arrays: Arrays) -> None:
    rows = {name: a.shape[0] for name, a in arrays.items() if a.ndim}
    if len(set(rows.values())) > 1:
        raise InvalidInput(f"inputs have different numbers of rows: {rows}")
