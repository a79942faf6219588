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
from contextvars import ContextVar
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
    busy_s: float | None = None  # container targets: seconds busy serving
    alive_s: float | None = None  # container targets: seconds billed (busy + idle + starts)
    commitment: str | None = None  # the savings plan or reserved term priced, in words


# -- formatting ------------------------------------------------------------------------
def dec(x: float | int | Decimal) -> Decimal:
    return x if isinstance(x, Decimal) else Decimal(str(x))


# Cost curves price thousands of volumes and never show a formula: skip writing them.
FORMULAS: ContextVar[bool] = ContextVar("cost_formulas", default=True)


def fmt(x: float | int | Decimal) -> str:
    """A quantity for a formula: 10,000,000 / 0.1 / 1,234.5678 / 0.0000166667."""
    if not FORMULAS.get():
        return ""
    d = dec(x)
    if abs(d) < Decimal("1e-6"):
        d = Decimal(0)  # an expected count of 1e-20 cold starts reads better as 0
    if d == d.to_integral_value():
        return f"{int(d):,}"
    if abs(d) >= 1:
        text = f"{d.quantize(Decimal('0.0001'), ROUND_HALF_UP, context=WIDE):,f}"
    else:
        text = format(Context(prec=6).create_decimal(d), "f")
    return text.rstrip("0").rstrip(".")


EXACT_CONTAINERS = 2_000
"""Beyond this many containers' worth of load, lifetime is the always-alive bound."""
WIDE = Context(prec=80)
"""Enough digits to round any bill to the cent."""


