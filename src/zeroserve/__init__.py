"""zeroserve: self-hosted serverless inference."""

from __future__ import annotations

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
