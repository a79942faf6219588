"""XGBoost boosters in the native formats (UBJSON or JSON), never pickles."""

from __future__ import annotations

import json
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
        self.objective = booster_objective(self.booster)

    def predict(self, inputs: Arrays) -> Arrays:
        x = self.single_input(inputs)
        out = np.asarray(self.booster.inplace_predict(x))
        if self.objective == "binary:logistic":
            # XGBClassifier: probabilities of both classes, label where P(1) > 0.5.
            proba = np.column_stack([1.0 - out, out])
            return {"label": (out > 0.5).astype(np.int64), "probabilities": proba}
        if self.objective == "multi:softprob":
            return {"label": np.argmax(out, axis=1).astype(np.int64), "probabilities": out}
        if self.objective == "multi:softmax":
            return {"label": out.astype(np.int64)}
        return {"prediction": out}

    def unload(self) -> None:
        self.booster = None


def booster_objective(booster: Any) -> str:
    """The training objective, e.g. ``binary:logistic``; classifiers answer labels."""
    config = json.loads(booster.save_config())
    return str(config["learner"]["objective"]["name"])


def booster_classes(booster: Any) -> list[int] | None:
    config = json.loads(booster.save_config())
    objective = config["learner"]["objective"]["name"]
    if objective == "binary:logistic":
        return [0, 1]
    if objective.startswith("multi:"):
        return list(range(int(config["learner"]["learner_model_param"]["num_class"])))
    return None
