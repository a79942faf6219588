"""The runtime contract: load one artifact, predict on a batch, unload.

An artifact is a directory holding the model file and ``zeroserve.json``
(``ArtifactMeta``). Runtimes run inside replica processes (and the zygote they
are forked from), never in the gateway.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from zeroserve.types import Arrays, Signature

META_FILE = "zeroserve.json"
REFERENCE_FILE = "reference.npy"


class ArtifactMeta(BaseModel):
    """What ``zeroserve.json`` records beside a model file."""

    flavor: str
    file: str
    format: str = Field(description="on-disk format, e.g. skops, joblib, onnx, ubj")
    trusted: bool = False
    signature: Signature | None = None
    entrypoint: str | None = Field(None, description="class name for the python flavor")
    options: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def read(cls, artifact_dir: Path) -> ArtifactMeta:
        return cls.model_validate_json((artifact_dir / META_FILE).read_text())

    def write(self, artifact_dir: Path) -> None:
        data = self.model_dump(mode="json", exclude_none=True)
        (artifact_dir / META_FILE).write_text(json.dumps(data, indent=2))


class Runtime:
    """Base class: subclasses set ``flavor`` and implement ``load`` and ``predict``."""

    flavor: ClassVar[str] = ""

    def __init__(self, meta: ArtifactMeta) -> None:
        self.meta = meta

    def load(self, artifact_dir: Path) -> None:
        """Load the model from ``artifact_dir``; runs once, in the zygote."""

    def after_fork(self) -> None:
        """Re-create anything that must not be shared across ``fork()``."""

    def predict(self, inputs: Arrays) -> Arrays:
        raise NotImplementedError(f"{type(self).__name__} does not implement predict()")

    def unload(self) -> None:
        """Release what ``load`` took."""

    def single_input(self, inputs: Arrays) -> Any:
        """The only input tensor, for models that take one matrix."""
        if len(inputs) != 1:
            raise ValueError(f"{self.flavor} models take one input tensor, got {sorted(inputs)}")
        return next(iter(inputs.values()))
