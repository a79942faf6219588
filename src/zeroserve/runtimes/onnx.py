"""ONNX graphs on ONNX Runtime, one intra-op thread per replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from zeroserve.errors import require
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.types import Arrays


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


class OnnxRuntime(Runtime):
    flavor: ClassVar[str] = "onnx"

    def __init__(self, meta: ArtifactMeta) -> None:
        super().__init__(meta)
        self.session: Any = None
        self.output_names: list[str] = []

    def load(self, artifact_dir: Path) -> None:
        self.session = make_session(str(artifact_dir / self.meta.file))
        self.output_names = [o.name for o in self.session.get_outputs()]

    def predict(self, inputs: Arrays) -> Arrays:
        results = self.session.run(self.output_names, inputs)
        return dict(zip(self.output_names, results, strict=True))

    def unload(self) -> None:
        self.session = None
