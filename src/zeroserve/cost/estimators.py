"""Estimators: a workload profile and a target become line items with the arithmetic shown.

One estimator per billing model computes the quantity of each meter it knows;
``_Bill.charge`` prices a quantity (free allowance, tiers, rounding) and writes
the formula, e.g. ``10,000,000 req x 0.1 s x $0.00004/s = $40.00``. Money is
Decimal throughout; each line is rounded to the cent and the total is the sum
of the lines, as a bill is.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_CEILING, ROUND_HALF_UP, Context, Decimal

from zeroserve.cost.catalog import Catalog, Option, Price, Target
from zeroserve.cost.profile import WorkloadProfile
from zeroserve.errors import BadRequest

CENT = Decimal("0.01")
GIB = Decimal(2**30)  # AWS and Google bill data and memory "GB" as 2^30 bytes
MIB = 2**20
COLD_P95_SHARE = 0.05  # more than 5% cold requests puts cold starts inside the p95
LCU_NEW_CONNECTIONS_PER_S = Decimal(25)  # one ALB LCU: 25 new connections/s or 1 GB/h
LCU_GB_PER_HOUR = Decimal(1)
ALB_ADDRESSES = 2  # an internet-facing ALB spans at least two AZs, one public IPv4 each


class ImpossibleConfiguration(BadRequest):
    """A pinned option or size the target does not offer; the message says what it does offer."""

    code = "impossible_configuration"


@dataclass(slots=True)
class LineItem:
    name: str
    usd: float
    formula: str
    quantity: float
    unit: str
    unit_usd: float
    per: float
    source: str
    as_of: str
    confidence: str


@dataclass(slots=True)
class Estimate:
    """One candidate (a target, with an option where it has several) priced for one profile."""

    id: str
    target: str
    option: str | None
    name: str
    provider: str
    billing_model: str
    scales_to_zero: bool
    feasible: bool
    monthly_usd: float | None
    monthly_usd_unrounded: float | None
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    line_items: list[LineItem] = field(default_factory=list)
    sizing: str = ""
    duration_s: float = 0.0
    p95_latency_s: float | None = None
    cold_start_fraction: float | None = None
    oldest_as_of: str | None = None
    unneeded_gpu: bool = False


# -- formatting ------------------------------------------------------------------------
def dec(x: float | int | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


def fmt(x: float | int | Decimal) -> str:
    """A quantity for a formula: 10,000,000 / 0.1 / 1,234.5678 / 0.0000166667."""
    d = dec(x)
    if abs(d) < Decimal("1e-6"):
        d = Decimal(0)  # an expected count of 1e-20 cold starts reads better as 0
    if d == d.to_integral_value():
        return f"{int(d):,}"
    if abs(d) >= 1:
        text = f"{d.quantize(Decimal('0.0001'), ROUND_HALF_UP):,f}"
    else:
        text = format(Context(prec=6).create_decimal(d), "f")
    return text.rstrip("0").rstrip(".")


def money(x: Decimal) -> str:
    cents = x.quantize(CENT, ROUND_HALF_UP)
    return f"-${-cents:,}" if cents < 0 else f"${cents:,}"


def rate(price_usd: Decimal, per: Decimal, unit: str) -> str:
    scale = {Decimal(1): "", Decimal(1000): "1K ", Decimal(1_000_000): "1M "}.get(
        per, f"{fmt(per)} "
    )
    return f"${format(price_usd, 'f')}/{scale}{unit}"


def human_bytes(n: int) -> str:
    if n % MIB == 0 and n >= MIB:
        return f"{n // MIB:,} MiB"
    if n >= 1_000_000:
        return f"{n / 1_000_000:,.1f} MB"
    return f"{n:,} bytes"


# -- the bill ----------------------------------------------------------------------------
@dataclass
class _Bill:
    """Context of one candidate's estimate: profile, prices used, lines, reasons."""

    catalog: Catalog
    target: Target
    option: Option | None
    profile: WorkloadProfile
    hours: Decimal
    free_tier: bool
    candidate_id: str
    explain: bool = True  # False: totals only, for cost curves
    items: list[LineItem] = field(default_factory=list)
    exact: list[Decimal] = field(default_factory=list)
    used: list[date] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sizing: str = ""
    option_label: str | None = None
    cold_fraction: float = 0.0
    p95_s: float | None = None

    @property
    def n(self) -> Decimal:
        return dec(self.profile.requests_per_month)

    @property
    def d(self) -> Decimal:
        return dec(self.profile.duration_for(self.candidate_id))

    @property
    def seconds(self) -> Decimal:
        return self.hours * 3600

    def allowance(self, price: Price) -> Decimal:
        if not self.free_tier:
            return Decimal(0)
        return sum(
            (
                a.amount
                for a in self.target.free_tier
                if a.kind == "allowance"
                and a.meter == price.meter
                and a.option in (None, price.option)
            ),
            Decimal(0),
        )

    def charge(self, name: str, price: Price, quantity: Decimal, how: str) -> None:
        """Price ``quantity`` units; ``how`` is the arithmetic that produced it."""
        if quantity <= 0:
            return
        free = min(self.allowance(price), quantity)
        if not self.explain and not price.tiers:
            self.exact.append((quantity - free) * price.usd / price.per)  # type: ignore[operator]
            self.used.append(price.as_of)
            return
        billable = quantity - free
        parts: list[tuple[Decimal, Decimal]] = []
        cost, lower, remaining = Decimal(0), Decimal(0), billable
        for tier in price.rate_tiers():
            span = (
                remaining
                if tier.up_to is None
                else min(remaining, max(Decimal(0), tier.up_to - lower))
            )
            if span > 0 or not parts:
                parts.append((span, tier.usd))
            cost += span * tier.usd / price.per
            remaining -= span
            if tier.up_to is not None:
                lower = tier.up_to
            if remaining <= 0:
                break
        lhs = f"({how} - {fmt(free)} {price.unit} free)" if free else how
        if len(parts) == 1:
            formula = f"{lhs} x {rate(parts[0][1], price.per, price.unit)} = {money(cost)}"
        else:
            tiers = " + ".join(
                f"{fmt(q)} {price.unit} x {rate(r, price.per, price.unit)}" for q, r in parts
            )
            formula = f"{lhs} = {fmt(billable)} {price.unit}: {tiers} = {money(cost)}"
        self._add(name, price, quantity, cost, formula)

    def _add(self, name: str, price: Price, quantity: Decimal, cost: Decimal, formula: str) -> None:
        rounded = cost.quantize(CENT, ROUND_HALF_UP)
        self.exact.append(cost)
        self.used.append(price.as_of)
        self.items.append(
            LineItem(
                name=name,
                usd=float(rounded),
                formula=formula,
                quantity=float(quantity),
                unit=price.unit,
                unit_usd=float(price.rate_tiers()[0].usd),
                per=float(price.per),
                source=self.catalog.source_url(price.source),
                as_of=price.as_of.isoformat(),
                confidence=price.confidence,
            )
        )

    def apply_credits(self) -> None:
        if not self.free_tier:
            return
        for credit in (a for a in self.target.free_tier if a.kind == "credit"):
            total = sum(self.exact, Decimal(0))
            off = min(credit.amount, total)
            if off <= 0:
                continue
            self.exact.append(-off)
            self.used.append(credit.as_of)
            self.items.append(
                LineItem(
                    name="free credit",
                    usd=-float(off.quantize(CENT, ROUND_HALF_UP)),
                    formula=f"min({money(credit.amount)} credit, {money(total)}) = {money(-off)}",
                    quantity=1.0,
                    unit="month",
                    unit_usd=-float(credit.amount),
                    per=1.0,
                    source=self.catalog.source_url(credit.source),
                    as_of=credit.as_of.isoformat(),
                    confidence="secondary",
                )
            )

    def meters(self) -> Iterator[Price]:
        """Prices this candidate pays: its own (for its option) and its add-ons."""
        opt = self.option.name if self.option else self.option_label
        for p in self.target.prices:
            if p.option in (None, opt):
                yield p
        for meter in self.target.addons:
            yield self.catalog.price(self.target, meter, opt)


