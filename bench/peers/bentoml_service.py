"""BentoML service for the benchmark forest, with BentoML's scikit-learn support.

    python bentoml_service.py import MODEL.joblib    # once: into the BentoML model store
    BENCH_BATCHING=1 bentoml serve bentoml_service:Forest --port P

The model goes through `bentoml.sklearn` (save_model / load_model), BentoML's
standard scikit-learn support. BENCH_BATCHING=1 switches on adaptive batching
(`batchable=True`, BentoML's default batch size and latency bounds).
"""

from __future__ import annotations

import os
import sys

import bentoml
import numpy as np

MODEL_NAME = "bench-forest"
BATCHING = os.environ.get("BENCH_BATCHING") == "1"


@bentoml.service
class Forest:
    def __init__(self) -> None:
        self.model = bentoml.sklearn.load_model(f"{MODEL_NAME}:latest")

    @bentoml.api(batchable=BATCHING)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(instances.astype(np.float32, copy=False)))


def import_model(path: str) -> None:
    import joblib

    bentoml.sklearn.save_model(MODEL_NAME, joblib.load(path))


if __name__ == "__main__" and sys.argv[1:2] == ["import"]:
    import_model(sys.argv[2])
