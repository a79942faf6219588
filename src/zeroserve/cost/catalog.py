"""The pricing catalog: a validated YAML file of targets, prices, limits and sources.

The packaged ``catalog.yaml`` is the default; users can load their own file or
override single prices (a negotiated discount, another region) with
``PriceOverride``. Every price names its source, the date it was read and a
confidence, so an estimate can say how much to trust it.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from zeroserve.errors import BadRequest

DEFAULT_CATALOG_PATH = Path(__file__).with_name("catalog.yaml")
USER_SOURCE_ID = "user-override"

Confidence = Literal["verified", "secondary", "estimate", "volatile", "user"]
BillingModel = Literal[
    "per_request_duration",
    "instance_hours",
    "per_second_container",
    "per_token",
    "batch_job",
    "addon",
]


class CatalogError(BadRequest):
    """The catalog file or an override is invalid; the message names the field."""

    code = "invalid_catalog"


class _Strict(BaseModel):
    # A typo in a hand-edited catalog must fail loudly, not be ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    id: str
    url: str
    kind: Literal["machine_api", "vendor_page", "vendor_docs", "third_party", "user"]
    note: str = ""


class Tier(_Strict):
    up_to: Decimal | None = Field(
        description="upper bound of the tier in the price's unit; null: no bound"
    )
    usd: Decimal


class Price(_Strict):
    meter: str
    unit: str = Field(description="what one unit is: s, GB-s, req, h, GB, token")
    option: str | None = Field(
        None, description="instance type, memory size or GPU this applies to"
    )
    usd: Decimal | None = Field(
        None, description="USD per `per` units; use tiers for tiered prices"
    )
    per: Decimal = Decimal(1)
    tiers: tuple[Tier, ...] = ()
    source: str
    as_of: date
    confidence: Confidence
    note: str = ""

    @model_validator(mode="after")
    def _one_rate(self) -> Price:
        if (self.usd is None) == (not self.tiers):
            raise ValueError(f"price {self.meter!r}: give exactly one of usd or tiers")
        if self.tiers:
            bounds = [t.up_to for t in self.tiers]
            if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
                raise ValueError(f"price {self.meter!r}: only the last tier may have up_to: null")
            finite = [b for b in bounds if b is not None]
            if finite != sorted(finite):
                raise ValueError(f"price {self.meter!r}: tiers must ascend")
        return self

    def rate_tiers(self) -> tuple[Tier, ...]:
        """The tiers, a flat price being one unbounded tier."""
        if self.tiers:
            return self.tiers
        assert self.usd is not None
        return (Tier(up_to=None, usd=self.usd),)


class FreeAllowance(_Strict):
    """A free allowance (units of a meter) or a credit (USD), applied only on request."""

    meter: str = Field(description="the meter it reduces; 'credit' for a USD credit")
    kind: Literal["allowance", "credit"] = "allowance"
    amount: Decimal
    option: str | None = None
    valid_months: int | None = Field(None, description="null: permanent")
    eligibility: str = ""
    source: str
    as_of: date


class Range(_Strict):
    min: Decimal
    max: Decimal
    step: Decimal


class ColdStart(_Strict):
    p50_s: float = 0.0
    p95_s: float = 0.0
    keep_warm_s: float = Field(
        0.0, description="how long an idle instance lives before it scales in"
    )
    basis: str = ""


class Limits(_Strict):
    memory_mb: Range | None = None
    timeout_s: float | None = None
    sync_payload_bytes: int | None = None
    async_payload_bytes: int | None = None
    max_concurrency: int | None = None
    concurrency_soft: bool = False
    gpu: bool = False
    context_tokens: int | None = None
    source: str
    as_of: date
    note: str = ""


class Option(_Strict):
    """A size a target offers: an instance type, a memory size, a GPU class."""

    name: str
    vcpus: float = 0.0
    memory_gib: float = 0.0
    gpu: str | None = None
    gpu_count: int = 0
    gpu_memory_gb: float = 0.0
    tokens_per_s: float = Field(
        0.0, description="output tokens a second one unit serves (Bedrock model units); 0: unknown"
    )
    term_months: int = Field(0, description="a committed term (months) the option's price needs")


class Commitment(_Strict):
    """A savings plan or reserved term: a discount on some meters for a commitment."""

    term: str = Field(description="what the profile names: 1yr-no-upfront, 3yr-no-upfront...")
    discount_pct: Decimal = Field(gt=0, lt=100)
    meters: tuple[str, ...] = Field(description="meters the discount applies to")
    months: int = Field(gt=0, description="length of the commitment")
    text: str = Field(description="what you commit to, in words")
    source: str
    as_of: date
    confidence: Confidence
    note: str = ""


class TaskSize(_Strict):
    vcpus: Decimal
    memory_gb_min: Decimal
    memory_gb_max: Decimal
    memory_gb_step: Decimal


class Target(_Strict):
    id: str
    name: str
    provider: str
    region: str
    billing_model: BillingModel
    scales_to_zero: bool = False
    mode: Literal["sync", "async"] = "sync"
    limits: Limits
    cold_start: ColdStart = ColdStart()
    duration_granularity_s: Decimal = Decimal(0)
    bills_init: bool = False
    min_vcpus: float = 0.0
    min_memory_gib: float = 0.0
    price_from: tuple[str, ...] = Field(
        (), description="targets whose prices (and options) fill in"
    )
    addons: tuple[str, ...] = Field((), description="meters charged from price_from targets")
    options: tuple[Option, ...] = ()
    refused_options: dict[str, str] = Field(default_factory=dict)
    task_sizes: tuple[TaskSize, ...] = ()
    prices: tuple[Price, ...] = ()
    free_tier: tuple[FreeAllowance, ...] = ()
    commitments: tuple[Commitment, ...] = ()
    serves: Literal["model", "hosted_llm"] = Field(
        "model", description="hosted_llm: runs the provider's models (no GPU of yours needed)"
    )
    neurons_per_m_input: Decimal = Field(
        Decimal(0), description="Cloudflare Workers AI: Neurons per million input tokens"
    )
    neurons_per_m_output: Decimal = Decimal(0)
    note: str = ""

    def commitment(self, term: str) -> Commitment:
        """The named term, or ``CatalogError`` listing the terms this target offers."""
        for c in self.commitments:
            if c.term == term:
                return c
        offered = ", ".join(c.term for c in self.commitments) or "none"
        raise CatalogError(
            f"commitments.{self.id}: {self.name} offers no term {term!r} (offered: {offered})"
        )


class CatalogMeta(_Strict):
    version: str
    currency: Literal["USD"]
    hours_per_month: Decimal
    stale_after_days: int = 180


class Catalog(_Strict):
    catalog: CatalogMeta
    sources: tuple[Source, ...]
    targets: tuple[Target, ...]

    @model_validator(mode="after")
    def _references(self) -> Catalog:
        ids = [t.id for t in self.targets]
        if len(ids) != len(set(ids)):
            raise ValueError("target ids must be unique")
        sources = {s.id for s in self.sources}
        for t in self.targets:
            refs = [
                t.limits.source,
                *(p.source for p in t.prices),
                *(f.source for f in t.free_tier),
                *(c.source for c in t.commitments),
            ]
            for ref in refs:
                if ref not in sources:
                    raise ValueError(f"target {t.id}: unknown source {ref!r}")
            for other in t.price_from:
                if other not in ids:
                    raise ValueError(f"target {t.id}: price_from names unknown target {other!r}")
            for meter in t.addons:
                if not any(p.meter == meter for o in t.price_from for p in self._raw(o).prices):
                    raise ValueError(f"target {t.id}: add-on meter {meter!r} has no price")
            names = {o.name for o in t.options}
            for p in t.prices:
                if p.option is not None and names and p.option not in names:
                    raise ValueError(f"target {t.id}: price for unknown option {p.option!r}")
        return self

    def _raw(self, target_id: str) -> Target:
        return next(t for t in self.targets if t.id == target_id)

    # -- lookups -----------------------------------------------------------------
    def target(self, target_id: str) -> Target:
        for t in self.targets:
            if t.id == target_id:
                return t
        raise CatalogError(
            f"unknown target {target_id!r}; known: {', '.join(t.id for t in self.targets)}"
        )

    def source_url(self, source_id: str) -> str:
        for s in self.sources:
            if s.id == source_id:
                return s.url
        return source_id

    def options(self, target: Target) -> tuple[Option, ...]:
        """The target's options, or those of the first ``price_from`` target that has some."""
        if target.options:
            return target.options
        for other in target.price_from:
            found = self.target(other).options
            if found:
                return found
        return ()

    def price(self, target: Target, meter: str, option: str | None = None) -> Price:
        """The price of ``meter`` (for ``option``), looking through ``price_from``."""
        for t in (target, *(self.target(o) for o in target.price_from)):
            for p in t.prices:
                if p.meter == meter and p.option in (None, option):
                    return p
        raise CatalogError(
            f"target {target.id} has no price for meter {meter!r}"
            + (f" and option {option!r}" if option else "")
        )

    def hours_per_month(self) -> Decimal:
        return self.catalog.hours_per_month


