"""Open Inference Protocol (KServe v2) requests and responses over HTTP/JSON.

Supports the binary tensor data extension (``Inference-Header-Content-Length``)
that Triton's clients use by default: tensors travel as raw bytes after the
JSON header instead of as JSON numbers.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import orjson

from zeroserve.errors import InvalidInput, MalformedPayload, ModelError
from zeroserve.protocols.table import columns_to_table
from zeroserve.protocols.validation import check_shape, first_bool, may_hold_bools
from zeroserve.types import NUMPY_TO_OIP, OIP_TO_NUMPY, Arrays, Signature, TensorSpec

HEADER_LENGTH = "inference-header-content-length"
MAX_ELEMENTS = 2**40
"""More elements than any body can hold: shapes above it are refused before any arithmetic."""


def header_length(raw: bytes | None) -> int | None:
    """The ``Inference-Header-Content-Length`` value, or None when the header is absent."""
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise MalformedPayload(
            f"Inference-Header-Content-Length must be the byte length of the JSON header, "
            f"a non-negative integer; got {raw[:40].decode('latin-1')!r}"
        )
    return int(text)


def _object(value: Any, where: str) -> dict[str, Any]:
    """An optional ``parameters``-style field: null is {}, anything else must be an object."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedPayload(f"{where} must be an object; got {type(value).__name__}")
    return value


def parse_request(body: bytes, header_length: int | None) -> tuple[dict[str, Any], bytes]:
    """The JSON part of a request and the binary tail (empty without the extension)."""
    if header_length is not None:
        if header_length > len(body) or header_length < 0:
            raise MalformedPayload(
                f"Inference-Header-Content-Length is {header_length} but the body has "
                f"{len(body)} bytes"
            )
        head, tail = body[:header_length], body[header_length:]
    else:
        head, tail = body, b""
    try:
        request = orjson.loads(head)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"request body is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
        raise MalformedPayload(
            'an inference request is an object with an "inputs" list, e.g. '
            '{"inputs": [{"name": "input", "shape": [1, 4], '
            '"datatype": "FP32", "data": [...]}]}'
        )
    _object(request.get("parameters"), "parameters")
    if "outputs" in request and not isinstance(request["outputs"], list | None):
        raise MalformedPayload('"outputs" must be a list like [{"name": "label"}]')
    if not isinstance(request.get("id"), str | None):
        raise MalformedPayload('"id" must be a string')
    may_hold_bools.set(b"true" in head or b"false" in head)
    return request, tail


def decode_inputs(request: dict[str, Any], tail: bytes, signature: Signature) -> Arrays:
    if signature.columns is not None:
        return _decode_table(request, tail, signature)
    arrays: Arrays = {}
    offset = 0
    by_name = {s.name: s for s in signature.inputs}
    for i, item in enumerate(request["inputs"]):
        if not isinstance(item, dict):
            raise MalformedPayload(f"inputs[{i}] must be an object with name, shape, datatype")
        name = item.get("name")
        spec = by_name.get(name) if isinstance(name, str) else None
        if spec is None:
            known = ", ".join(by_name)
            raise InvalidInput(f"inputs[{i}] names {name!r}; this model takes: {known}")
        shape, datatype = item.get("shape"), item.get("datatype")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise MalformedPayload(f"inputs[{i}].shape must be a list of non-negative integers")
        if math.prod(shape) > MAX_ELEMENTS:
            raise InvalidInput(f"inputs[{i}].shape {shape} holds more values than any request")
        if not isinstance(datatype, str) or datatype not in OIP_TO_NUMPY:
            raise InvalidInput(
                f"inputs[{i}].datatype {datatype!r} is not an OIP datatype; "
                f"this input takes {spec.datatype}"
            )
        where = f"inputs[{i}] ({name})"
        if datatype != spec.datatype and not (
            datatype.startswith("FP") and spec.datatype.startswith("FP")
        ):
            raise InvalidInput(f"{where} is {datatype}; this input takes {spec.datatype}")
        size = _object(item.get("parameters"), f"inputs[{i}].parameters").get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise MalformedPayload(
                    f"inputs[{i}].parameters.binary_data_size must be a non-negative integer "
                    f"(the tensor's byte length); got {size!r}"
                )
            arr = _from_binary(tail, offset, size, datatype, shape, where)
            offset += size
        else:
            data = item.get("data")
            if data is None:
                raise MalformedPayload(f"{where} has no data")
            arr = _from_json(data, datatype, shape, where)
        arrays[spec.name] = _conform(arr, spec, where)
    missing = set(by_name) - set(arrays)
    if missing:
        raise InvalidInput(f"missing inputs: {', '.join(sorted(missing))}")
    return arrays


