"""LightGBM boosters from their native text model files."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import require
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.types import Arrays

BINARY = ("binary", "cross_entropy")
MULTICLASS = ("multiclass", "softmax", "multiclassova", "multiclass_ova", "ova", "ovr")


def booster_objective(booster: Any) -> str:
    """The objective's name (``binary``, ``multiclass``, ``regression``, ``lambdarank``...)."""
    return str(booster.dump_model(num_iteration=1).get("objective", "")).split(" ")[0]


def booster_classes(booster: Any) -> list[int] | None:
    objective = booster_objective(booster)
    if objective in BINARY:
        return [0, 1]
    if objective in MULTICLASS:
        return list(range(booster.num_model_per_iteration()))
    return None


class LightGBMRuntime(Runtime):
    flavor: ClassVar[str] = "lightgbm"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.booster: Any = None

    def load(self, artifact_dir: Path) -> None:
        lgb = require("lightgbm", "lightgbm")
        self.booster = lgb.Booster(model_file=str(artifact_dir / self.meta.file))
        self.objective = booster_objective(self.booster)

    def predict(self, inputs: Arrays) -> Arrays:
        x = self.single_input(inputs)
        out = np.asarray(self.booster.predict(x, num_threads=1))
        if self.objective in BINARY:
            # LGBMClassifier: both classes' probabilities, label = their argmax.
            proba = np.column_stack([1.0 - out, out])
            return {"label": np.argmax(proba, axis=1).astype(np.int64), "probabilities": proba}
        if self.objective in MULTICLASS:
            return {"label": np.argmax(out, axis=1).astype(np.int64), "probabilities": out}
        return {"prediction": out}

    def unload(self) -> None:
        self.booster = None
