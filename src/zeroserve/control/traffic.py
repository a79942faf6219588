"""Traffic splits: weights by model version or variant name, applied to a spec."""

from __future__ import annotations

import math
from collections.abc import Callable

from zeroserve.errors import BadRequest
from zeroserve.types import EndpointSpec, VariantSpec


def parse_weight_args(items: list[str]) -> dict[str, float]:
    """``["fraud:3=90", "fraud:4=10"]`` -> ``{"fraud:3": 90.0, "fraud:4": 10.0}``."""
    weights: dict[str, float] = {}
    for item in items:
        ref, sep, value = item.rpartition("=")
        if not sep or not ref:
            raise BadRequest(f"{item!r}: write MODEL:VERSION=WEIGHT, e.g. fraud:4=10")
        try:
            weights[ref] = float(value)
        except ValueError:
            raise BadRequest(f"{item!r}: the weight {value!r} is not a number") from None
    return weights


def check_weights(weights: dict[str, float]) -> None:
    if not weights:
        raise BadRequest("give at least one variant and its weight, e.g. fraud:3=100")
    for ref, w in weights.items():
        if not math.isfinite(w) or w < 0:
            raise BadRequest(f"weight of {ref!r} is {w}; weights are numbers >= 0")
    if sum(weights.values()) <= 0:
        raise BadRequest("weights sum to 0; give at least one variant a positive weight")


def variant_name(spec: EndpointSpec, model: str, version: int) -> str:
    base = f"v{version}" if all(v.model == model for v in spec.variants) else f"{model}-v{version}"
    name, n = base, 2
    taken = {v.name for v in spec.variants}
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


def find_variant(spec: EndpointSpec, ref: str) -> VariantSpec | None:
    """A variant by name, or by ``model:version``."""
    for v in spec.variants:
        if ref in (v.name, f"{v.model}:{v.version}"):
            return v
    return None


def with_variant(spec: EndpointSpec, model: str, version: int) -> tuple[EndpointSpec, VariantSpec]:
    """The spec with a variant for ``model:version`` (added last, weight 0, with the
    first variant's resources, if it was not there)."""
    found = find_variant(spec, f"{model}:{version}")
    if found is not None:
        return spec, found
    template = spec.variants[0]
    added = template.model_copy(
        update={
            "name": variant_name(spec, model, version),
            "model": model,
            "version": version,
            "weight": 0.0,
        }
    )
    return spec.model_copy(update={"variants": [*spec.variants, added]}), added


def set_traffic(
    spec: EndpointSpec,
    weights: dict[str, float],
    resolve: Callable[[str, str], int],
) -> EndpointSpec:
    """Replace the split: listed variants get their weights (new model versions are
    added), unlisted ones leave the endpoint. ``resolve(model, ref)`` returns the
    version number or raises the registry's not-found error."""
    check_weights(weights)
    variants: list[VariantSpec] = []
    current = spec
    for ref, weight in weights.items():
        found = find_variant(current, ref)
        if found is None:
            model, sep, version_ref = ref.partition(":")
            if not sep:
                known = ", ".join(v.name for v in spec.variants)
                raise BadRequest(
                    f"{ref!r} is neither a variant of {spec.name!r} ({known}) nor MODEL:VERSION"
                )
            version = resolve(model, version_ref)
            current, found = with_variant(current, model, version)
        variants.append(found.model_copy(update={"weight": float(weight)}))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise BadRequest("a variant is listed twice; give each one weight")
    return spec.model_copy(update={"variants": variants})


def reweigh(spec: EndpointSpec, weights: dict[str, float]) -> EndpointSpec:
    """The spec with new weights for some variants (by name), the others kept."""
    return spec.model_copy(
        update={
            "variants": [
                v.model_copy(update={"weight": weights[v.name]}) if v.name in weights else v
                for v in spec.variants
            ]
        }
    )
