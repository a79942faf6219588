"""LightGBM boosters from their native text model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import require
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.types import Arrays


class LightGBMRuntime(Runtime):
    flavor: ClassVar[str] = "lightgbm"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.booster: Any = None

    def load(self, artifact_dir: Path) -> None:
        lgb = require("lightgbm", "lightgbm")
        self.booster = lgb.Booster(model_file=str(artifact_dir / self.meta.file))

    def predict(self, inputs: Arrays) -> Arrays:
        x = self.single_input(inputs)
        return {"prediction": np.asarray(self.booster.predict(x, num_threads=1))}

    def unload(self) -> None:
        self.booster = None
