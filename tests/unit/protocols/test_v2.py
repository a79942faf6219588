import numpy as np
import orjson
import pytest

from zeroserve.errors import InvalidInput, MalformedPayload
from zeroserve.protocols import v2
from zeroserve.types import Signature, TensorSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 4])],
    outputs=[
        TensorSpec(name="label", dtype="int64", shape=[-1]),
        TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2]),
    ],
)


def request(data: object, **extra: object) -> bytes:
    item = {"name": "input", "shape": [2, 4], "datatype": "FP32", "data": data, **extra}
    return orjson.dumps({"id": "r1", "inputs": [item]})


def test_json_tensor_flat_or_nested() -> None:
    for data in ([0.5] * 8, [[0.5] * 4] * 2):
        req, tail = v2.parse_request(request(data), None)
        arrays = v2.decode_inputs(req, tail, SIG)
        assert arrays["input"].shape == (2, 4)
        assert arrays["input"].dtype == np.float32


def test_binary_tensor_extension_round_trip() -> None:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "shape": [2, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    )
    req, tail = v2.parse_request(head + x.tobytes(), len(head))
    arrays = v2.decode_inputs(req, tail, SIG)
    np.testing.assert_array_equal(arrays["input"], x)
    names, binary = v2.requested_outputs(req, SIG)
    assert names == ["probabilities"]
    assert binary == {"probabilities"}
    proba = np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32)
    body, headers = v2.encode_response("m", 3, None, {"probabilities": proba}, names, binary)
    length = int(headers["inference-header-content-length"])
    meta = orjson.loads(body[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == proba.nbytes
    np.testing.assert_array_equal(np.frombuffer(body[length:], np.float32).reshape(2, 2), proba)


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        (b"{", MalformedPayload, "not valid JSON"),
        (b'{"inputs": 3}', MalformedPayload, '"inputs" list'),
        (request([0.5] * 7), InvalidInput, "holds 8 values, data has 7"),
        (request([0.5] * 8, datatype="INT64"), InvalidInput, "takes FP32"),
        (request([0.5] * 8, name="x"), InvalidInput, "names 'x'"),
        (request([0.5] * 8, datatype="FLOAT"), InvalidInput, "not an OIP datatype"),
        (request(["a"] * 8), InvalidInput, "not a number"),
    ],
)
def test_bad_requests(body: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        req, tail = v2.parse_request(body, None)
        v2.decode_inputs(req, tail, SIG)


def test_wrong_feature_count_is_named() -> None:
    body = orjson.dumps(
        {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}
    )
    req, tail = v2.parse_request(body, None)
    with pytest.raises(InvalidInput, match="expected 4 values per row"):
        v2.decode_inputs(req, tail, SIG)
