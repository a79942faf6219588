"""The plain JSON protocol: ``{"instances": [...]}`` in, ``{"predictions": [...]}`` out,
or ``{"inputs": {...}}`` in, ``{"outputs": {...}}`` out (TF Serving's conventions)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from zeroserve.errors import MalformedPayload
from zeroserve.protocols.table import columns_to_table, records_to_table
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
    if signature.columns is not None:
        return _decode_table(request, signature)
    if "instances" in request:
        return instances_to_arrays(request["instances"], signature), True
    if "inputs" in request:
        return columns_to_arrays(request["inputs"], signature), False
    raise MalformedPayload(
        'send {"instances": [[...], ...]} (rows) or {"inputs": {"name": [...]}} (columns)'
    )


def _decode_table(request: dict[str, Any], signature: Signature) -> tuple[Arrays, bool]:
    if "instances" in request:
        instances = request["instances"]
        if not isinstance(instances, list) or not instances:
            raise MalformedPayload('"instances" must be a non-empty list of rows')
        return records_to_table(instances, signature, "instances"), True
    if "inputs" in request:
        inputs = request["inputs"]
        if not isinstance(inputs, dict) or not inputs:
            raise MalformedPayload('"inputs" must be an object of columns: {"name": [values]}')
        return columns_to_table(inputs, signature, "inputs"), False
    names = ", ".join(c.name for c in signature.columns or ())
    raise MalformedPayload(
        'send {"instances": [{"column": value, ...}, ...]} (rows) or '
        f'{{"inputs": {{"column": [values]}}}} (columns); the columns are: {names}'
    )


def encode(outputs: Arrays, rows: bool, signature: Signature | None = None) -> bytes:
    """The answer; with ``signature``, only the outputs it lists (a variant's ``outputs``)."""
    classes = None
    if signature is not None:
        if len(signature.outputs) != len(outputs):
            outputs = {s.name: outputs[s.name] for s in signature.outputs if s.name in outputs}
        classes = signature.classes
    if rows:
        body: dict[str, Any] = {"predictions": _rows(outputs)}
    else:
        body = {"outputs": {k: _jsonable(v) for k, v in outputs.items()}}
    if classes is not None:
        body["classes"] = classes  # the columns of the probabilities, in order
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(arr: np.ndarray[Any, Any]) -> Any:
    if arr.dtype.kind == "M":
        return np.datetime_as_string(arr).tolist()
    native = arr.dtype.byteorder in "=|" and arr.dtype != np.float16
    if arr.dtype.kind in "biuf" and native and arr.flags.c_contiguous:
        return arr
    return arr.tolist()


def _rows(outputs: Arrays) -> Any:
    if len(outputs) == 1:
        return _jsonable(next(iter(outputs.values())))
    columns = {k: _listed(v) for k, v in outputs.items()}
    return [
        dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)
    ]


def _listed(arr: np.ndarray[Any, Any]) -> Any:
    if arr.dtype.kind == "M":
        return np.datetime_as_string(arr).tolist()
    return arr.tolist()
