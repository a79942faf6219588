import numpy as np
import pytest

from zeroserve.errors import InvalidInput
from zeroserve.protocols.validation import columns_to_arrays, instances_to_arrays, to_tensor
from zeroserve.types import Signature, TensorSpec

SPEC = TensorSpec(name="input", dtype="float32", shape=[-1, 3])
SIG = Signature(inputs=[SPEC], outputs=[])
NAMED = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 2], names=["amount", "age"])],
    outputs=[],
)


def test_rows_become_one_float32_matrix() -> None:
    arrays = instances_to_arrays([[1, 2, 3], [4.5, 5, 6]], SIG)
    assert arrays["input"].dtype == np.float32
    assert arrays["input"].shape == (2, 3)


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[1, 2]], "each row of instances has 2 values; expected 3 values per row"),
        ([[1, 2, 3], [1, 2]], "instances[1] has 2 values"),
        ([[1, "x", 3]], "instances[0][1] is the string 'x', not a number"),
        ([[1, None, 3]], "instances[0][1] is null"),
        ([[1, [2], 3]], "instances[0][1] is a list"),
        ([1, 2, 3], None),  # a single row without the batch dimension is accepted
        ([], "non-empty list"),
    ],
)
def test_bad_rows_are_named(instances: list[object], message: str | None) -> None:
    if message is None:
        assert instances_to_arrays(instances, SIG)["input"].shape == (1, 3)
        return
    with pytest.raises(InvalidInput, match=message.replace("[", r"\[").replace("]", r"\]")):
        instances_to_arrays(instances, SIG)


def test_nan_is_refused_unless_allowed() -> None:
    with pytest.raises(InvalidInput, match="does not accept missing values"):
        to_tensor(np.array([[1.0, np.nan, 3.0]]), SPEC, "x")
    allowed = SPEC.model_copy(update={"allow_nan": True})
    out = to_tensor([[1, None, 3]], allowed, "x")
    assert np.isnan(out[0, 1])


def test_integer_inputs_refuse_fractions() -> None:
    spec = TensorSpec(name="n", dtype="int64", shape=[-1])
    assert to_tensor([1.0, 2.0], spec, "n").dtype == np.int64
    with pytest.raises(InvalidInput, match="integers"):
        to_tensor([1.5], spec, "n")


def test_columns_by_feature_name() -> None:
    arrays = columns_to_arrays({"age": [30, 40], "amount": [9.5, 1.0]}, NAMED)
    np.testing.assert_array_equal(arrays["input"], [[9.5, 30], [1.0, 40]])
    with pytest.raises(InvalidInput, match="missing columns: age"):
        columns_to_arrays({"amount": [1.0]}, NAMED)
    with pytest.raises(InvalidInput, match="unknown columns: zip"):
        columns_to_arrays({"amount": [1.0], "age": [1], "zip": [1]}, NAMED)
    with pytest.raises(InvalidInput, match="same length"):
        columns_to_arrays({"amount": [1.0, 2.0], "age": [1]}, NAMED)


def test_columns_by_input_name_and_objects_as_instances() -> None:
    arrays = columns_to_arrays({"input": [[1, 2, 3]]}, SIG)
    assert arrays["input"].shape == (1, 3)
    rows = instances_to_arrays([{"amount": 1.0, "age": 2}], NAMED)
    np.testing.assert_array_equal(rows["input"], [[1.0, 2.0]])