Quantities = dict[str, tuple[str, Decimal, str]]  # meter -> (line name, quantity, arithmetic)


# -- shared pieces ---------------------------------------------------------------------
def _cold(b: _Bill) -> tuple[float, Decimal]:
    """Share of requests that meet a cold start, and cold starts per month.

    Arrivals are taken as Poisson: a request finds no warm instance when none
    came in the last ``keep_warm_s`` seconds.
    """
    t, p = b.target, b.profile
    if not t.scales_to_zero or t.billing_model == "per_token" or p.requests_per_month == 0:
        return 0.0, Decimal(0)
    if p.cold_start_fraction is not None:
        share = p.cold_start_fraction
    else:
        per_s = p.requests_per_month / float(b.seconds)
        share = math.exp(-per_s * t.cold_start.keep_warm_s)
    # Expected count, not rounded: rounding would put steps in the cost curve.
    return share, b.n * dec(share)


def _cold_p50(b: _Bill) -> Decimal:
    return dec(b.target.cold_start.p50_s + b.profile.model_load_s)


def _memory_mb(b: _Bill) -> int:
    """Configured memory on a target with a memory range: the pin, or the need rounded up."""
    t, p = b.target, b.profile
    rng = t.limits.memory_mb
    pinned = p.memory_mb_by_target.get(t.id)
    if rng is None:
        return pinned or p.memory_mb
    if pinned is not None:
        if not (rng.min <= pinned <= rng.max) or (pinned - rng.min) % rng.step:
            raise ImpossibleConfiguration(
                f"{t.name} offers {fmt(rng.min)}-{fmt(rng.max)} MB in {fmt(rng.step)} MB steps; "
                f"{pinned:,} MB is not one of them"
            )
        return pinned
    need = max(dec(p.memory_mb), rng.min)
    steps = ((need - rng.min) / rng.step).to_integral_value(ROUND_CEILING)
    configured = rng.min + steps * rng.step
    if configured > rng.max:
        b.reasons.append(
            f"needs {p.memory_mb:,} MB of memory; {t.name} offers at most {fmt(rng.max)} MB"
        )
        configured = rng.max
    return int(configured)


