"""Reading an MLflow model directory (an ``MLmodel`` file) without re-saving anything.

The flavor decides how zeroserve serves it: ``onnx``, ``xgboost`` and
``lightgbm`` boosters as their native files; ``sklearn`` (and LightGBM's or
XGBoost's scikit-learn wrappers, which MLflow pickles) through the scikit-learn
runtime, which needs ``--trust`` for a pickle; any other ``python_function``
model as a trusted Python model that loads it with ``mlflow.pyfunc``. The
MLmodel's signature gives the column names, types and required flags; its input
example is the sample. MLflow itself is only needed for pyfunc models and for
``runs:/`` / ``models:/`` URIs (the CLI resolves those).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroserve.errors import InvalidArtifact
from zeroserve.types import ColumnSpec, ColumnType, TensorSpec

MLMODEL = "MLmodel"
FLAVOR_ORDER = ("onnx", "xgboost", "lightgbm", "sklearn", "python_function")
COLUMN_TYPES = {
    "double": (ColumnType.FLOAT, "float64"),
    "float": (ColumnType.FLOAT, "float32"),
    "long": (ColumnType.INT, "int64"),
    "integer": (ColumnType.INT, "int32"),
    "boolean": (ColumnType.BOOL, "bool"),
    "string": (ColumnType.STRING, "object"),
    "datetime": (ColumnType.DATETIME, "datetime64[ns]"),
}
PYFUNC_WRAPPER = "zeroserve_mlflow_pyfunc.py"
PYFUNC_CODE = '''"""zeroserve's wrapper around an MLflow pyfunc model (written at registration)."""

from pathlib import Path


class Model:
    def load(self, artifact_dir):
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(str(Path(artifact_dir) / "mlflow_model"))

    def predict(self, inputs):
        return self.model.predict(inputs)
'''


@dataclass
class MlflowModel:
    """What zeroserve needs from an MLflow model directory."""

    flavor: str
    file: str = ""
    fmt: str = ""
    entrypoint: str | None = None
    needs_trust: bool = False
    columns: list[ColumnSpec] | None = None
    tensors: list[TensorSpec] | None = None
    sample: Any = None
    mlflow_flavor: str = ""
    notes: list[str] = field(default_factory=list)


def is_mlflow_dir(path: Path) -> bool:
    return path.is_dir() and (path / MLMODEL).is_file()


def read(directory: Path) -> MlflowModel:
    import yaml

    try:
        mlmodel = yaml.safe_load((directory / MLMODEL).read_text())
    except yaml.YAMLError as exc:
        raise InvalidArtifact(f"{MLMODEL} is not valid YAML: {exc}") from None
    flavors: dict[str, Any] = (mlmodel or {}).get("flavors") or {}
    chosen = next((f for f in FLAVOR_ORDER if f in flavors), None)
    if chosen is None:
        raise InvalidArtifact(
            f"this MLflow model has flavors {', '.join(flavors) or 'none'}; zeroserve serves "
            "sklearn, xgboost, lightgbm, onnx and python_function models"
        )
    conf = flavors[chosen] or {}
    model = _flavor(chosen, conf, flavors, directory)
    model.mlflow_flavor = chosen
    model.columns, model.tensors = _signature(mlmodel.get("signature"))
    model.sample = _input_example(directory, mlmodel.get("saved_input_example_info"))
    return model


def _flavor(name: str, conf: dict[str, Any], flavors: dict[str, Any], root: Path) -> MlflowModel:
    if name == "onnx":
        return MlflowModel("onnx", _file(root, conf.get("data", "model.onnx")), "onnx")
    if name == "xgboost":
        data = _file(root, conf.get("data", "model.xgb"))
        if "sklearn" in str(conf.get("model_class", "")) and data.endswith(".pkl"):
            return MlflowModel("sklearn", data, "pickle", needs_trust=True)
        return MlflowModel("xgboost", data, str(conf.get("model_format", "ubj")))
    if name == "lightgbm":
        data = _file(root, conf.get("data", "model.lgb"))
        if data.endswith(".pkl"):  # the scikit-learn wrapper, pickled by MLflow
            return MlflowModel("sklearn", data, "pickle", needs_trust=True)
        return MlflowModel("lightgbm", data, "txt")
    if name == "sklearn":
        fmt = str(conf.get("serialization_format", "cloudpickle"))
        data = _file(root, conf.get("pickled_model", "model.pkl"))
        if fmt == "skops":
            return MlflowModel("sklearn", data, "skops")
        return MlflowModel("sklearn", data, "pickle", needs_trust=True)
    return MlflowModel("python", PYFUNC_WRAPPER, "python", entrypoint="Model", needs_trust=True)


def _file(root: Path, name: str) -> str:
    if not (root / name).exists():
        raise InvalidArtifact(f"the MLflow model names {name} but the directory has no such file")
    return name


def _signature(sig: Any) -> tuple[list[ColumnSpec] | None, list[TensorSpec] | None]:
    if not isinstance(sig, dict) or not sig.get("inputs"):
        return None, None
    try:
        inputs = json.loads(sig["inputs"]) if isinstance(sig["inputs"], str) else sig["inputs"]
    except json.JSONDecodeError as exc:
        raise InvalidArtifact(f"the MLmodel signature's inputs are not JSON: {exc}") from None
    if inputs and all(i.get("type") == "tensor" for i in inputs):
        tensors = []
        for n, item in enumerate(inputs):
            tspec = item.get("tensor-spec") or {}
            tensors.append(
                TensorSpec(
                    name=item.get("name") or ("input" if len(inputs) == 1 else f"input_{n}"),
                    dtype=str(np.dtype(tspec.get("dtype", "float64"))),
                    shape=[int(d) for d in tspec.get("shape", [-1])],
                )
            )
        return None, tensors
    columns = []
    for n, item in enumerate(inputs):
        kind = COLUMN_TYPES.get(str(item.get("type")))
        name = item.get("name")
        if kind is None:
            raise InvalidArtifact(
                f"MLflow signature column {name or n!r} has type {item.get('type')!r}, which "
                f"zeroserve does not serve; use one of {', '.join(COLUMN_TYPES)}"
            )
        if not name:
            raise InvalidArtifact("the MLflow signature has unnamed columns; name them")
        columns.append(
            ColumnSpec(
                name=str(name),
                type=kind[0],
                dtype=kind[1],
                nullable=not item.get("required", True),
            )
        )
    return columns, None


def _input_example(root: Path, info: Any) -> Any:
    if not isinstance(info, dict) or not info.get("artifact_path"):
        return None
    path = root / str(info["artifact_path"])
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "dataframe_split" in data:
        data = data["dataframe_split"]
    if isinstance(data, dict) and "columns" in data and "data" in data:
        import pandas as pd

        return pd.DataFrame(data["data"], columns=data["columns"])
    if isinstance(data, dict) and "inputs" in data:
        data = data["inputs"]
    if isinstance(data, list):
        return np.asarray(data)
    return None
