"""A user's Python class with ``load(artifact_dir)`` and ``predict(inputs)``.

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
from zeroserve.types import Arrays


def load_user_class(path: Path, entrypoint: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"zeroserve_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InvalidArtifact(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, entrypoint, None)
    if cls is None or not callable(getattr(cls, "predict", None)):
        raise InvalidArtifact(
            f"{path.name} has no class {entrypoint!r} with a predict(inputs) method; "
            "name the class with --entrypoint"
        )
    return cls


class PythonRuntime(Runtime):
    flavor: ClassVar[str] = "python"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.model: Any = None

    def load(self, artifact_dir: Path) -> None:
        if not self.meta.trusted:
            raise UntrustedArtifact(
                "a python model runs its own code; register it with --trust to allow that"
            )
        cls = load_user_class(artifact_dir / self.meta.file, self.meta.entrypoint or "Model")
        self.model = cls()
        if callable(getattr(self.model, "load", None)):
            self.model.load(artifact_dir)

    def predict(self, inputs: Arrays) -> Arrays:
        result = self.model.predict(inputs)
        if isinstance(result, dict):
            return {str(k): np.asarray(v) for k, v in result.items()}
        return {"prediction": np.asarray(result)}

    def unload(self) -> None:
        if callable(getattr(self.model, "unload", None)):
            self.model.unload()
        self.model = None
