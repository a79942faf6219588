"""Rates for a deployment: its own prices, or a cost-catalog entry's.

Catalog LLM targets price ``input_token`` / ``output_token`` (and optionally
``cache_read_token`` / ``cache_write_token``) in USD per ``per`` tokens; a zeroserve
endpoint can name a hardware target, whose ``instance_hour``, ``gpu_second`` or ``second``
price (for
``catalog_option``, e.g. the instance type) prices its measured compute time.
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache

from zeroserve.cost.catalog import Catalog, CatalogError, default_catalog
from zeroserve.llm.config import ConfigError, Deployment
from zeroserve.llm.usage import Rates


@cache
def _catalog() -> Catalog:
    return default_catalog()


def rates_for(dep: Deployment, catalog: Catalog | None = None) -> Rates:
    if dep.prices is not None:
        i, o, cr, cw = dep.prices.micros_per_mtok()
        hour = int((dep.prices.compute_per_hour * 1_000_000).to_integral_value())
        return Rates(i, o, cr, cw, hour)
    if dep.catalog is None:
        return Rates()
    cat = catalog or _catalog()
    try:
        target = cat.target(dep.catalog)
    except CatalogError as exc:
        raise ConfigError(f"deployment {dep.name!r}: {exc.message}") from None

    def per_mtok(meter: str, fallback: int | None = None) -> int:
        try:
            price = cat.price(target, meter)
        except CatalogError:
            if fallback is not None:
                return fallback
            raise ConfigError(
                f"deployment {dep.name!r}: catalog target {dep.catalog} has no {meter} price"
            ) from None
        usd = price.rate_tiers()[0].usd
        return int((usd / price.per * Decimal(1_000_000) * 1_000_000).to_integral_value())

    if target.billing_model == "per_token":
        i = per_mtok("input_token")
        return Rates(
            i,
            per_mtok("output_token"),
            per_mtok("cache_read_token", i),
            per_mtok("cache_write_token", i),
        )
    hardware = (
        ("instance_hour", 1),
        ("gpu_second", 3600),
        ("second", 3600),
        ("cpu_core_second", 3600),
    )
    for meter, per_hour in hardware:
        try:
            price = cat.price(target, meter, dep.catalog_option)
        except CatalogError:
            continue
        usd = price.rate_tiers()[0].usd / price.per * Decimal(per_hour)
        return Rates(compute_per_hour=int((usd * 1_000_000).to_integral_value()))
    raise ConfigError(
        f"deployment {dep.name!r}: catalog target {dep.catalog} has no token or compute price"
    )
