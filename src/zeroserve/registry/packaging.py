"""Turn a user's model file into an artifact directory with its signature.

This runs in a child process (``python -m zeroserve.registry.packaging``):
inspecting an artifact means loading it, and a broken or hostile file must
not take the server down with it.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any, cast

import numpy as np
from pydantic import BaseModel, Field

from zeroserve.digests import write_digests
from zeroserve.errors import InvalidArtifact, InvalidInput, ZeroserveError
from zeroserve.registry.compile import compile_sklearn_to_onnx
from zeroserve.runtimes import create_runtime
from zeroserve.runtimes.base import REFERENCE_FILE, ArtifactMeta, Runtime
from zeroserve.types import Signature, TensorSpec

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


def read_sample(path: Path) -> np.ndarray[Any, Any]:
    suffix = path.suffix.lower()
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
    return {s.name: np.zeros([2 if d < 0 else d for d in s.shape], dtype=s.dtype) for s in inputs}


def check_signature_outputs(
    runtime: Runtime, signature: Signature, sample: np.ndarray[Any, Any] | None
) -> None:
    """A signature the user gave must name the outputs the model really returns."""
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


def output_spec(runtime: Runtime, probe: dict[str, Any]) -> list[TensorSpec]:
    outputs = runtime.predict(probe)
    return [
        TensorSpec(
            name=name,
            dtype=str(arr.dtype) if arr.dtype.kind not in "OUS" else "object",
            shape=[-1, *arr.shape[1:]],
        )
        for name, arr in outputs.items()
    ]


def package(req: PackageRequest) -> PackageResult:
    """Copy the model into ``req.dest``, write its metadata and reference sample."""
    if not req.source.is_file():
        raise InvalidArtifact(f"{req.source} is not a file")
    flavor, fmt = detect(req.source, req.flavor)
    req.dest.mkdir(parents=True, exist_ok=True)
    filename = "model" + req.source.suffix.lower()
    shutil.copy2(req.source, req.dest / filename)
    meta = ArtifactMeta(
        flavor=flavor,
        file=filename,
        format=fmt,
        trusted=req.trusted,
        entrypoint=req.entrypoint if flavor == "python" else None,
    )
    runtime = create_runtime(meta)
    runtime.load(req.dest)
    sample = read_sample(req.sample) if req.sample else None
    signature = req.signature
    if signature is None:
        inputs = input_spec(runtime, sample)
        signature = Signature(
            inputs=inputs, outputs=output_spec(runtime, probe_inputs(inputs, sample))
        )
    else:
        check_signature_outputs(runtime, signature, sample)
    result = PackageResult(flavor=flavor, signature=signature)
    if req.compile == "onnx":
        result, onnx_bytes = _compile(req, runtime, signature, sample)
        shutil.rmtree(req.dest)
        req.dest.mkdir(parents=True)
        (req.dest / "source").mkdir()
        shutil.copy2(req.source, req.dest / "source" / filename)
        (req.dest / "model.onnx").write_bytes(onnx_bytes)
        meta = ArtifactMeta(
            flavor="onnx", file="model.onnx", format="onnx", options={"compiled_from": flavor}
        )
    elif req.compile:
        raise InvalidArtifact(f"--compile {req.compile}: only 'onnx' is supported")
    meta.signature = result.signature
    meta.write(req.dest)
    if sample is not None:
        np.save(req.dest / REFERENCE_FILE, sample)
    runtime.unload()
    write_digests(req.dest)  # last: it covers every file written above
    return result


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