def money(x: Decimal) -> str:
    cents = x.quantize(CENT, ROUND_HALF_UP, context=WIDE)  # huge bills are still shown
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
    by_meter: dict[str, Decimal] = field(default_factory=dict)
    busy_s: Decimal | None = None
    alive_s: Decimal | None = None
    commitment: str | None = None

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
            cost = (quantity - free) * price.usd / price.per  # type: ignore[operator]
            self.exact.append(cost)
            self.by_meter[price.meter] = self.by_meter.get(price.meter, Decimal(0)) + cost
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
        rounded = cost.quantize(CENT, ROUND_HALF_UP, context=WIDE)
        self.exact.append(cost)
        self.by_meter[price.meter] = self.by_meter.get(price.meter, Decimal(0)) + cost
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
                    usd=-float(off.quantize(CENT, ROUND_HALF_UP, context=WIDE)),
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

    def apply_commitment(self) -> None:
        """A savings plan or reserved term the profile names: a discount, commitment shown."""
        term = self.profile.commitments.get(self.target.id)
        if term is None:
            return
        c = self.target.commitment(term)
        base = sum((v for m, v in self.by_meter.items() if m in c.meters), Decimal(0))
        if base <= 0:
            return
        off = base * c.discount_pct / 100
        committed = base - off
        self.commitment = (
            f"{c.text}: {money(committed)} a month for {c.months} months "
            f"({money(committed * c.months)} in all)"
        )
        self.exact.append(-off)
        self.used.append(c.as_of)
        self.items.append(
            LineItem(
                name=f"{c.term} commitment",
                usd=-float(off.quantize(CENT, ROUND_HALF_UP, context=WIDE)),
                formula=(
                    f"{fmt(c.discount_pct)}% off {money(base)} of {', '.join(c.meters)} = "
                    f"{money(-off)}; you commit to {self.commitment}"
                ),
                quantity=1.0,
                unit="month",
                unit_usd=-float(off),
                per=1.0,
                source=self.catalog.source_url(c.source),
                as_of=c.as_of.isoformat(),
                confidence=c.confidence,
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


def _billed_wakes(b: _Bill) -> Decimal:
    """Cold starts a month for billing INIT time: the Poisson count, never falling with traffic.

    ``n exp(-n T / S)`` peaks at one arrival per keep-warm window and falls after it;
    beyond the peak the count is held there, since environments are also recycled and
    scaled out under steady traffic (and a bill must not fall as traffic grows).
    """
    _, colds = _cold(b)
    p, t = b.profile, b.target
    if p.cold_start_fraction is not None or not colds or t.cold_start.keep_warm_s <= 0:
        return colds
    peak_n = b.seconds / dec(t.cold_start.keep_warm_s)  # arrivals at which n exp(-x) peaks
    if b.n <= peak_n:
        return colds
    return peak_n * dec(math.exp(-1.0))


@dataclass(slots=True)
class Lifetime:
    """Seconds containers are alive in a month, and what they are made of."""

    busy: Decimal
    idle: Decimal
    starts: Decimal
    alive: Decimal
    containers: int
    wakes: Decimal

    def text(self) -> str:
        return (
            f"alive {fmt(self.alive)} s: busy {fmt(self.busy)} s, idle within keep-warm "
            f"{fmt(self.idle)} s, starts {fmt(self.starts)} s"
        )


TAIL_EPS = 1e-12  # containers needed with a smaller probability than this are left out


def _poisson_tails(lam: float) -> tuple[int, list[float]]:
    """``(lo, tails)`` with P(N >= m) = tails[m - lo] for N ~ Poisson(lam); 1 below ``lo``."""
    spread = 12 * math.sqrt(lam) + 30
    lo, hi = max(0, int(lam - spread)), int(lam + spread) + 1
    pmf = [math.exp(m * math.log(lam) - lam - math.lgamma(m + 1)) for m in range(lo, hi + 1)]
    tails, acc = [0.0] * len(pmf), 0.0
    for i in range(len(pmf) - 1, -1, -1):
        acc += pmf[i]
        tails[i] = min(acc, 1.0)
    if lo == 0:
        tails = [1.0, *tails[1:]]
    return lo, tails


def lifetime(b: _Bill, capacity: Decimal, keep_warm_s: float, start_s: Decimal) -> Lifetime:
    """Container-seconds billed for a month of Poisson arrivals.

    One container: busy time, plus for every idle gap the shorter of the gap and
    the keep-warm window T (with arrivals at rate r a gap contributes
    (1 - exp(-rT)) / r on average, so n gaps give S (1 - exp(-rT)) in a month of S
    seconds), plus the start time of each wake-up (a gap longer than T); at most S.
    Several containers: requests in flight are Poisson with mean r x duration
    (containers scale out on demand), and the j-th container is woken by the
    arrivals that find the first j - 1 full, at rate r_j = r x P(in flight >=
    (j - 1) x capacity); each container is billed like the first at its own rate.
    ``containers`` is what the peak needs at the measured per-container capacity.
    """
    p = b.profile
    seconds = b.seconds
    busy = b.n * b.d / capacity
    peak = dec(p.peak(float(seconds)))
    containers = max(
        math.ceil(peak / capacity - Decimal("1e-9")),
        math.ceil(busy / seconds - Decimal("1e-9")),
        1,
    )
    if not b.target.scales_to_zero:
        alive = dec(max(containers, p.min_instances)) * seconds
        return Lifetime(
            busy, max(alive - busy, Decimal(0)), Decimal(0), alive, containers, Decimal(0)
        )
    if b.n == 0:
        return Lifetime(Decimal(0), Decimal(0), Decimal(0), Decimal(0), 0, Decimal(0))
    s_f, r, cap, start = float(seconds), float(b.n / seconds), float(capacity), float(start_s)
    lam = r * float(b.d)
    if lam / cap > EXACT_CONTAINERS:
        # So busy that no container ever idles past its keep-warm: all are alive all
        # month. Exact summing would take one step per container (a client could ask
        # for 10^15); this bound is never below the exact sum, so bills stay monotone.
        # Containers the exact sum could reach: the Poisson tail (TAIL_EPS) ends within 8 sigma.
        reached = max(containers, math.ceil((lam + 8 * math.sqrt(lam)) / cap) + 1)
        alive = max(dec(reached) * seconds, busy)
        return Lifetime(busy, alive - busy, Decimal(0), alive, reached, Decimal(0))
    lo, tails = _poisson_tails(lam)

    def at_least(m: int) -> float:
        return 1.0 if m < lo else (tails[m - lo] if m - lo < len(tails) else 0.0)

    alive_f = starts_f = wakes_f = 0.0
    j = 1
    while True:
        reach = at_least(math.ceil((j - 1) * cap - 1e-9))  # an arrival finds j - 1 full
        if reach < TAIL_EPS:
            break
        busy_j = s_f * at_least(math.floor((j - 1) * cap + 1e-9) + 1)
        x = r * reach * keep_warm_s
        idle_j = s_f * -math.expm1(-x)
        if j == 1 and p.cold_start_fraction is not None:
            wakes_j = float(b.n) * p.cold_start_fraction
        else:
            wakes_j = s_f * r * reach * math.exp(-x)
        alive_f += min(s_f, busy_j + idle_j + wakes_j * start)
        starts_f += wakes_j * start
        wakes_f += wakes_j
        j += 1
    alive = max(dec(alive_f), busy)  # float sums of the busy shares can fall a hair short
    # What is shown adds up to what is billed: the caps come off the idle time first.
    starts_shown = min(dec(starts_f), alive - busy)
    idle_shown = max(Decimal(0), alive - busy - starts_shown)
    return Lifetime(busy, idle_shown, starts_shown, alive, containers, dec(wakes_f))


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
    if b.target.serves == "hosted_llm" and not opt.tokens_per_s:
        count = p.min_instances
        b.sizing = (
            f"{count} x {opt.name} (min_instances): the provider publishes no tokens a second "
            "per unit; ask for your quota's figure and set min_instances"
        )
        return count, 1
    if opt.tokens_per_s and p.is_llm:
        # A model unit serves a known token rate: size from the peak token rate.
        peak = peak * p.output_tokens_per_request / p.duration_for(b.candidate_id)
        per_instance, capacity = 1, opt.tokens_per_s
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
        if any(pr.meter == "provisioned_second" for pr in b.target.prices):
            peak = dec(p.peak(float(b.seconds)))
            envs = max(p.min_instances, math.ceil(peak - Decimal("1e-9")))
            q["provisioned_second"] = (
                "provisioned concurrency",
                dec(envs) * b.seconds,
                f"{envs} provisioned x {fmt(b.seconds)} s",
            )
            b.sizing += f"; {envs} provisioned for a peak of {peak:.3g}"
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
            wakes = _billed_wakes(b)
            qty += wakes * init * gb
            how = f"({req} x {dur} + {fmt(wakes)} cold starts x {fmt(init)} s init) x {fmt(gb)} GB"
        q["gb_second"] = ("compute", qty, how)
        if any(pr.meter == "provisioned_gb_second" for pr in t.prices):
            # Provisioned concurrency: enough warm environments for the peak, all month.
            peak = dec(p.peak(float(b.seconds)))
            envs = max(p.min_instances, math.ceil(peak - Decimal("1e-9")))
            q["provisioned_gb_second"] = (
                "provisioned concurrency",
                dec(envs) * b.seconds * gb,
                f"{envs} environment(s) x {fmt(b.seconds)} s x {fmt(gb)} GB",
            )
            b.sizing += f"; {envs} provisioned environment(s) for a peak of {peak:.3g}"
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
    if t.serves != "hosted_llm" and p.memory_mb > b.option.memory_gib * 1024:
        b.reasons.append(
            f"needs {p.memory_mb:,} MB of memory; "
            f"{b.option.name} has {int(b.option.memory_gib * 1024):,} MB"
        )
    inst_h, how = dec(count) * hours, f"{count} x {fmt(hours)} h"
    if t.scales_to_zero:
        # Billed while an instance lives: busy, idle within the cool-down, and starts.
        life = lifetime(
            b,
            dec(per_instance) * dec(p.replica_concurrency),
            t.cold_start.keep_warm_s,
            _cold_p50(b),
        )
        b.busy_s, b.alive_s = life.busy, life.alive
        inst_h = life.alive / 3600
        how = f"({life.text()}) / 3600"
        b.sizing += f"; scales to zero between bursts ({life.text()})"
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
    """Modal, RunPod, Cloud Run instance-based, Replicate, HF endpoints: container lifetime."""
    t, p = b.target, b.profile
    life = lifetime(b, dec(p.replica_concurrency), t.cold_start.keep_warm_s, _cold_p50(b))
    b.busy_s, b.alive_s = life.busy, life.alive
    secs = life.alive
    how = f"({life.text()})"
    b.sizing = (
        f"{life.text()}; {fmt(life.alive / b.seconds)} container(s) alive on average; "
        f"{life.containers} carry the peak of {p.peak(float(b.seconds)):.3g} in flight"
    )
    vcpus = dec(max(p.vcpus, t.min_vcpus))
    mem = dec(max(p.memory_mb / 1024, t.min_memory_gib))
    cores = max(vcpus / 2, Decimal("0.125"))  # Modal bills physical cores (2 vCPU each)
    gpus = dec(b.option.gpu_count if b.option else 0)
    return {
        "second": ("compute", secs, how),
        "instance_hour": ("instance", secs / 3600, f"{how} / 3600"),
        "cpu_core_second": ("CPU", secs * cores, f"{how} x {fmt(cores)} core(s)"),
        "vcpu_second": ("vCPU", secs * vcpus, f"{how} x {fmt(vcpus)} vCPU"),
        "gib_second": ("memory", secs * mem, f"{how} x {fmt(mem)} GiB"),
        "gpu_second": ("GPU", secs * gpus, f"{how} x {fmt(gpus)} GPU"),
    }


def share(x: Decimal) -> str:
    """`` x 0.25`` for a share of a quantity, nothing for all of it."""
    return f" x {fmt(x)}" if x != 1 else ""


def _has(b: _Bill, meter: str) -> bool:
    return any(p.meter == meter for p in b.target.prices)


def per_token(b: _Bill) -> Quantities:
    """Per-token LLM APIs: tokens in and out, cache reads and writes, batch, or Neurons."""
    p, n, t = b.profile, b.n, b.target
    if not p.is_llm:
        b.reasons.append("a per-token LLM API serves hosted LLMs; this workload has no tokens")
    context = t.limits.context_tokens
    tokens = p.input_tokens_per_request + p.output_tokens_per_request
    if context is not None and tokens > context:
        b.reasons.append(
            f"{tokens:,} tokens per request exceed the {context:,}-token context window"
        )
    tin, tout = n * p.input_tokens_per_request, n * p.output_tokens_per_request
    req = f"{fmt(n)} req"
    if _has(b, "neuron"):
        # Cloudflare Workers AI bills Neurons; each model converts tokens at its own rate.
        neurons = (tin * t.neurons_per_m_input + tout * t.neurons_per_m_output) / 1_000_000
        return {
            "neuron": (
                "Neurons",
                neurons,
                f"({req} x {p.input_tokens_per_request:,} in x {fmt(t.neurons_per_m_input)}/1M + "
                f"{req} x {p.output_tokens_per_request:,} out x "
                f"{fmt(t.neurons_per_m_output)}/1M) Neurons",
            ),
            "plan_month": ("Workers Paid plan", Decimal(1), "1 month"),
        }
    q: Quantities = {
        m: (m, Decimal(0), "")
        for m in (
            "cache_read_token",
            "cache_write_token",
            "batch_input_token",
            "batch_output_token",
        )
    }
    cached = dec(p.cached_input_share) if _has(b, "cache_read_token") else Decimal(0)
    written = dec(p.cache_write_share) if _has(b, "cache_write_token") else Decimal(0)
    batch = dec(p.batch_share) if _has(b, "batch_input_token") else Decimal(0)
    plain_in = 1 - cached - written
    if cached:
        q["cache_read_token"] = (
            "cached input tokens",
            tin * cached,
            f"{req} x {p.input_tokens_per_request:,} tokens{share(cached)} cached",
        )
    if written:
        q["cache_write_token"] = (
            "cache writes",
            tin * written,
            f"{req} x {p.input_tokens_per_request:,} tokens{share(written)} written to cache",
        )
    # Batch calls pay the batch rate on their uncached input and all their output.
    q["input_token"] = (
        "input tokens",
        tin * plain_in * (1 - batch),
        f"{req} x {p.input_tokens_per_request:,} tokens{share(plain_in * (1 - batch))}",
    )
    q["output_token"] = (
        "output tokens",
        tout * (1 - batch),
        f"{req} x {p.output_tokens_per_request:,} tokens{share(1 - batch)}",
    )
    if batch:
        q["batch_input_token"] = (
            "batch input tokens",
            tin * plain_in * batch,
            f"{req} x {p.input_tokens_per_request:,} tokens{share(plain_in * batch)} in batches",
        )
        q["batch_output_token"] = (
            "batch output tokens",
            tout * batch,
            f"{req} x {p.output_tokens_per_request:,} tokens{share(batch)} in batches",
        )
    return q


def batch_job(b: _Bill) -> Quantities:
    """AWS Batch on spot: instance-seconds to get through the month's rows, no idle instance."""
    p, t = b.profile, b.target
    assert b.option is not None
    rows = b.n * dec(p.rows_per_request)
    if p.rows_per_s is not None:
        per_s, basis = dec(p.rows_per_s), "given"
    else:
        opt = b.option
        by_cpu = int(opt.vcpus // p.vcpus) if opt.vcpus else 1
        by_mem = int(opt.memory_gib * 1024 // p.memory_mb) if opt.memory_gib else 1
        replicas = max(1, min(by_cpu, by_mem))
        per_s = dec(replicas * p.replica_concurrency) * dec(p.rows_per_request) / b.d
        basis = f"{replicas} replica(s) x {p.replica_concurrency:g} / {fmt(b.d)} s per request"
    # One job a day, each paying a start (instance boot and image pull) on top of its rows.
    jobs = (b.hours / 24).to_integral_value(ROUND_CEILING)
    start = dec(t.cold_start.p50_s)
    busy = rows / per_s
    inst_s = busy + jobs * start if rows > 0 else Decimal(0)
    b.busy_s, b.alive_s = busy, inst_s
    b.sizing = (
        f"{fmt(rows)} rows / {fmt(per_s)} rows/s ({basis}) = {fmt(busy)} instance-s, "
        f"+ {fmt(jobs)} daily jobs x {fmt(start)} s start"
    )
    return {
        "instance_hour": (
            "instances",
            inst_s / 3600,
            f"({fmt(rows)} rows / {fmt(per_s)} rows/s + {fmt(jobs)} jobs x {fmt(start)} s) / 3600",
        )
    }


ESTIMATORS: dict[str, Callable[[_Bill], Quantities]] = {
    "per_request_duration": per_request_duration,
    "instance_hours": instance_hours,
    "per_second_container": per_second_container,
    "per_token": per_token,
    "batch_job": batch_job,
}
