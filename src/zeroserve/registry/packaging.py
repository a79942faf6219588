"""Turn a user's model file into an artifact directory with its signature.

This runs in a child process (``python -m zeroserve.registry.packaging``):
inspecting an artifact means loading it, and a broken or hostile file must
not take the server down with it.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, Field

from zeroserve.errors import InvalidArtifact, UntrustedArtifact, ZeroserveError
from zeroserve.registry import mlflow_import
from zeroserve.registry.compile import compile_sklearn_to_onnx
from zeroserve.registry.mlflow_import import MlflowModel, is_mlflow_dir
from zeroserve.registry.python_dir import (
    check_requirements,
    copy_tree,
    entry_module,
    is_archive,
    unpack,
)
from zeroserve.registry.signatures import (
    columns_from_frame,
    columns_from_model,
    example_rows,
    handles_missing,
    model_examples,
    with_nullable,
)
from zeroserve.runtimes import create_runtime
from zeroserve.runtimes.base import REFERENCE_FILE, ArtifactMeta, Runtime
from zeroserve.types import ColumnSpec, ColumnType, Signature, TensorSpec

REFERENCE_ROWS = 10_000

# suffix -> (flavor, format)
SUFFIXES: dict[str, tuple[str, str]] = {
    ".skops": ("sklearn", "skops"),
    ".joblib": ("sklearn", "joblib"),
    ".pkl": ("sklearn", "pickle"),
    ".pickle": ("sklearn", "pickle"),
    ".onnx": ("onnx", "onnx"),
    ".ubj": ("xgboost", "ubj"),
    ".py": ("python", "python"),
    ".xgb": ("xgboost", "xgb"),
}
FLAVOR_FORMATS: dict[str, dict[str, str]] = {
    "xgboost": {".ubj": "ubj", ".json": "json"},
    "lightgbm": {".txt": "txt", ".lgb": "txt", ".model": "txt"},
}


class PackageRequest(BaseModel):
    source: Path
    dest: Path
    flavor: str | None = None
    trusted: bool = False
    entrypoint: str | None = None
    sample: Path | None = None
    signature: Signature | None = None
    compile: str | None = Field(None, description="'onnx' to compile a scikit-learn model")
    tolerance: float = 1e-5


class PackageResult(BaseModel):
    flavor: str
    signature: Signature
    metrics: dict[str, Any] = Field(default_factory=dict)
    compiled_from: str | None = None


def detect(source: Path, flavor: str | None) -> tuple[str, str]:
    suffix = source.suffix.lower()
    if flavor in FLAVOR_FORMATS:
        fmt = FLAVOR_FORMATS[flavor].get(suffix)
        if fmt is None:
            allowed = ", ".join(FLAVOR_FORMATS[flavor])
            raise InvalidArtifact(f"a {flavor} model must be a native model file ({allowed})")
        return flavor, fmt
    if suffix in SUFFIXES:
        detected, fmt = SUFFIXES[suffix]
        if flavor and flavor != detected:
            raise InvalidArtifact(f"{source.name} looks like a {detected} artifact, not {flavor}")
        return detected, fmt
    raise InvalidArtifact(
        f"cannot tell the flavor of {source.name}; pass --flavor "
        "(sklearn: .skops/.joblib/.pkl, onnx: .onnx, xgboost: .ubj/.json, "
        "lightgbm: .txt, python: .py)"
    )


def read_sample(path: Path) -> Any:
    """Rows of inputs: a pandas DataFrame for Parquet and CSV with a header, else an array."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet"):
        frame = _read_frame(path)
        if frame is not None:
            return frame.iloc[:REFERENCE_ROWS].reset_index(drop=True)
    if suffix == ".npy":
        data = np.load(path, allow_pickle=False)
    elif suffix == ".csv":
        data = np.genfromtxt(path, delimiter=",", skip_header=_has_header(path), dtype=np.float64)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        data = np.column_stack([c.to_numpy() for c in pq.read_table(path).columns])
    else:
        raise InvalidArtifact(f"sample {path.name}: use .npy, .csv or .parquet")
    if data.ndim == 1:
        data = data.reshape(1, -1)
    return np.asarray(data[:REFERENCE_ROWS])


def _read_frame(path: Path) -> Any:
    try:
        import pandas as pd
    except ImportError:
        return None
    if path.suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    if not _has_header(path):
        return None
    return pd.read_csv(path)


def _all_numeric(frame: Any) -> bool:
    import pandas as pd

    return all(
        pd.api.types.is_numeric_dtype(t) and not pd.api.types.is_bool_dtype(t) for t in frame.dtypes
    )


def _has_header(path: Path) -> int:
    first = path.open().readline().split(",")
    try:
        [float(v) for v in first]
    except ValueError:
        return 1
    return 0


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


@dataclass
class Source:
    """Where the model's files are and how to read them, after unpacking and MLflow."""

    root: Path  # the directory whose files are copied into the artifact (or the file)
    flavor: str
    fmt: str
    file: str
    entrypoint: str | None = None
    mlflow: MlflowModel | None = None


