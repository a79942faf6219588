"""Every malformed request from the security review is a 4xx that names the field."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from zeroserve.errors import BadRequest, ModelError
from zeroserve.protocols import jsonproto, v2
from zeroserve.protocols.validation import check_shape
from zeroserve.types import Signature, TensorSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 4])],
    outputs=[TensorSpec(name="label", dtype="int64", shape=[-1])],
)
ROW = [0.1, 0.2, 0.3, 0.4]


def item(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 4], "datatype": "FP64", "data": ROW, **overrides}


def decode_v2(body: dict[str, Any], tail: bytes = b"", length: int | None = None) -> Any:
    raw = orjson.dumps(body)
    request, rest = v2.parse_request(raw + tail, len(raw) if tail or length else None)
    arrays = v2.decode_inputs(request, rest, SIG)
    v2.requested_outputs(request, SIG)
    return arrays


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [item(datatype={})]}, "inputs[0].datatype"),
        ({"inputs": [item(datatype=["FP64"])]}, "inputs[0].datatype"),
        ({"inputs": [item(datatype=[None, None])]}, "inputs[0].datatype"),
        ({"inputs": [item(parameters=[1])]}, "inputs[0].parameters"),
        ({"inputs": [item(parameters="x")]}, "inputs[0].parameters"),
        ({"inputs": [item()], "parameters": [1]}, "parameters"),
        ({"inputs": [item()], "outputs": 5}, '"outputs"'),
        ({"inputs": [item()], "outputs": [{"name": "label", "parameters": [1]}]}, "outputs[0]"),
        ({"inputs": [item(shape=[4611686018427387904, 4], data=[])]}, "inputs[0]"),
        ({"inputs": [item(shape=[2**32, 2**32], data=[])]}, "inputs[0]"),
        ({"inputs": [item(shape=[True, 4])]}, "inputs[0].shape"),
        ({"inputs": [item(shape=[])]}, "inputs[0]"),
        ({"inputs": [item(data=[True, 0.2, 0.3, 0.4])]}, "data[0]"),
        ({"inputs": [item(data=[True, False, True, True])]}, "data[0]"),
        ({"inputs": [item()], "id": 42}, '"id"'),
    ],
)
def test_malformed_v2_json_requests_are_4xx_naming_the_field(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(BadRequest) as caught:
        decode_v2(body)
    assert 400 <= caught.value.status_code < 500
    assert field in caught.value.message


@pytest.mark.parametrize("size", ["abc", 1.5, True, -8, [8]])
def test_binary_data_size_must_be_a_non_negative_integer(size: object) -> None:
    x = np.zeros((1, 4)).tobytes()
    body = {"inputs": [item(data=None, parameters={"binary_data_size": size})]}
    with pytest.raises(BadRequest, match="binary_data_size"):
        decode_v2(body, x)


def test_binary_shape_whose_product_wraps_is_refused() -> None:
    body = {"inputs": [item(data=None, shape=[2**32, 2**32], parameters={"binary_data_size": 0})]}
    with pytest.raises(BadRequest, match=r"inputs\[0\]"):
        decode_v2(body, b"", length=1)


@pytest.mark.parametrize("raw", [b"9" * 5000, b"-5", b"abc", "\u0661".encode()])
def test_header_length_must_be_a_short_ascii_integer(raw: bytes) -> None:
    with pytest.raises(BadRequest, match="Inference-Header-Content-Length"):
        v2.header_length(raw)
    assert v2.header_length(b"120") == 120
    assert v2.header_length(None) is None


def test_booleans_are_not_numbers_in_the_json_protocol() -> None:
    for body in (b'{"instances": [[true, 0.2, 0.3, 0.4]]}', b'{"instances": [[1, 2, 3, false]]}'):
        with pytest.raises(BadRequest, match=r"instances\[0\]\[\d\] is a boolean"):
            jsonproto.decode(jsonproto.load_json(body), SIG)
    arrays, _ = jsonproto.decode(jsonproto.load_json(b'{"instances": [[1, 2, 3, 4]]}'), SIG)
    assert arrays["input"].tolist() == [[1.0, 2.0, 3.0, 4.0]]


def test_a_boolean_input_still_takes_booleans() -> None:
    sig = Signature(
        inputs=[TensorSpec(name="flags", dtype="bool", shape=[-1, 2])],
        outputs=[TensorSpec(name="y", dtype="int64", shape=[-1])],
    )
    arrays, _ = jsonproto.decode(jsonproto.load_json(b'{"instances": [[true, false]]}'), sig)
    assert arrays["flags"].dtype == np.bool_


def test_scalar_shaped_spec_or_value_is_a_4xx() -> None:
    scalar = TensorSpec(name="x", dtype="float64", shape=[])
    with pytest.raises(BadRequest, match="scalar shape"):
        check_shape(np.zeros(3), scalar, "inputs.x")
    with pytest.raises(BadRequest, match="single value"):
        check_shape(np.float64(1.0).reshape(()), SIG.inputs[0], "inputs.input")


def test_outputs_that_do_not_match_the_signature_name_the_output() -> None:
    with pytest.raises(ModelError, match="'label'") as caught:
        v2.encode_response("m", 1, None, {"other": np.zeros(1)}, ["label"], set())
    assert caught.value.status_code == 422
