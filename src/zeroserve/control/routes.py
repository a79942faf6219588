"""The routing table the gateway reads: endpoints, their variants and weights."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Protocol

from zeroserve.control.policy import pick
from zeroserve.metrics import VariantMetrics
from zeroserve.outcomes import OutcomeSeries
from zeroserve.serving.pool import Pool
from zeroserve.types import EndpointSpec, ModelVersionInfo, Signature, VariantSpec


@dataclass(slots=True)
class VariantRoute:
    spec: VariantSpec
    version: ModelVersionInfo
    pool: Pool
    metrics: VariantMetrics
    signature: Signature
    outcomes: OutcomeSeries | None = None
    """This variant's outcome counts, bound by the data plane on first use."""


@dataclass(slots=True)
class Route:
    spec: EndpointSpec
    variants: list[VariantRoute]
    cum_weights: list[float]
    shadow: VariantRoute | None = None
    in_flight: int = 0

    def choose(self, u: float | None = None) -> VariantRoute:
        if len(self.variants) == 1:
            return self.variants[0]
        return self.variants[pick(self.cum_weights, random.random() if u is None else u)]

    def for_version(self, version: int) -> VariantRoute | None:
        for v in self.variants:
            if v.spec.version == version:
                return v
        return None

    def all_variants(self) -> list[VariantRoute]:
        return [*self.variants, *([self.shadow] if self.shadow else [])]


class RouteTable(Protocol):
    """What the data plane reads: the controller, or a secondary process's mirror of it."""

    @property
    def routes(self) -> dict[str, Route]: ...
