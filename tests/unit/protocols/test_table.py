"""Table signatures on both protocols: by name, cast to each column's type, named refusals."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from zeroserve.errors import InvalidInput, MalformedPayload
from zeroserve.protocols import client, jsonproto, v2
from zeroserve.types import ColumnSpec, ColumnType, Signature, TensorSpec

SIG = Signature(
    columns=[
        ColumnSpec(name="city", type=ColumnType.STRING),
        ColumnSpec(name="income", type=ColumnType.FLOAT, nullable=True),
        ColumnSpec(name="age", type=ColumnType.INT),
        ColumnSpec(name="member", type=ColumnType.BOOL),
        ColumnSpec(name="seen", type=ColumnType.DATETIME),
    ],
    outputs=[TensorSpec(name="label", dtype="object", shape=[-1])],
    classes=["no", "yes"],
)
ROW = {"city": "rome", "income": 1.5, "age": 30, "member": True, "seen": "2024-05-01T10:00:00"}


def test_columns_are_inputs_in_signature_order() -> None:
    assert [s.name for s in SIG.inputs] == ["city", "income", "age", "member", "seen"]
    assert [s.datatype for s in SIG.inputs] == ["BYTES", "FP64", "INT64", "BOOL", "BYTES"]


def test_instances_are_matched_by_name_not_position() -> None:
    shuffled = dict(reversed(list(ROW.items())))
    other = {**ROW, "city": "oslo", "income": None}
    arrays, rows = jsonproto.decode({"instances": [shuffled, other]}, SIG)
    assert rows
    assert arrays["city"].tolist() == ["rome", "oslo"]
    assert arrays["age"].dtype == np.int64 and arrays["age"].tolist() == [30, 30]
    assert np.isnan(arrays["income"][1]) and arrays["income"][0] == 1.5
    assert arrays["seen"].dtype == np.dtype("datetime64[ns]")


def test_inputs_by_column() -> None:
    arrays, rows = jsonproto.decode({"inputs": {k: [v, v] for k, v in ROW.items()}}, SIG)
    assert not rows and arrays["member"].tolist() == [True, True]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"age": "thirty"}, "row 1, column 'age': the string 'thirty' is not an integer (int)"),
        ({"age": 2.5}, "row 1, column 'age': 2.5 is not an integer"),
        ({"city": None}, "row 1, column 'city' is null; this column does not accept missing"),
        ({"city": 3}, "row 1, column 'city': 3 is not a string"),
        ({"member": "yes"}, "column 'member': the string 'yes' is not true or false"),
        ({"seen": "yesterday"}, "column 'seen': the string 'yesterday' is not an ISO 8601"),
    ],
)
def test_a_value_that_cannot_be_cast_names_row_column_and_type(
    change: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        jsonproto.decode({"instances": [ROW, {**ROW, **change}]}, SIG)
    assert message in info.value.message


def test_missing_and_unknown_columns_are_named() -> None:
    row = {k: v for k, v in ROW.items() if k != "age"} | {"colour": "red"}
    with pytest.raises(InvalidInput) as info:
        jsonproto.decode({"instances": [row]}, SIG)
    assert "missing column: age" in info.value.message
    assert "unknown column: colour" in info.value.message
    with pytest.raises(InvalidInput, match="missing column: age"):
        jsonproto.decode({"inputs": {k: [v] for k, v in row.items()}}, SIG)


def test_positional_rows_are_refused_for_a_table() -> None:
    with pytest.raises(InvalidInput, match="send each row as an object"):
        jsonproto.decode({"instances": [list(ROW.values())]}, SIG)
    with pytest.raises(MalformedPayload, match="the columns are: city"):
        jsonproto.decode({"rows": []}, SIG)


def test_v2_one_input_per_column_with_bytes_for_strings() -> None:
    import pandas as pd

    frame = pd.DataFrame([ROW, {**ROW, "income": None}])
    frame["seen"] = pd.to_datetime(frame["seen"])
    body, _ = client.v2_request(frame[list(reversed(frame.columns))])
    request, tail = v2.parse_request(body, None)
    assert {i["name"]: i["datatype"] for i in request["inputs"]}["city"] == "BYTES"
    arrays = v2.decode_inputs(request, tail, SIG)
    assert arrays["city"].tolist() == ["rome", "rome"]
    assert np.isnan(arrays["income"][1])
    assert arrays["seen"][0] == np.datetime64("2024-05-01T10:00:00", "ns")
    bad = {
        "inputs": [
            {**i, "data": ["x", "y"]} if i["name"] == "age" else i for i in request["inputs"]
        ]
    }
    with pytest.raises(InvalidInput, match="row 0, column 'age'"):
        v2.decode_inputs(bad, b"", SIG)


def test_answers_carry_the_classes_and_only_the_selected_outputs() -> None:
    sig = SIG.model_copy(
        update={
            "outputs": [
                TensorSpec(name="label", dtype="object", shape=[-1]),
                TensorSpec(name="probabilities", dtype="float64", shape=[-1, 2]),
            ]
        }
    )
    outputs = {"label": np.array(["no"], dtype=object), "probabilities": np.array([[0.9, 0.1]])}
    body = orjson.loads(jsonproto.encode(outputs, False, sig))
    assert body == {
        "outputs": {"label": ["no"], "probabilities": [[0.9, 0.1]]},
        "classes": ["no", "yes"],
    }
    only = sig.select_outputs(["label"])
    assert orjson.loads(jsonproto.encode(outputs, True, only))["predictions"] == ["no"]
    head, _ = v2.encode_response("m", 1, None, outputs, ["probabilities"], set(), sig)
    assert orjson.loads(head)["outputs"][0]["parameters"]["classes"] == ["no", "yes"]
    with pytest.raises(ValueError, match="it returns: label, probabilities"):
        sig.select_outputs(["score"])


def test_client_codecs_round_trip() -> None:
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    body, headers = client.v2_request(x, binary=True)
    request, tail = v2.parse_request(body, int(headers["inference-header-content-length"]))
    sig = Signature(
        inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 3])],
        outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 3])],
    )
    arrays = v2.decode_inputs(request, tail, sig)
    payload, out_headers = v2.encode_response("m", 1, None, {"y": arrays["input"]}, ["y"], {"y"})
    np.testing.assert_array_equal(client.v2_response(payload, out_headers)["y"], x)
    answer = jsonproto.encode({"y": x}, False)
    np.testing.assert_array_equal(client.json_response(answer)["y"], x)
    assert orjson.loads(client.json_request(x)) == {"instances": x.tolist()}