def _decode_table(request: dict[str, Any], tail: bytes, signature: Signature) -> Arrays:
    """One input per column, each of shape [N] (or [N, 1]); BYTES for strings and dates."""
    columns: dict[str, Any] = {}
    offset = 0
    for i, item in enumerate(request["inputs"]):
        if not isinstance(item, dict):
            raise MalformedPayload(f"inputs[{i}] must be an object with name, shape, datatype")
        name, shape, datatype = item.get("name"), item.get("shape"), item.get("datatype")
        if not isinstance(name, str):
            raise MalformedPayload(f"inputs[{i}] has no name; name it after its column")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise MalformedPayload(f"inputs[{i}].shape must be a list of non-negative integers")
        if datatype not in OIP_TO_NUMPY:
            raise InvalidInput(f"inputs[{i}].datatype {datatype!r} is not an OIP datatype")
        where = f"inputs[{i}] ({name})"
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise InvalidInput(f"{where} has shape {shape}; a column is [N] or [N, 1]")
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            columns[name] = _from_binary(tail, offset, int(size), datatype, shape, where)
            offset += int(size)
        else:
            data = item.get("data")
            if not isinstance(data, list):
                raise MalformedPayload(f"{where} has no data list")
            if len(data) == 1 and isinstance(data[0], list):
                data = data[0]
            columns[name] = [v[0] if isinstance(v, list) and len(v) == 1 else v for v in data]
    return columns_to_table(columns, signature, "inputs")


def _from_binary(
    tail: bytes, offset: int, size: int, datatype: str, shape: list[int], where: str
) -> np.ndarray[Any, Any]:
    if offset + size > len(tail):
        raise MalformedPayload(f"{where}: binary_data_size {size} runs past the end of the body")
    if datatype == "BYTES":
        raise InvalidInput(f"{where}: binary BYTES tensors are not supported; send them as JSON")
    dtype = np.dtype(OIP_TO_NUMPY[datatype])
    count = math.prod(shape)  # Python ints: no int64 wrap-around
    if count * dtype.itemsize != size:
        raise InvalidInput(
            f"{where}: shape {shape} of {datatype} needs {count * dtype.itemsize} bytes, got {size}"
        )
    return np.frombuffer(tail, dtype=dtype, count=count, offset=offset).reshape(shape)


def _from_json(data: Any, datatype: str, shape: list[int], where: str) -> np.ndarray[Any, Any]:
    dtype = np.dtype(OIP_TO_NUMPY[datatype])
    try:
        arr = np.asarray(data, dtype=object if dtype.kind == "O" else None)
    except ValueError:
        raise InvalidInput(f"{where}: data is not a regular array of numbers") from None
    if dtype.kind != "O":
        if arr.dtype.kind not in "biuf":
            bad = next(
                (v for v in arr.reshape(-1).tolist() if not isinstance(v, int | float)), None
            )
            raise InvalidInput(f"{where}: data holds {bad!r}, not a number ({datatype})")
        if dtype.kind in "iu" and arr.dtype.kind == "f":
            raise InvalidInput(f"{where}: {datatype} data must be integers")
        if dtype.kind != "b" and (arr.dtype.kind == "b" or may_hold_bools.get()):
            bad = first_bool(data)
            if bad is not None:
                raise InvalidInput(f"{where}: data{bad} is a boolean, not a number ({datatype})")
        arr = arr.astype(dtype, copy=False)
    expected = math.prod(shape)
    if arr.size != expected:
        raise InvalidInput(f"{where}: shape {shape} holds {expected} values, data has {arr.size}")
    return arr.reshape(shape)


