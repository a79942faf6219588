"""Reference profiles and live windows: one sketch per feature and per output.

A profile is computed once, when a version is registered, from its reference
sample (``reference.npy``) and stored beside the artifact as ``profile.json``, so
a drift check never reloads training data. A live window holds empty sketches
over the same bins; windows merge across gateway processes and hours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from zeroserve.digests import DIGESTS_FILE, sha256_file
from zeroserve.outputs import label_and_score
from zeroserve.sketch import BinnedSketch, CategoryCounts, Sketch, sketch_from_dict
from zeroserve.types import Arrays, Signature, TensorSpec

PROFILE_FILE = "profile.json"
REFERENCE_FILE = "reference.npy"  # written by registry.packaging (runtimes.base.REFERENCE_FILE)
QUANTILE_BINS = 1000
SCORE_BINS = 1000


def feature_names(spec: TensorSpec) -> list[str]:
    """Column names for one input: its own names, ``<input>_<i>`` for a table, or itself."""
    if len(spec.shape) == 2 and spec.shape[1] > 0:
        if spec.names and len(spec.names) == spec.shape[1]:
            return list(spec.names)
        return [f"{spec.name}_{i}" for i in range(spec.shape[1])]
    if len(spec.shape) == 1:
        return [spec.name]
    return []  # images and other tensors are not profiled


def columns(specs: list[TensorSpec], arrays: Arrays) -> dict[str, np.ndarray[Any, Any]]:
    """One 1-D array per feature column, in signature order (missing inputs skipped)."""
    out: dict[str, np.ndarray[Any, Any]] = {}
    for spec in specs:
        arr = arrays.get(spec.name)
        names = feature_names(spec)
        if arr is None or not names:
            continue
        if arr.ndim == 2 and arr.shape[1] == len(names):
            for i, name in enumerate(names):
                out[name] = arr[:, i]
        elif arr.ndim == 1 and len(names) == 1:
            out[names[0]] = arr
    return out


def concat(parts: list[Arrays]) -> Arrays:
    """Tensors present in every part with matching trailing shapes, concatenated."""
    out: Arrays = {}
    for name in parts[0] if parts else {}:
        try:
            out[name] = np.concatenate([p[name] for p in parts])
        except (KeyError, ValueError):
            continue
    return out


def numeric_profile(values: np.ndarray[Any, Any], bins: int = QUANTILE_BINS) -> BinnedSketch:
    """A sketch over the reference's own quantiles, holding the reference itself."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        edges = np.array([0.0])
    else:
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1)))
    sketch = BinnedSketch(edges)
    sketch.add(arr)
    return sketch


def categorical_profile(values: np.ndarray[Any, Any]) -> CategoryCounts:
    counts = CategoryCounts()
    counts.add(values)
    return counts


@dataclass
class Window:
    """Sketches by column name: a profile's reference, or a live window over its bins."""

    sketches: dict[str, Sketch] = field(default_factory=dict)

    def observe(self, cols: dict[str, np.ndarray[Any, Any]]) -> None:
        for name, values in cols.items():
            sketch = self.sketches.get(name)
            if sketch is not None:
                sketch.add(values)

    def merge(self, other: Window) -> None:
        for name, sketch in other.sketches.items():
            mine = self.sketches.get(name)
            if mine is None:
                self.sketches[name] = sketch_from_dict(sketch.to_dict())
            else:
                mine.merge(sketch)  # type: ignore[arg-type]

    @property
    def rows(self) -> int:
        return max((s.count for s in self.sketches.values()), default=0)

    def to_dict(self) -> dict[str, Any]:
        return {name: s.to_dict() for name, s in self.sketches.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Window:
        return cls({name: sketch_from_dict(d) for name, d in data.items()})


def _empty(sketch: Sketch) -> Sketch:
    if isinstance(sketch, BinnedSketch | CategoryCounts):
        return sketch.empty_like()
    raise TypeError("profiles hold binned sketches and category counts only")


@dataclass
class Profile:
    """A version's reference: sketches per input feature and per output column."""

    inputs: Window
    outputs: Window = field(default_factory=Window)
    rows: int = 0

    def live(self) -> Profile:
        """An empty profile over the same bins, to fill from live traffic."""
        return Profile(
            inputs=Window({k: _empty(s) for k, s in self.inputs.sketches.items()}),
            outputs=Window({k: _empty(s) for k, s in self.outputs.sketches.items()}),
        )

    def observe(self, signature: Signature, inputs: Arrays, outputs: Arrays | None = None) -> None:
        cols = columns(signature.inputs, inputs)
        self.inputs.observe(cols)
        self.rows += len(next(iter(cols.values()))) if cols else 0
        if outputs is not None:
            self.outputs.observe(output_columns(outputs))

    def merge(self, other: Profile) -> None:
        self.inputs.merge(other.inputs)
        self.outputs.merge(other.outputs)
        self.rows += other.rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "inputs": self.inputs.to_dict(),
            "outputs": self.outputs.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(
            inputs=Window.from_dict(data["inputs"]),
            outputs=Window.from_dict(data.get("outputs", {})),
            rows=int(data.get("rows", 0)),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: Path) -> Profile:
        return cls.from_dict(json.loads(path.read_text()))


def output_columns(outputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
    """The columns output drift is judged on: ``score`` and ``label``."""
    label, score = label_and_score(outputs)
    cols: dict[str, np.ndarray[Any, Any]] = {}
    if score is not None:
        cols["score"] = score
    if label is not None:
        cols["label"] = label
    return cols


def build_profile(
    signature: Signature,
    inputs: Arrays,
    outputs: Arrays | None = None,
    bins: int = QUANTILE_BINS,
) -> Profile:
    """Profile a reference sample: quantile bins for numbers, counts for categories."""
    cols = columns(signature.inputs, inputs)
    sketches: dict[str, Sketch] = {}
    for name, values in cols.items():
        is_number = np.asarray(values).dtype.kind in "iufb"
        sketches[name] = numeric_profile(values, bins) if is_number else categorical_profile(values)
    out: dict[str, Sketch] = {}
    for name, values in output_columns(outputs or {}).items():
        numeric = np.asarray(values).dtype.kind in "fiub" and name == "score"
        out[name] = numeric_profile(values, bins) if numeric else categorical_profile(values)
    rows = len(next(iter(cols.values()))) if cols else 0
    return Profile(inputs=Window(sketches), outputs=Window(out), rows=rows)


def write_profile(artifact_dir: Path, signature: Signature) -> bool:
    """Profile ``reference.npy`` into ``profile.json`` in ``artifact_dir``, if there is
    a reference sample and the signature has one input. The registry calls this when a
    version is registered. Returns whether a profile was written."""
    reference = artifact_dir / REFERENCE_FILE
    if not reference.exists() or len(signature.inputs) != 1:
        return False
    sample = np.load(reference, allow_pickle=False)
    profile = build_profile(signature, {signature.inputs[0].name: sample})
    if not profile.inputs.sketches:
        return False
    profile.save(artifact_dir / PROFILE_FILE)
    manifest = artifact_dir / DIGESTS_FILE
    if manifest.exists():  # the profile is part of the artifact: record its digest too
        digests = json.loads(manifest.read_text())
        digests[PROFILE_FILE] = sha256_file(artifact_dir / PROFILE_FILE)
        manifest.write_text(json.dumps(digests, indent=2, sort_keys=True))
    return True
