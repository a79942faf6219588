"""ONNX graphs on ONNX Runtime, one intra-op thread per replica.

Graphs are served as exported: several named inputs, string tensors, and
skl2onnx's default classifier output (ZipMap: a sequence of one map per row,
class -> probability), which is turned into a probability matrix whose columns
follow the classes in the signature.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from zeroserve.errors import InvalidArtifact, require
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.types import Arrays

ZIPMAP = re.compile(r"^seq\(map\((int64|string),\s*tensor\((float|double)\)\)\)$")


def make_session(model: bytes | str, threads: int = 1) -> Any:
    ort = require("onnxruntime", "onnx")
    options = ort.SessionOptions()
    # Replicas are the unit of parallelism; one thread each keeps the session
    # free of thread pools, which would not survive fork().
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def check_outputs(session: Any) -> list[str]:
    """Names of ZipMap outputs; refuse output types that have no tensor form."""
    zipmaps = []
    for out in session.get_outputs():
        if out.type.startswith("tensor("):
            continue
        if ZIPMAP.match(out.type.replace(" ", "")):
            zipmaps.append(out.name)
            continue
        raise InvalidArtifact(
            f"ONNX output {out.name!r} has type {out.type}, which zeroserve cannot send as a "
            "tensor; export it as a tensor (skl2onnx: options={id(model): {'zipmap': False}} "
            "or {'zipmap': 'columns'}; for sequences, return a tensor from the graph)"
        )
    return zipmaps


def zipmap_matrix(rows: list[dict[Any, float]]) -> tuple[np.ndarray[Any, Any], list[Any]]:
    """A ZipMap's list of {class: probability} as a matrix, and the class order."""
    if not rows:
        return np.zeros((0, 0), dtype=np.float32), []
    classes = list(rows[0])
    matrix = np.array([[row[c] for c in classes] for row in rows], dtype=np.float32)
    return matrix, classes


class OnnxRuntime(Runtime):
    flavor: ClassVar[str] = "onnx"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.session: Any = None
        self.output_names: list[str] = []
        self.zipmaps: set[str] = set()
        self.strings: set[str] = set()

    def load(self, artifact_dir: Path) -> None:
        self.session = make_session(str(artifact_dir / self.meta.file))
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.zipmaps = set(check_outputs(self.session))
        self.strings = {i.name for i in self.session.get_inputs() if i.type == "tensor(string)"}

    def predict(self, inputs: Arrays) -> Arrays:
        if self.strings:
            inputs = {
                k: v.astype(object) if k in self.strings and v.dtype.kind in "US" else v
                for k, v in inputs.items()
            }
        results = self.session.run(self.output_names, inputs)
        outputs = dict(zip(self.output_names, results, strict=True))
        for name in self.zipmaps:
            outputs[name] = zipmap_matrix(outputs[name])[0]
        return {k: np.asarray(v) for k, v in outputs.items()}

    def classes(self, inputs: Arrays) -> list[Any] | None:
        """Class names from a ZipMap output (in probability column order), if any."""
        if not self.zipmaps:
            return None
        name = next(iter(self.zipmaps))
        rows = self.session.run([name], inputs)[0]
        return [c.item() if hasattr(c, "item") else c for c in zipmap_matrix(rows)[1]]

    def unload(self) -> None:
        self.session = None