# -- loading -----------------------------------------------------------------------
class _DecimalLoader(yaml.SafeLoader):
    """Reads YAML floats as Decimal so 0.0000166667 stays exactly that."""


def _decimal(loader: yaml.SafeLoader, node: yaml.Node) -> Decimal:
    return Decimal(str(loader.construct_scalar(node)).replace("_", ""))  # type: ignore[arg-type]


_DecimalLoader.add_constructor("tag:yaml.org,2002:float", _decimal)


def parse_catalog(data: Any, origin: str = "catalog") -> Catalog:
    """Validate raw catalog data; a missing or unknown field raises ``CatalogError``."""
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors()[:10]:
            where = ".".join(str(part) for part in err["loc"]) or "(top)"
            lines.append(f"{where}: {err['msg']}")
        raise CatalogError(f"{origin} is invalid: " + "; ".join(lines)) from exc


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load and validate a catalog file (the packaged one when ``path`` is None)."""
    if path is None:
        return default_catalog()
    return _load(Path(path))


@lru_cache(maxsize=1)
def default_catalog() -> Catalog:
    return _load(DEFAULT_CATALOG_PATH)


def _load(path: Path) -> Catalog:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc.strerror}") from exc
    try:
        data = yaml.load(text, Loader=_DecimalLoader)
    except yaml.YAMLError as exc:
        raise CatalogError(f"catalog {path} is not valid YAML: {exc}") from exc
    return parse_catalog(data, origin=f"catalog {path}")


# -- overrides ---------------------------------------------------------------------
class PriceOverride(BaseModel):
    """Replace a price or discount it, e.g. a negotiated rate or another region's price."""

    model_config = ConfigDict(extra="forbid")

    target: str
    meter: str | None = Field(None, description="null: every meter of the target")
    option: str | None = Field(None, description="null: every option")
    usd: Decimal | None = Field(None, ge=0, description="the new price, in the price's own unit")
    discount_pct: Decimal | None = Field(None, gt=-100, lt=100, description="percent off")

    @model_validator(mode="after")
    def _one_change(self) -> PriceOverride:
        if (self.usd is None) == (self.discount_pct is None):
            raise ValueError("give exactly one of usd or discount_pct")
        return self

    def matches(self, target: Target, price: Price) -> bool:
        return (
            target.id == self.target
            and self.meter in (None, price.meter)
            and self.option in (None, price.option)
        )


