"""A user's Python class with ``load(artifact_dir)`` and ``predict(inputs)``.

The contract (``docs/python-models.md``): the artifact is one ``.py`` file or a
directory holding the module and anything it needs (more modules, weights,
``requirements.txt``). The class is created with no arguments, then
``load(artifact_dir)`` runs once in the zygote with the directory of the user's
files. ``predict`` receives a batch: a dict of NumPy arrays by input name, or a
pandas DataFrame when the signature is a table; every first axis is rows. It
returns a dict of arrays (named outputs), one array or list (``prediction``), or
a DataFrame (one output per column), with one answer per input row. A class with
``batch = False`` gets one row at a time instead.

Running a user's module is running their code, so it needs ``--trust``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import InvalidArtifact, UntrustedArtifact
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.runtimes.frame import to_dataframe
from zeroserve.types import Arrays


def load_user_class(path: Path, entrypoint: str) -> Any:
    if not path.is_file():
        raise InvalidArtifact(f"the python model has no module {path.name}")
    # Sibling modules in a model directory import each other by name.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(f"zeroserve_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InvalidArtifact(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, entrypoint, None)
    if cls is None or not callable(getattr(cls, "predict", None)):
        classes = [
            n for n, v in vars(module).items() if isinstance(v, type) and hasattr(v, "predict")
        ]
        hint = f" (classes with predict here: {', '.join(classes)})" if classes else ""
        raise InvalidArtifact(
            f"{path.name} has no class {entrypoint!r} with a predict(inputs) method{hint}; "
            "name the class with --entrypoint"
        )
    return cls


def as_outputs(result: Any) -> Arrays:
    """A predict() result as named arrays."""
    if hasattr(result, "columns") and hasattr(result, "to_numpy"):  # a DataFrame
        return {str(c): np.asarray(result[c].to_numpy()) for c in result.columns}
    if isinstance(result, dict):
        return {str(k): np.asarray(v) for k, v in result.items()}
    return {"prediction": np.asarray(result)}


class PythonRuntime(Runtime):
    flavor: ClassVar[str] = "python"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.model: Any = None
        self.columns = meta.signature.columns if meta.signature is not None else None
        self.batch = True

    def load(self, artifact_dir: Path) -> None:
        if not self.meta.trusted:
            raise UntrustedArtifact(
                "a python model runs its own code; register it with --trust to allow that"
            )
        cls = load_user_class(artifact_dir / self.meta.file, self.meta.entrypoint or "Model")
        self.model = cls()
        self.batch = bool(getattr(cls, "batch", True))
        if callable(getattr(self.model, "load", None)):
            self.model.load(artifact_dir)

    def predict(self, inputs: Arrays) -> Arrays:
        if self.batch:
            return as_outputs(self.model.predict(self._view(inputs)))
        rows = len(next(iter(inputs.values())))
        answers = [
            as_outputs(self.model.predict(self._view({k: v[i : i + 1] for k, v in inputs.items()})))
            for i in range(rows)
        ]
        return {
            name: np.concatenate([np.atleast_1d(a[name]) for a in answers]) for name in answers[0]
        }

    def _view(self, inputs: Arrays) -> Any:
        return to_dataframe(inputs, self.columns) if self.columns is not None else inputs

    def unload(self) -> None:
        if callable(getattr(self.model, "unload", None)):
            self.model.unload()
        self.model = None
