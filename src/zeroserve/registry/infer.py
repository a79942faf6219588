"""Inferring a model version's signature from the loaded model and its sample.

Inputs are a table (``signatures.py`` decides when) or tensors; outputs come from
one prediction on probe rows; a classifier's class names from the model itself.
"""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from zeroserve.errors import InvalidArtifact, InvalidInput
from zeroserve.registry.mlflow_import import MlflowModel
from zeroserve.registry.signatures import (
    columns_from_frame,
    columns_from_model,
    example_rows,
    handles_missing,
    model_examples,
    with_nullable,
)
from zeroserve.runtimes.base import Runtime
from zeroserve.types import ColumnSpec, ColumnType, Signature, TensorSpec


def _all_numeric(frame: Any) -> bool:
    import pandas as pd

    return all(
        pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in frame.dtypes
    )


def input_spec(runtime: Runtime, sample: np.ndarray[Any, Any] | None) -> list[TensorSpec]:
    """Input tensors from what the loaded model says about itself."""
    allow_nan = bool(sample is not None and np.isnan(sample).any())
    model: Any = getattr(runtime, "model", None)
    if runtime.flavor == "sklearn" and handles_missing(model):
        allow_nan = True
    if runtime.flavor == "sklearn" and hasattr(model, "n_features_in_"):
        names = getattr(model, "feature_names_in_", None)
        dtype = "float32" if sample is not None and sample.dtype == np.float32 else "float64"
        return [
            TensorSpec(
                name="input",
                dtype=dtype,
                shape=[-1, int(model.n_features_in_)],
                allow_nan=allow_nan,
                names=[str(n) for n in names] if names is not None else None,
            )
        ]
    if runtime.flavor == "onnx":
        return [_onnx_spec(i, allow_nan) for i in cast(Any, runtime).session.get_inputs()]
    booster: Any = getattr(runtime, "booster", None)
    if runtime.flavor == "xgboost":
        names = booster.feature_names
        return [
            TensorSpec(
                name="input",
                dtype="float32",
                shape=[-1, booster.num_features()],
                allow_nan=True,
                names=names,
            )
        ]
    if runtime.flavor == "lightgbm":
        return [
            TensorSpec(
                name="input",
                dtype="float64",
                shape=[-1, booster.num_feature()],
                allow_nan=True,
                names=booster.feature_name(),
            )
        ]
    if sample is None:
        raise InvalidArtifact(
            "cannot infer the input signature of this model; pass --sample FILE "
            "(a few rows of inputs) or --signature FILE.json"
        )
    return [
        TensorSpec(
            name="input",
            dtype=str(sample.dtype),
            shape=[-1, *sample.shape[1:]],
            allow_nan=allow_nan,
        )
    ]


ONNX_TYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}


def _onnx_spec(node: Any, allow_nan: bool) -> TensorSpec:
    dtype = ONNX_TYPES.get(node.type)
    if dtype is None:
        raise InvalidArtifact(f"ONNX input {node.name} has unsupported type {node.type}")
    shape = [d if isinstance(d, int) else -1 for d in node.shape]
    return TensorSpec(name=node.name, dtype=dtype, shape=shape, allow_nan=allow_nan)


def probe_inputs(inputs: list[TensorSpec], sample: np.ndarray[Any, Any] | None) -> dict[str, Any]:
    if sample is not None and len(inputs) == 1:
        return {inputs[0].name: sample[:8].astype(inputs[0].dtype)}
    return {
        s.name: np.full(
            [2 if d < 0 else d for d in s.shape], "" if s.dtype == "object" else 0
        ).astype(s.dtype)
        for s in inputs
    }


def output_spec(runtime: Runtime, probe: dict[str, Any]) -> list[TensorSpec]:
    return _specs(runtime.predict(probe))


def infer_signature(runtime: Runtime, sample: Any, mlflow: MlflowModel | None) -> Signature:
    """Inputs (a table or tensors), outputs and class names of a loaded model."""
    frame = sample if hasattr(sample, "columns") else None
    model: Any = getattr(runtime, "model", None)
    columns = table_columns(runtime, frame, mlflow)
    if columns is not None:
        cast(Any, runtime).columns = columns
        probe = example_rows(columns, frame, examples=model_examples(model))
        try:
            outputs = runtime.predict(probe)
        except Exception as exc:
            raise InvalidArtifact(
                f"the model cannot predict on rows of its own columns ("
                f"{', '.join(f'{c.name}: {c.type.value}' for c in columns[:8])}): "
                f"{type(exc).__name__}: {exc}. A string column needs an encoder in the "
                "pipeline (OneHotEncoder, OrdinalEncoder) or a category dtype"
            ) from None
        columns = with_nullable(columns, probe, runtime.predict)
        cast(Any, runtime).columns = columns
        return Signature(
            columns=columns, outputs=_specs(outputs), classes=classes_of(runtime, probe)
        )
    if mlflow is not None and mlflow.tensors and runtime.flavor == "python":
        inputs = mlflow.tensors
    else:
        inputs = input_spec(runtime, _matrix_for_inputs(frame, sample, model))
    probe = probe_inputs(inputs, _matrix_for_inputs(frame, sample, model))
    return Signature(
        inputs=inputs,
        outputs=output_spec(runtime, probe),
        classes=classes_of(runtime, probe),
    )


