"""Registry gates: score versions on the model's stored evaluation set and require a
candidate to beat the production version by a margin before it is promoted.

The evaluation set is ``models/<name>/evaluation.npz`` in the artifact store, with
arrays ``x`` (inputs) and ``y`` (observed outcomes). Scoring loads the model, so it
runs in a sandboxed child (``python -m zeroserve.monitor.evaluate``), like
registration's inspection.
"""

from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zeroserve.errors import BadRequest
from zeroserve.monitor.abtest import classifier_metrics, regressor_metrics
from zeroserve.outputs import label_and_score

EVALUATION_FILE = "evaluation.npz"
HIGHER_IS_BETTER = {"accuracy": True, "auc": True, "log_loss": False, "rmse": False}


def evaluation_key(model: str) -> str:
    return f"models/{model}/{EVALUATION_FILE}"


def check_evaluation_set(data: bytes) -> int:
    """Validate an uploaded evaluation set; returns its row count."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            x, y = npz["x"], npz["y"]
    except (ValueError, OSError, KeyError) as exc:
        raise BadRequest(
            f"the evaluation set must be an .npz with arrays 'x' and 'y' ({exc}); "
            "write it with numpy.savez(path, x=inputs, y=outcomes)"
        ) from None
    if len(x) != len(y) or len(x) == 0:
        raise BadRequest(f"'x' has {len(x)} rows and 'y' {len(y)}: give one outcome per row")
    return len(x)


@dataclass(frozen=True)
class Requirement:
    metric: str
    margin: float

    @classmethod
    def parse(cls, text: str) -> Requirement:
        metric, sep, margin = text.partition(":")
        if metric not in HIGHER_IS_BETTER:
            raise BadRequest(
                f"--require-better {text!r}: the metric must be one of {sorted(HIGHER_IS_BETTER)}"
            )
        try:
            value = float(margin) if sep else 0.0
        except ValueError:
            raise BadRequest(
                f"--require-better {text!r}: write METRIC:MARGIN, e.g. accuracy:0.01"
            ) from None
        return cls(metric, value)


def score(artifact_dir: Path, evaluation: Path, batch: int = 1024) -> dict[str, float]:
    """Metrics of the model in ``artifact_dir`` on the evaluation set (in this process)."""
    from zeroserve.runtimes import ArtifactMeta, create_runtime

    meta = ArtifactMeta.read(artifact_dir)
    runtime = create_runtime(meta)
    runtime.load(artifact_dir)
    name = meta.signature.inputs[0].name if meta.signature else "input"
    dtype = meta.signature.inputs[0].dtype if meta.signature else "float32"
    with np.load(evaluation, allow_pickle=False) as npz:
        x, y = npz["x"].astype(dtype), npz["y"]
    labels: list[np.ndarray[Any, Any]] = []
    scores: list[np.ndarray[Any, Any]] = []
    for start in range(0, len(x), batch):
        label, value = label_and_score(runtime.predict({name: x[start : start + batch]}))
        if label is not None:
            labels.append(np.asarray(label))
        if value is not None:
            scores.append(np.asarray(value, dtype=np.float64))
    if labels:
        metrics = classifier_metrics(
            y, np.concatenate(labels), np.concatenate(scores) if scores else None
        )
    else:
        metrics = regressor_metrics(y, np.concatenate(scores))
    return {k: float(m.value) for k, (m, _) in metrics.items()} | {"rows": float(len(x))}


def gate(
    candidate: dict[str, float], current: dict[str, float] | None, requirements: list[Requirement]
) -> tuple[bool, list[str]]:
    """Whether ``candidate`` beats ``current`` by every required margin, and why."""
    if current is None:
        return True, ["no version is in production: nothing to beat"]
    ok, reasons = True, []
    for req in requirements:
        mine, theirs = candidate.get(req.metric), current.get(req.metric)
        if mine is None or theirs is None:
            ok = False
            reasons.append(
                f"{req.metric} is not defined for this model (use accuracy/auc/log_loss or rmse)"
            )
            continue
        gain = mine - theirs if HIGHER_IS_BETTER[req.metric] else theirs - mine
        passed = gain >= req.margin
        ok = ok and passed
        reasons.append(
            f"{req.metric}: candidate {mine:.4f} vs production {theirs:.4f} "
            f"(improvement {gain:+.4f}, required {req.margin:+.4f}): {'pass' if passed else 'FAIL'}"
        )
    return ok, reasons


def main() -> None:
    request = json.loads(sys.argv[1])
    try:
        result = {
            "ok": True,
            "metrics": score(Path(request["artifact_dir"]), Path(request["evaluation"])),
        }
    except Exception as exc:  # reported to the parent as one line
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