_OVERRIDE_RE = re.compile(
    r"^(?P<target>[A-Za-z0-9._-]+)(?::(?P<meter>[A-Za-z0-9_]+))?(?::(?P<option>[A-Za-z0-9._-]+))?"
    r"=(?P<value>-?[0-9.]+)(?P<pct>%)?$"
)


def parse_override(text: str) -> PriceOverride:
    """``TARGET[:METER[:OPTION]]=USD`` or ``TARGET[:METER[:OPTION]]=-20%`` (20% off)."""
    match = _OVERRIDE_RE.match(text.strip())
    if not match:
        raise CatalogError(
            f"cannot read price override {text!r}; write TARGET[:METER[:OPTION]]=USD "
            "(aws.sagemaker.realtime:instance_hour:ml.m5.xlarge=0.20) or TARGET=-15%"
        )
    try:
        value = Decimal(match["value"])
    except InvalidOperation as exc:
        raise CatalogError(f"bad number in price override {text!r}") from exc
    fields: dict[str, Any] = {
        "target": match["target"],
        "meter": match["meter"],
        "option": match["option"],
    }
    if match["pct"]:
        fields["discount_pct"] = -value  # "-20%" is twenty percent off
    else:
        fields["usd"] = value
    try:
        return PriceOverride(**fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(part) for part in err["loc"]) or "value"
        if field == "discount_pct":
            # The user wrote "-150%": say it in their terms (a discount is at most 100%).
            raise CatalogError(
                f"price override {text!r}: discount_pct must be between -100% and 100% "
                f"(got {-fields['discount_pct']}%)"
            ) from exc
        raise CatalogError(f"price override {text!r}: {field}: {err['msg']}") from exc


def apply_overrides(catalog: Catalog, overrides: list[PriceOverride], today: date) -> Catalog:
    """A copy of ``catalog`` with the overrides applied; each must match some price."""
    if not overrides:
        return catalog
    used = [False] * len(overrides)
    targets = []
    for target in catalog.targets:
        prices = []
        for original in target.prices:
            price = original
            for i, ov in enumerate(overrides):
                if ov.matches(target, price):
                    used[i] = True
                    price = _override(price, ov, today)
            prices.append(price)
        targets.append(target.model_copy(update={"prices": tuple(prices)}))
    for ov, hit in zip(overrides, used, strict=True):
        if not hit:
            catalog.target(ov.target)  # unknown target: a clearer message
            raise CatalogError(
                f"price override for {ov.target}"
                + (f":{ov.meter}" if ov.meter else "")
                + (f":{ov.option}" if ov.option else "")
                + " matches no price in the catalog"
            )
    sources = catalog.sources
    if all(s.id != USER_SOURCE_ID for s in sources):
        sources = (*sources, Source(id=USER_SOURCE_ID, url="user override", kind="user"))
    return catalog.model_copy(update={"targets": tuple(targets), "sources": sources})


def _override(price: Price, ov: PriceOverride, today: date) -> Price:
    if ov.usd is not None:
        update: dict[str, Any] = {"usd": ov.usd, "tiers": ()}
        note = f"user price {ov.usd}"
    else:
        assert ov.discount_pct is not None
        factor = (Decimal(100) - ov.discount_pct) / Decimal(100)
        update = {
            "usd": None if price.usd is None else price.usd * factor,
            "tiers": tuple(t.model_copy(update={"usd": t.usd * factor}) for t in price.tiers),
        }
        note = f"{ov.discount_pct}% off the catalog price"
    update |= {"source": USER_SOURCE_ID, "as_of": today, "confidence": "user", "note": note}
    return price.model_copy(update=update)
