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

from zeroserve.digests import write_digests
from zeroserve.errors import InvalidArtifact, UntrustedArtifact, ZeroserveError
from zeroserve.registry import mlflow_import
from zeroserve.registry.compile import compile_sklearn_to_onnx
from zeroserve.registry.infer import check_signature_outputs, infer_signature
from zeroserve.registry.mlflow_import import MlflowModel, is_mlflow_dir
from zeroserve.registry.python_dir import (
    check_requirements,
    copy_tree,
    entry_module,
    is_archive,
    unpack,
)
from zeroserve.runtimes import create_runtime
from zeroserve.runtimes.base import REFERENCE_FILE, ArtifactMeta, Runtime
from zeroserve.types import Signature

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


def _has_header(path: Path) -> int:
    first = path.open().readline().split(",")
    try:
        [float(v) for v in first]
    except ValueError:
        return 1
    return 0


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
    if req.signature is not None:
        check_signature_outputs(runtime, req.signature, sample)
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
    write_digests(req.dest)  # last: it covers every file written above
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
                {
                    "ok": False,
                    "status": exc.status_code,
                    "code": exc.code,
                    "error": exc.message,
                    "details": exc.details,
                },
                default=str,
            )
        )
    except MemoryError:
        message = "inspecting the artifact needed more memory than its limit " + (
            "(ZEROSERVE_SANDBOX_MEMORY_MB)"
        )
        print(
            json.dumps({"ok": False, "status": 400, "code": "invalid_artifact", "error": message})
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