def _conform(arr: np.ndarray[Any, Any], spec: TensorSpec, where: str) -> np.ndarray[Any, Any]:
    if arr.ndim == 1 and spec.shape[1:] == [1] and spec.shape[0] < 0:
        arr = arr.reshape(-1, 1)  # a column [N] for an [N, 1] input
    if arr.dtype != np.dtype(spec.dtype):
        if arr.dtype.kind == "f" and np.dtype(spec.dtype).kind == "f":
            arr = arr.astype(spec.dtype)
        else:
            raise InvalidInput(
                f"{where} is {NUMPY_TO_OIP.get(str(arr.dtype), arr.dtype)}; "
                f"this input takes {spec.datatype}"
            )
    check_shape(arr, spec, where)
    if not spec.allow_nan and arr.dtype.kind == "f" and np.isnan(arr).any():
        raise InvalidInput(
            f"{where} contains NaN; input {spec.name!r} does not accept missing "
            "values: impute them before sending"
        )
    return arr


def requested_outputs(request: dict[str, Any], signature: Signature) -> tuple[list[str], set[str]]:
    """Output names to return, and which of them go back as binary."""
    all_names = [s.name for s in signature.outputs]
    binary_all = bool(_object(request.get("parameters"), "parameters").get("binary_data_output"))
    wanted = request.get("outputs")
    if not isinstance(wanted, list | None):
        raise MalformedPayload('"outputs" must be a list like [{"name": "label"}]')
    if not wanted:
        return all_names, set(all_names) if binary_all else set()
    names, binary = [], set()
    for i, out in enumerate(wanted):
        name = out.get("name") if isinstance(out, dict) else None
        if name not in all_names:
            raise InvalidInput(
                f"outputs[{i}] names {name!r}; this model returns: {', '.join(all_names)}"
            )
        names.append(name)
        if _object(out.get("parameters"), f"outputs[{i}].parameters").get(
            "binary_data", binary_all
        ):
            binary.add(name)
    return names, binary


def encode_response(
    model: str,
    version: int,
    request_id: Any,
    outputs: Arrays,
    names: list[str],
    binary: set[str],
    signature: Signature | None = None,
) -> tuple[bytes, dict[str, str]]:
    """The answer; with ``signature``, a classifier's probability outputs carry
    ``parameters.classes`` (the class of each column)."""
    classes = signature.classes if signature is not None else None
    items: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name in names:
        arr = outputs.get(name)
        if arr is None:
            raise ModelError(
                f"the model returned outputs {', '.join(outputs) or 'none'} but its signature "
                f"promises {name!r}; register the version again with a matching signature"
            )
        if arr.dtype.kind == "M":
            arr = np.datetime_as_string(arr).astype(object)
        datatype = "BYTES" if arr.dtype.kind in "OUS" else NUMPY_TO_OIP.get(str(arr.dtype))
        if datatype is None:
            raise ModelError(f"output {name!r} has dtype {arr.dtype}, which OIP cannot carry")
        item: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(arr.shape)}
        if name in binary:
            blob = _bytes_blob(arr) if datatype == "BYTES" else np.ascontiguousarray(arr).tobytes()
            item["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            item["data"] = arr.reshape(-1).tolist()
        if classes is not None and arr.ndim == 2 and arr.shape[1] == len(classes):
            item.setdefault("parameters", {})["classes"] = classes
        items.append(item)
    body: dict[str, Any] = {"model_name": model, "model_version": str(version), "outputs": items}
    if request_id is not None:
        body["id"] = request_id
    head = orjson.dumps(body)
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(head)),
    }


def _bytes_blob(arr: np.ndarray[Any, Any]) -> bytes:
    parts = []
    for value in arr.reshape(-1):
        raw = value if isinstance(value, bytes) else str(value).encode()
        parts.append(struct.pack("<I", len(raw)) + raw)
    return b"".join(parts)


def model_metadata(
    name: str, versions: list[int], platform: str, signature: Signature
) -> dict[str, Any]:
    def tensor(s: TensorSpec) -> dict[str, Any]:
        return {"name": s.name, "datatype": s.datatype, "shape": s.shape}

    return {
        "name": name,
        "versions": [str(v) for v in versions],
        "platform": platform,
        "inputs": [tensor(s) for s in signature.inputs],
        "outputs": [tensor(s) for s in signature.outputs],
    }
