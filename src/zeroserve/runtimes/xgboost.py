"""XGBoost boosters in the native formats (UBJSON or JSON), never pickles."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import require
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.types import Arrays


class XGBoostRuntime(Runtime):
    flavor: ClassVar[str] = "xgboost"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.booster: Any = None

    def load(self, artifact_dir: Path) -> None:
        xgb = require("xgboost", "xgboost")
        self.booster = xgb.Booster(model_file=str(artifact_dir / self.meta.file))
        self.booster.set_param({"nthread": 1})

    def predict(self, inputs: Arrays) -> Arrays:
        x = self.single_input(inputs)
        return {"prediction": np.asarray(self.booster.inplace_predict(x))}

    def unload(self) -> None:
        self.booster = None
