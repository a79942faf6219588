"""zeroserve: self-hosted serverless inference."""

from __future__ import annotations

import typing

__version__ = "0.1.0"

from zeroserve.errors import ZeroserveError
from zeroserve.runtimes.base import ArtifactMeta, Runtime
from zeroserve.settings import Settings
from zeroserve.types import (
    EndpointSpec,
    Flavor,
    Mode,
    ScalingSpec,
    Signature,
    Stage,
    TensorSpec,
    VariantSpec,
)

__all__ = [
    "ArtifactMeta",
    "AsyncJob",
    "Client",
    "EndpointSpec",
    "Flavor",
    "Mode",
    "Runtime",
    "ScalingSpec",
    "Settings",
    "Signature",
    "Stage",
    "TensorSpec",
    "VariantSpec",
    "ZeroserveError",
    "__version__",
]

if typing.TYPE_CHECKING:
    from zeroserve.client import AsyncJob, Client

# The client pulls in httpx; model workers import this package and do not need it.
_LAZY = {"AsyncJob": "zeroserve.client", "Client": "zeroserve.client"}


def __getattr__(name: str) -> typing.Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zeroserve' has no attribute {name!r}")
