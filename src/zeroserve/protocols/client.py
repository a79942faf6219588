"""The client side of both protocols: requests from arrays or DataFrames, answers to arrays.

Used by the Python client and the CLI; the server side is ``jsonproto`` and ``v2``.
NaN and None become JSON ``null``; datetimes become ISO 8601 strings.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from zeroserve.errors import MalformedPayload
from zeroserve.types import NUMPY_TO_OIP, OIP_TO_NUMPY, Arrays

Data = Any
"""A NumPy array (one input), a dict of arrays or lists (named inputs/columns), or a
pandas DataFrame (columns by name)."""


def to_columns(data: Data) -> dict[str, Any]:
    """Named inputs or columns as JSON-ready lists (nulls for NaN/None/NaT)."""
    if hasattr(data, "columns") and hasattr(data, "to_dict"):  # a pandas DataFrame
        return {str(name): _json_list(data[name].to_numpy()) for name in data.columns}
    if isinstance(data, dict):
        return {str(k): _json_list(np.asarray(v)) for k, v in data.items()}
    raise TypeError(f"expected a DataFrame or a dict of columns, got {type(data).__name__}")


def _json_list(arr: np.ndarray[Any, Any]) -> list[Any]:
    if arr.dtype.kind == "M":
        return [None if np.isnat(v) else str(v) for v in arr]
    values: list[Any] = arr.tolist()
    if arr.dtype.kind in "fO":
        return [_null(v) for v in values]
    return values


def _null(value: Any) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, list):
        return [_null(v) for v in value]
    if hasattr(value, "isoformat"):  # pandas Timestamp / datetime
        return value.isoformat()
    try:
        import pandas as pd

        if value is pd.NaT or value is pd.NA:
            return None
    except ImportError:  # pragma: no cover - pandas is optional
        pass
    return value


def json_request(data: Data, rows: bool = False) -> bytes:
    """A body for ``/v1/endpoints/{name}/invocations``.

    An array goes as ``{"instances": rows}``; a DataFrame or dict as
    ``{"inputs": {name: column}}``, or, with ``rows``, as ``{"instances": [{...}]}``.
    """
    if isinstance(data, np.ndarray):
        return orjson.dumps({"instances": _json_list(data)})
    columns = to_columns(data)
    if rows:
        names = list(columns)
        records = [
            dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)
        ]
        return orjson.dumps({"instances": records})
    return orjson.dumps({"inputs": columns})


def json_response(body: bytes, single: str = "prediction") -> Arrays:
    """The outputs of a JSON-route answer as arrays, whichever form it took.

    A rows answer of a one-output model carries no output name; it is ``single``.
    """
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"the answer is not JSON: {exc}") from None
    if isinstance(answer, dict) and isinstance(answer.get("outputs"), dict):
        return {k: _array(v) for k, v in answer["outputs"].items()}
    if isinstance(answer, dict) and "predictions" in answer:
        predictions = answer["predictions"]
        if predictions and isinstance(predictions[0], dict):
            names = list(predictions[0])
            return {n: _array([p[n] for p in predictions]) for n in names}
        return {single: _array(predictions)}
    raise MalformedPayload('the answer has neither "outputs" nor "predictions"')


def _array(values: Any) -> np.ndarray[Any, Any]:
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        try:
            return np.asarray(values, dtype=np.float64)  # numbers with nulls
        except (TypeError, ValueError):
            return arr
    return arr


def v2_request(data: Data, binary: bool = False) -> tuple[bytes, dict[str, str]]:
    """An Open Inference Protocol request body and its headers.

    A DataFrame or dict gives one input per column or name; a bare array is one
    input named ``input``. With ``binary``, numeric tensors travel as raw bytes.
    """
    if isinstance(data, np.ndarray):
        arrays: dict[str, np.ndarray[Any, Any]] = {"input": data}
    elif hasattr(data, "columns") and hasattr(data, "to_dict"):
        arrays = {str(n): data[n].to_numpy() for n in data.columns}
    elif isinstance(data, dict):
        arrays = {str(k): np.asarray(v) for k, v in data.items()}
    else:
        raise TypeError(f"expected an array, a dict or a DataFrame, got {type(data).__name__}")
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, arr in arrays.items():
        item: dict[str, Any] = {"name": name, "shape": list(arr.shape)}
        if arr.dtype.kind in "OUSM":
            item["datatype"] = "BYTES"
            item["data"] = _json_list(arr.reshape(-1))
        else:
            item["datatype"] = NUMPY_TO_OIP[str(arr.dtype)]
            if binary:
                blob = np.ascontiguousarray(arr).tobytes()
                item["parameters"] = {"binary_data_size": len(blob)}
                blobs.append(blob)
            else:
                item["data"] = _json_list(arr.reshape(-1))
        items.append(item)
    head = orjson.dumps({"inputs": items})
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }


def v2_response(body: bytes, headers: dict[str, str] | None = None) -> Arrays:
    """The outputs of an Open Inference Protocol answer (JSON or binary) as arrays."""
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    length = lowered.get("inference-header-content-length")
    head, tail = (body[: int(length)], body[int(length) :]) if length else (body, b"")
    answer = orjson.loads(head)
    outputs: Arrays = {}
    offset = 0
    for item in answer.get("outputs", []):
        shape, datatype = item["shape"], item["datatype"]
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = tail[offset : offset + int(size)]
            offset += int(size)
            if datatype == "BYTES":
                arr = np.asarray(_unpack_bytes(raw), dtype=object)
            else:
                arr = np.frombuffer(raw, dtype=OIP_TO_NUMPY[datatype]).copy()
        elif datatype == "BYTES":
            arr = np.asarray(item["data"], dtype=object)
        else:
            arr = np.asarray(item["data"], dtype=OIP_TO_NUMPY[datatype])
        outputs[item["name"]] = arr.reshape(shape)
    return outputs


def _unpack_bytes(raw: bytes) -> list[str]:
    values, pos = [], 0
    while pos < len(raw):
        (n,) = struct.unpack_from("<I", raw, pos)
        values.append(raw[pos + 4 : pos + 4 + n].decode())
        pos += 4 + n
    return values
