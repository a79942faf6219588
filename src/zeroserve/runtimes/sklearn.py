"""scikit-learn models from skops files (safe) or joblib/pickle (trusted only)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import UntrustedArtifact, require
from zeroserve.runtimes import sklearn_trees
from zeroserve.runtimes.base import REFERENCE_FILE, ArtifactMeta, Runtime
from zeroserve.runtimes.frame import to_dataframe
from zeroserve.runtimes.sklearn_trust import load_skops
from zeroserve.types import Arrays

PICKLE_FORMATS = ("joblib", "pickle")


def load_sklearn(path: Path, fmt: str, trusted: bool) -> Any:
    """Load an estimator; pickle-based formats only when the operator trusted them."""
    if fmt == "skops":
        return load_skops(path, trusted)
    if fmt in PICKLE_FORMATS:
        if not trusted:
            raise UntrustedArtifact(
                f"{path.name} is a {fmt} file: loading it runs arbitrary code from the file. "
                "Register it with --trust if you produced it yourself, or save the model "
                "with skops (skops.io.dump) and register the .skops file instead"
            )
        joblib = require("joblib", "sklearn")
        return joblib.load(path)
    raise UntrustedArtifact(f"unknown scikit-learn artifact format {fmt!r}")


class SklearnRuntime(Runtime):
    flavor: ClassVar[str] = "sklearn"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.model: Any = None
        self.is_classifier = False
        self.fast: Any = None
        signature = meta.signature
        self.columns = signature.columns if signature is not None else None

    def load(self, artifact_dir: Path) -> None:
        self.model = load_sklearn(
            artifact_dir / self.meta.file, self.meta.format, self.meta.trusted
        )
        self.is_classifier = hasattr(self.model, "predict_proba") and hasattr(
            self.model, "classes_"
        )
        # Fitted with a DataFrame, predicting on an ndarray warns on every call.
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        if hasattr(self.model, "n_jobs"):
            self.model.n_jobs = 1
        if self.columns is None:
            self.fast = sklearn_trees.build(self.model, self._probe(artifact_dir))

    def _probe(self, artifact_dir: Path) -> Any:
        """Rows to prove the fast path on: the reference sample and random draws."""
        width = int(getattr(self.model, "n_features_in_", 0))
        rows = [np.random.default_rng(0).standard_normal((256, width)) * 3]
        reference = artifact_dir / REFERENCE_FILE
        if reference.exists():
            sample = np.load(reference, allow_pickle=False)
            if sample.ndim == 2 and sample.shape[1] == width:
                rows.append(sample[:2048])
        return np.concatenate(rows).astype(np.float32)

    def predict(self, inputs: Arrays) -> Arrays:
        if self.columns is not None:
            return self._answer(to_dataframe(inputs, self.columns))
        x = self.single_input(inputs)
        if self.fast is not None and x.dtype.kind == "f" and not np.isnan(x).any():
            # Trees compare in float32, as scikit-learn's own predict does.
            out = self.fast(np.ascontiguousarray(x, dtype=np.float32))
            if not self.is_classifier:
                return {"prediction": out}
            # A forest's predict() is exactly this argmax over its predict_proba().
            return {
                "label": self.model.classes_.take(np.argmax(out, axis=1), axis=0),
                "probabilities": out,
            }
        return self._answer(x)

    def _answer(self, x: Any) -> Arrays:
        """What the user's own code gets: predict(), and predict_proba() for classifiers."""
        label = np.asarray(self.model.predict(x))
        if self.is_classifier:
            return {"label": label, "probabilities": np.asarray(self.model.predict_proba(x))}
        return {"prediction": label}

    def unload(self) -> None:
        self.model = None