def _matrix_for_inputs(frame: Any, sample: Any, model: Any) -> np.ndarray[Any, Any] | None:
    if frame is None:
        return cast(np.ndarray[Any, Any] | None, sample)
    names = getattr(model, "feature_names_in_", None)
    order = [str(n) for n in names] if names is not None else [str(c) for c in frame.columns]
    missing = [n for n in order if n not in frame.columns]
    if missing:
        raise InvalidArtifact(
            f"the sample has no column {missing[0]!r}, which the model was fitted with"
        )
    return np.asarray(frame[order].to_numpy(dtype=np.float64))


def table_columns(
    runtime: Runtime, frame: Any, mlflow: MlflowModel | None
) -> list[ColumnSpec] | None:
    """The model's columns when it takes a table, else None (a float matrix)."""
    model: Any = getattr(runtime, "model", None)
    from_model = columns_from_model(model) if runtime.flavor == "sklearn" else None
    declared = mlflow.columns if mlflow is not None else None
    numeric = frame is None or _all_numeric(frame)
    if from_model is None and numeric:
        if (
            runtime.flavor == "python"
            and declared
            and not all(c.type is ColumnType.FLOAT for c in declared)
        ):
            return declared
        return None
    if runtime.flavor not in ("sklearn", "python"):
        raise InvalidArtifact(
            f"a {runtime.flavor} model takes a numeric matrix, but the sample has non-numeric "
            "columns; encode them as numbers, or serve the whole pipeline as scikit-learn"
        )
    if frame is not None:
        columns = columns_from_frame(frame)
        names = getattr(model, "feature_names_in_", None)
        if names is not None:
            known = {c.name: c for c in columns}
            missing = [str(n) for n in names if str(n) not in known]
            if missing:
                raise InvalidArtifact(
                    f"the sample has no column {missing[0]!r}, which the model was fitted with"
                )
            columns = [known[str(n)] for n in names]  # the model's own order
            plain = (ColumnType.FLOAT, ColumnType.INT)
            if from_model is None and all(
                c.type in plain and c.categories is None for c in columns
            ):
                return None  # the model's columns are all numbers: a named float matrix
        return _declared_nulls(columns, declared)
    if declared is not None:
        return declared
    return from_model


def _declared_nulls(
    columns: list[ColumnSpec], declared: list[ColumnSpec] | None
) -> list[ColumnSpec]:
    if not declared:
        return columns
    optional = {c.name for c in declared if c.nullable}
    return [c.model_copy(update={"nullable": True}) if c.name in optional else c for c in columns]


def _specs(outputs: dict[str, Any]) -> list[TensorSpec]:
    return [
        TensorSpec(
            name=name,
            dtype=str(arr.dtype) if arr.dtype.kind not in "OUS" else "object",
            shape=[-1, *arr.shape[1:]],
        )
        for name, arr in outputs.items()
    ]


def classes_of(runtime: Runtime, probe: dict[str, Any]) -> list[Any] | None:
    """A classifier's class names, in the order of its probability columns."""
    model: Any = getattr(runtime, "model", None)
    booster: Any = getattr(runtime, "booster", None)
    found: Any = None
    if runtime.flavor == "sklearn" and hasattr(model, "predict_proba"):
        found = getattr(model, "classes_", None)
    elif runtime.flavor == "xgboost":
        from zeroserve.runtimes.xgboost import booster_classes

        found = booster_classes(booster)
    elif runtime.flavor == "lightgbm":
        from zeroserve.runtimes.lightgbm import booster_classes as lgb_classes

        found = lgb_classes(booster)
    elif runtime.flavor == "onnx":
        found = cast(Any, runtime).classes(probe)
    if found is None:
        return None
    return [c.item() if hasattr(c, "item") else c for c in np.asarray(found, dtype=object)]


def check_signature_outputs(runtime: Runtime, signature: Signature, sample: Any) -> None:
    """A signature the user gave must name the outputs the model really returns."""
    if signature.columns:
        return  # a table's probe needs typed columns; its outputs are checked at first use
    try:
        actual = [s.name for s in output_spec(runtime, probe_inputs(signature.inputs, sample))]
    except Exception as exc:  # the model's own error, on inputs shaped like the signature
        raise InvalidInput(
            "signature.inputs: the model fails on inputs of this shape "
            f"({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
    promised = [s.name for s in signature.outputs]
    if sorted(actual) != sorted(promised):
        raise InvalidInput(
            f"signature.outputs names {', '.join(promised) or 'nothing'}, but the model "
            f"returns {', '.join(actual) or 'nothing'}; name the outputs it returns"
        )