def _memory_option(b: _Bill) -> Option:
    """On a target whose memory sizes are options (SageMaker Serverless): the smallest that fits."""
    t, p = b.target, b.profile
    pinned = p.memory_mb_by_target.get(t.id)
    sizes = sorted(b.catalog.options(t), key=lambda o: o.memory_gib)
    if pinned is not None:
        for o in sizes:
            if o.memory_gib * 1024 == pinned:
                return o
        offered = ", ".join(f"{int(o.memory_gib * 1024):,}" for o in sizes)
        raise ImpossibleConfiguration(
            f"{t.name} offers memory sizes of {offered} MB; {pinned:,} MB is not one of them"
        )
    for o in sizes:
        if o.memory_gib * 1024 >= p.memory_mb:
            return o
    b.reasons.append(
        f"needs {p.memory_mb:,} MB of memory; "
        f"{t.name} offers at most {int(sizes[-1].memory_gib * 1024):,} MB"
    )
    return sizes[-1]


def _instances(b: _Bill, opt: Option) -> tuple[int, int]:
    """Always-on sizing: instances for the peak, from measured per-replica capacity."""
    p = b.profile
    peak = p.peak(float(b.seconds))
    if opt.gpu_count:
        per_instance = opt.gpu_count  # one replica per GPU
    else:
        by_cpu = int(opt.vcpus // p.vcpus) if opt.vcpus else 1
        by_mem = int(opt.memory_gib * 1024 // p.memory_mb) if opt.memory_gib else 1
        per_instance = max(1, min(by_cpu, by_mem))
    capacity = per_instance * p.replica_concurrency
    count = max(p.min_instances, math.ceil(peak / capacity - 1e-9))
    b.sizing = (
        f"{count} x {opt.name}: peak {peak:.3g} in flight / ({per_instance} replica(s) x "
        f"{p.replica_concurrency:g} concurrent each), at least {p.min_instances}"
    )
    return count, per_instance


def _data(b: _Bill, q: Quantities) -> None:
    p = b.profile
    for meter, size, label in (
        ("data_in_gb", p.payload_in_bytes, "data in"),
        ("data_out_gb", p.payload_out_bytes, "data out"),
    ):
        gb = b.n * size / GIB
        q[meter] = (label, gb, f"{fmt(b.n)} req x {size:,} B / 2^30")


# -- one estimator per billing model -----------------------------------------------------
def per_request_duration(b: _Bill) -> Quantities:
    """Lambda, SageMaker Serverless, Cloud Run: requests x billed duration x size."""
    t, p = b.target, b.profile
    n, g = b.n, t.duration_granularity_s
    d = b.d
    billed = (d / g).to_integral_value(ROUND_CEILING) * g if g > 0 else d
    req, dur = f"{fmt(n)} req", f"{fmt(billed)} s"
    q: Quantities = {"request": ("requests", n, req)}
    _, colds = _cold(b)
    if b.catalog.options(t):
        opt = _memory_option(b)
        b.option_label = opt.name
        b.sizing = f"{opt.name} memory size"
        q["second"] = ("compute", n * billed, f"{req} x {dur}")
    else:
        mem_mb = _memory_mb(b)
        gb = dec(mem_mb) / 1024
        b.option_label = f"{mem_mb} MB"
        b.sizing = f"{mem_mb:,} MB" + (
            f", {fmt(billed)} s billed per request" if billed != d else ""
        )
        how = f"{req} x {dur} x {fmt(gb)} GB"
        qty = n * billed * gb
        if t.bills_init and colds:
            init = _cold_p50(b)
            qty += colds * init * gb
            how = f"({req} x {dur} + {fmt(colds)} cold starts x {fmt(init)} s init) x {fmt(gb)} GB"
        q["gb_second"] = ("compute", qty, how)
        conc = dec(p.replica_concurrency)
        share = f" / {fmt(conc)} concurrent" if conc != 1 else ""
        q["vcpu_second"] = (
            "vCPU",
            n * billed * dec(p.vcpus) / conc,
            f"{req} x {dur} x {fmt(p.vcpus)} vCPU{share}",
        )
        q["gib_second"] = (
            "memory",
            n * billed * gb / conc,
            f"{req} x {dur} x {fmt(gb)} GiB{share}",
        )
    _data(b, q)
    return q


def instance_hours(b: _Bill) -> Quantities:
    """SageMaker real-time and async, Fargate, EKS, EC2: instances x hours."""
    t, p = b.target, b.profile
    hours, q = b.hours, Quantities()
    _data(b, q)
    q["log_gb"] = (
        "logs",
        b.n * p.log_bytes_per_request / GIB,
        f"{fmt(b.n)} req x {p.log_bytes_per_request} B / 2^30",
    )
    q["storage_gb_month"] = ("artifact storage", dec(p.artifact_gb), f"{fmt(p.artifact_gb)} GB")
    q["control_plane_hour"] = ("control plane", hours, f"1 x {fmt(hours)} h")
    if t.task_sizes:
        return _fargate(b, q)
    assert b.option is not None
    count, per_instance = _instances(b, b.option)
    if p.memory_mb > b.option.memory_gib * 1024:
        b.reasons.append(
            f"needs {p.memory_mb:,} MB of memory; "
            f"{b.option.name} has {int(b.option.memory_gib * 1024):,} MB"
        )
    inst_h, how = dec(count) * hours, f"{count} x {fmt(hours)} h"
    if t.scales_to_zero:
        # Billed while busy, plus a start and a cool-down each time it wakes from zero.
        _, wakes = _cold(b)
        busy = b.n * b.d / (per_instance * dec(p.replica_concurrency))
        idle = wakes * (_cold_p50(b) + dec(t.cold_start.keep_warm_s))
        inst_s = min(busy + idle, max(busy, dec(count) * b.seconds))
        inst_h = inst_s / 3600
        how = (
            f"({fmt(b.n)} req x {fmt(b.d)} s / {per_instance * p.replica_concurrency:g} "
            f"per instance + {fmt(wakes)} wake-ups x "
            f"{fmt(_cold_p50(b) + dec(t.cold_start.keep_warm_s))} s) / 3600"
        )
        b.sizing += "; scales to zero between bursts"
    q["instance_hour"] = ("instances", inst_h, how)
    q["ipv4_hour"] = ("public IPv4", dec(count) * hours, f"{count} address(es) x {fmt(hours)} h")
    return q


def _fargate(b: _Bill, q: Quantities) -> Quantities:
    p, hours = b.profile, b.hours
    need_gb = dec(p.memory_mb) / 1024
    size = None
    for s in b.target.task_sizes:
        if s.vcpus >= dec(p.vcpus) and need_gb <= s.memory_gb_max:
            steps = (
                max(need_gb - s.memory_gb_min, Decimal(0)) / s.memory_gb_step
            ).to_integral_value(ROUND_CEILING)
            size = (s.vcpus, s.memory_gb_min + steps * s.memory_gb_step)
            break
    if size is None:
        biggest = b.target.task_sizes[-1]
        b.reasons.append(
            f"needs {fmt(p.vcpus)} vCPU and {p.memory_mb:,} MB; the largest Fargate task is "
            f"{fmt(biggest.vcpus)} vCPU / {fmt(biggest.memory_gb_max)} GB"
        )
        size = (biggest.vcpus, biggest.memory_gb_max)
    vcpu, mem = size
    b.option_label = f"{fmt(vcpu)} vCPU / {fmt(mem)} GB"
    peak = p.peak(float(b.seconds))
    tasks = max(p.min_instances, math.ceil(peak / p.replica_concurrency - 1e-9))
    b.sizing = (
        f"{tasks} task(s) of {b.option_label}: peak {peak:.3g} in flight / "
        f"{p.replica_concurrency:g} concurrent per task, at least {p.min_instances}"
    )
    q["vcpu_hour"] = (
        "vCPU",
        tasks * vcpu * hours,
        f"{tasks} task(s) x {fmt(vcpu)} vCPU x {fmt(hours)} h",
    )
    q["gb_hour"] = (
        "memory",
        tasks * mem * hours,
        f"{tasks} task(s) x {fmt(mem)} GB x {fmt(hours)} h",
    )
    q["alb_hour"] = ("load balancer", hours, f"1 ALB x {fmt(hours)} h")
    # Each request counted as a new connection: an upper bound when clients keep connections.
    per_s = b.n / b.seconds
    gb_per_h = b.n * (p.payload_in_bytes + p.payload_out_bytes) / GIB / hours
    lcu = max(per_s / LCU_NEW_CONNECTIONS_PER_S, gb_per_h / LCU_GB_PER_HOUR)
    q["lcu_hour"] = (
        "load balancer capacity",
        lcu * hours,
        f"max({fmt(per_s)} new conn/s / 25, {fmt(gb_per_h)} GB/h / 1) LCU x {fmt(hours)} h",
    )
    addresses = tasks + ALB_ADDRESSES
    q["ipv4_hour"] = (
        "public IPv4",
        dec(addresses) * hours,
        f"({tasks} task(s) + {ALB_ADDRESSES} ALB) addresses x {fmt(hours)} h",
    )
    return q


def per_second_container(b: _Bill) -> Quantities:
    """Modal, RunPod, Cloud Run GPU: seconds a container lives, busy or idle."""
    t, p = b.target, b.profile
    _, wakes = _cold(b)
    conc = dec(p.replica_concurrency)
    busy = b.n * b.d / conc
    per_wake = _cold_p50(b) + dec(t.cold_start.keep_warm_s)
    secs = busy + wakes * per_wake
    how = (
        f"({fmt(b.n)} req x {fmt(b.d)} s"
        + (f" / {fmt(conc)}" if conc != 1 else "")
        + f" + {fmt(wakes)} wake-ups x {fmt(per_wake)} s)"
    )
    b.sizing = (
        f"{fmt(secs)} container-s: busy {fmt(busy)} s, start and idle {fmt(wakes * per_wake)} s"
    )
    vcpus = dec(max(p.vcpus, t.min_vcpus))
    mem = dec(max(p.memory_mb / 1024, t.min_memory_gib))
    cores = max(vcpus / 2, Decimal("0.125"))  # Modal bills physical cores (2 vCPU each)
    gpus = dec(b.option.gpu_count if b.option else 0)
    return {
        "second": ("compute", secs, how),
        "cpu_core_second": ("CPU", secs * cores, f"{how} x {fmt(cores)} core(s)"),
        "vcpu_second": ("vCPU", secs * vcpus, f"{how} x {fmt(vcpus)} vCPU"),
        "gib_second": ("memory", secs * mem, f"{how} x {fmt(mem)} GiB"),
        "gpu_second": ("GPU", secs * gpus, f"{how} x {fmt(gpus)} GPU"),
    }


def per_token(b: _Bill) -> Quantities:
    """Per-token LLM APIs: tokens in and out."""
    p, n = b.profile, b.n
    if not p.is_llm:
        b.reasons.append("a per-token LLM API serves hosted LLMs; this workload has no tokens")
    context = b.target.limits.context_tokens
    tokens = p.input_tokens_per_request + p.output_tokens_per_request
    if context is not None and tokens > context:
        b.reasons.append(
            f"{tokens:,} tokens per request exceed the {context:,}-token context window"
        )
    return {
        "input_token": (
            "input tokens",
            n * p.input_tokens_per_request,
            f"{fmt(n)} req x {p.input_tokens_per_request:,} tokens",
        ),
        "output_token": (
            "output tokens",
            n * p.output_tokens_per_request,
            f"{fmt(n)} req x {p.output_tokens_per_request:,} tokens",
        ),
    }


ESTIMATORS: dict[str, Callable[[_Bill], Quantities]] = {
    "per_request_duration": per_request_duration,
    "instance_hours": instance_hours,
    "per_second_container": per_second_container,
    "per_token": per_token,
}