def resolve_source(req: PackageRequest, work: Path) -> Source:
    """A file, a model directory (python or MLflow), or either uploaded as an archive."""
    source = req.source
    if source.is_file() and is_archive(source):
        source = unpack(source, work / "unpacked")
    if source.is_dir():
        if is_mlflow_dir(source):
            model = mlflow_import.read(source)
            if model.needs_trust and not req.trusted:
                what = (
                    "a python_function model runs its own code"
                    if model.flavor == "python"
                    else f"MLflow saved this {model.mlflow_flavor} model as a pickle "
                    f"({model.file}): loading it runs code from the file"
                )
                raise UntrustedArtifact(f"{what}; register it with --trust if you trust it")
            return Source(source, model.flavor, model.fmt, model.file, model.entrypoint, model)
        if req.flavor not in (None, "python"):
            raise InvalidArtifact(
                f"a {req.flavor} model is one file; a directory is a python model (with "
                "model.py) or an MLflow model (with an MLmodel file)"
            )
        module, cls = entry_module(source, req.entrypoint)
        check_requirements(source)
        return Source(source, "python", "python", module, cls)
    if not source.is_file():
        raise InvalidArtifact(f"{req.source} is not a file or a model directory")
    flavor, fmt = detect(source, req.flavor)
    return Source(source, flavor, fmt, "model" + source.suffix.lower(), req.entrypoint)


def package(req: PackageRequest) -> PackageResult:
    """Copy the model into ``req.dest``, write its metadata and reference sample."""
    src = resolve_source(req, req.dest.parent / "work")
    req.dest.mkdir(parents=True, exist_ok=True)
    if src.root.is_dir():
        copy_tree(src.root, req.dest)
        if src.mlflow is not None and src.flavor == "python":
            copy_tree(src.root, req.dest / "mlflow_model")
            (req.dest / src.file).write_text(mlflow_import.PYFUNC_CODE)
    else:
        shutil.copy2(src.root, req.dest / src.file)
    meta = ArtifactMeta(
        flavor=src.flavor,
        file=src.file,
        format=src.fmt,
        trusted=req.trusted,
        entrypoint=src.entrypoint if src.flavor == "python" else None,
    )
    runtime = create_runtime(meta)
    runtime.load(req.dest)
    sample = read_sample(req.sample) if req.sample else None
    if sample is None and src.mlflow is not None:
        sample = src.mlflow.sample
    signature = req.signature or infer_signature(runtime, sample, src.mlflow)
    result = PackageResult(flavor=src.flavor, signature=signature)
    matrix = _matrix(sample, signature)
    if req.compile == "onnx":
        if signature.columns is not None:
            raise InvalidArtifact(
                "--compile onnx converts float-matrix models; this model takes a table of "
                "named columns, so serve it as it is (drop --compile)"
            )
        result, onnx_bytes = _compile(req, runtime, signature, matrix)
        source = src.root
        shutil.rmtree(req.dest)
        req.dest.mkdir(parents=True)
        (req.dest / "source").mkdir()
        shutil.copy2(source, req.dest / "source" / src.file)
        (req.dest / "model.onnx").write_bytes(onnx_bytes)
        meta = ArtifactMeta(
            flavor="onnx", file="model.onnx", format="onnx", options={"compiled_from": src.flavor}
        )
    elif req.compile:
        raise InvalidArtifact(f"--compile {req.compile}: only 'onnx' is supported")
    meta.signature = result.signature
    meta.write(req.dest)
    if matrix is not None:
        np.save(req.dest / REFERENCE_FILE, matrix)
    runtime.unload()
    return result


def _matrix(sample: Any, signature: Signature) -> np.ndarray[Any, Any] | None:
    """The sample as the float matrix a tensor model takes, columns in the model's order."""
    if sample is None or signature.columns is not None:
        return None
    if isinstance(sample, np.ndarray):
        return sample
    spec = signature.inputs[0]
    names = spec.names or [str(c) for c in sample.columns]
    missing = [n for n in names if n not in sample.columns]
    if missing:
        raise InvalidArtifact(
            f"the sample has no column {missing[0]!r}, which the model takes; "
            f"the model's columns are: {', '.join(names[:20])}"
        )
    try:
        return np.asarray(sample[names].to_numpy(dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise InvalidArtifact(f"the sample's columns are not all numbers: {exc}") from None


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


def _compile(
    req: PackageRequest, runtime: Runtime, signature: Signature, sample: np.ndarray[Any, Any] | None
) -> tuple[PackageResult, bytes]:
    if runtime.flavor != "sklearn":
        raise InvalidArtifact(
            f"--compile onnx applies to scikit-learn models, not {runtime.flavor}"
        )
    model: Any = cast(Any, runtime).model
    report = compile_sklearn_to_onnx(model, signature, sample, req.tolerance)
    result = PackageResult(
        flavor="onnx",
        signature=report.signature,
        metrics=report.summary(),
        compiled_from="sklearn",
    )
    return result, report.onnx_bytes


def main() -> None:
    request = PackageRequest.model_validate_json(sys.argv[1])
    try:
        result = package(request)
        print(json.dumps({"ok": True, "result": result.model_dump(mode="json")}))
    except ZeroserveError as exc:
        print(
            json.dumps(
                {"ok": False, "status": exc.status_code, "code": exc.code, "error": exc.message}
            )
        )
    except Exception as exc:  # the artifact itself failed; say so, not where
        print(
            json.dumps(
                {
                    "ok": False,
                    "status": 400,
                    "code": "invalid_artifact",
                    "error": f"could not load the artifact: {type(exc).__name__}: {exc}",
                }
            )
        )


if __name__ == "__main__":
    main()
