"""The plain JSON protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out,
or ``{"inputs": {...}}`` in, ``{"outputs": {...}}`` out (TF Serving's conventions)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from zeroserve.errors import MalformedPayload
from zeroserve.protocols.validation import columns_to_arrays, instances_to_arrays, may_hold_bools
from zeroserve.types import Arrays, Signature


def load_json(body: bytes) -> dict[str, Any]:
    if not body:
        raise MalformedPayload('the request body is empty; send JSON like {"instances": [[...]]}')
    try:
        request = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict):
        raise MalformedPayload('the request body must be a JSON object like {"instances": [...]}')
    may_hold_bools.set(b"true" in body or b"false" in body)
    return request


def decode(request: dict[str, Any], signature: Signature) -> tuple[Arrays, bool]:
    """Tensors for the model, and whether the answer goes back as rows."""
    if "instances" in request:
        return instances_to_arrays(request["instances"], signature), True
    if "inputs" in request:
        return columns_to_arrays(request["inputs"], signature), False
    raise MalformedPayload(
        'send {"instances": [[...], ...]} (rows) or {"inputs": {"name": [...]}} (columns)'
    )


def encode(outputs: Arrays, rows: bool) -> bytes:
    if rows:
        return orjson.dumps({"predictions": _rows(outputs)}, option=orjson.OPT_SERIALIZE_NUMPY)
    columns = {k: _jsonable(v) for k, v in outputs.items()}
    return orjson.dumps({"outputs": columns}, option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(arr: np.ndarray[Any, Any]) -> Any:
    native = arr.dtype.byteorder in "=|" and arr.dtype != np.float16
    if arr.dtype.kind in "biuf" and native and arr.flags.c_contiguous:
        return arr
    return arr.tolist()


def _rows(outputs: Arrays) -> Any:
    if len(outputs) == 1:
        return _jsonable(next(iter(outputs.values())))
    columns = {k: v.tolist() for k, v in outputs.items()}
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]
