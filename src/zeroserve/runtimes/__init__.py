"""Runtimes: one class per flavor, looked up by name without importing the others."""

from __future__ import annotations

import importlib

from zeroserve.errors import InvalidArtifact
from zeroserve.runtimes.base import ArtifactMeta, Runtime

_RUNTIMES = {
    "sklearn": "zeroserve.runtimes.sklearn:SklearnRuntime",
    "onnx": "zeroserve.runtimes.onnx:OnnxRuntime",
    "xgboost": "zeroserve.runtimes.xgboost:XGBoostRuntime",
    "lightgbm": "zeroserve.runtimes.lightgbm:LightGBMRuntime",
    "python": "zeroserve.runtimes.python:PythonRuntime",
}


def runtime_class(flavor: str) -> type[Runtime]:
    """The runtime class for ``flavor``, importing only its module."""
    target = _RUNTIMES.get(flavor)
    if target is None:
        raise InvalidArtifact(f"unknown flavor {flavor!r}; use one of {', '.join(_RUNTIMES)}")
    module, _, name = target.partition(":")
    cls: type[Runtime] = getattr(importlib.import_module(module), name)
    return cls


def create_runtime(meta: ArtifactMeta) -> Runtime:
    return runtime_class(meta.flavor)(meta)


__all__ = ["ArtifactMeta", "Runtime", "create_runtime", "runtime_class"]
