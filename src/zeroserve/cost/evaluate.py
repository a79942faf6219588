"""Evaluate candidates: price each (target, option) for a profile and check its limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from decimal import Decimal

from zeroserve.cost.catalog import Catalog, CatalogError, Option, Target
from zeroserve.cost.estimators import (
    COLD_P95_SHARE,
    ESTIMATORS,
    FORMULAS,
    WIDE,
    Estimate,
    ImpossibleConfiguration,
    _Bill,
    _cold,
    dec,
    human_bytes,
    money,
)
from zeroserve.cost.profile import WorkloadProfile
from zeroserve.errors import BadRequest

UNNEEDED_GPU = "has a GPU the workload does not need"


def hours_per_month(catalog: Catalog, profile: WorkloadProfile) -> Decimal:
    return dec(profile.hours_per_month) if profile.hours_per_month else catalog.hours_per_month()


def candidates(catalog: Catalog, profile: WorkloadProfile) -> Iterator[tuple[Target, str | None]]:
    """Every (target, option) to price: options enumerated on instance and container targets."""
    for t in catalog.targets:
        if t.billing_model == "addon":
            continue
        enumerated = (
            t.billing_model in ("instance_hours", "per_second_container", "batch_job")
            and not t.task_sizes
        )
        options = catalog.options(t) if enumerated else ()
        pinned = profile.instance_types.get(t.id)
        if pinned is not None and options:
            yield t, pinned
        elif options:
            for o in options:
                yield t, o.name
        else:
            yield t, None


def candidate_id(target: Target, option: str | None) -> str:
    return f"{target.id}:{option}" if option else target.id


def resolve_option(catalog: Catalog, target: Target, name: str | None) -> Option | None:
    """The named option, or ``ImpossibleConfiguration`` saying why the target refuses it."""
    if name is None:
        return None
    for o in catalog.options(target):
        if o.name == name:
            return o
    if name in target.refused_options:
        raise ImpossibleConfiguration(target.refused_options[name], target=target.id, option=name)
    offered = ", ".join(o.name for o in catalog.options(target))
    raise ImpossibleConfiguration(
        f"{target.name} has no option {name!r} in the catalog (offered: {offered}); "
        "add it to your catalog with a price to use it",
        target=target.id,
        option=name,
    )


def estimate(
    catalog: Catalog,
    profile: WorkloadProfile,
    target_id: str,
    option: str | None = None,
    *,
    today: date,
    explain: bool = True,
) -> Estimate:
    """Price one candidate; raises ``ImpossibleConfiguration`` for a refused pin."""
    token = FORMULAS.set(explain)
    try:
        return _estimate(catalog, profile, target_id, option, today=today, explain=explain)
    finally:
        FORMULAS.reset(token)


def _estimate(
    catalog: Catalog,
    profile: WorkloadProfile,
    target_id: str,
    option: str | None,
    *,
    today: date,
    explain: bool,
) -> Estimate:
    target = catalog.target(target_id)
    opt = resolve_option(catalog, target, option)
    bill = _Bill(
        catalog=catalog,
        target=target,
        option=opt,
        profile=profile,
        hours=hours_per_month(catalog, profile),
        free_tier=profile.free_tier,
        candidate_id=candidate_id(target, option),
        explain=explain,
    )
    quantities = ESTIMATORS[target.billing_model](bill)
    for price in bill.meters():
        if price.meter not in quantities:
            raise CatalogError(
                f"target {target.id}: the {target.billing_model} estimator "
                f"has no meter {price.meter!r}"
            )
        name, qty, how = quantities[price.meter]
        bill.charge(name, price, qty, how)
    bill.apply_credits()
    bill.apply_commitment()
    _check(bill)
    if explain:
        total = sum((Decimal(str(i.usd)) for i in bill.items), Decimal(0))
    else:
        total = sum(bill.exact, Decimal(0)).quantize(Decimal("0.01"), context=WIDE)
    if opt is not None and opt.term_months and bill.commitment is None:
        m = opt.term_months
        bill.commitment = (
            f"a {m}-month term: {money(total)} a month for {m} months ({money(total * m)} in all)"
        )
    oldest = min(bill.used) if bill.used else None
    stale = catalog.catalog.stale_after_days
    if oldest is not None and (today - oldest).days > stale:
        bill.warnings.append(
            f"uses a price from {oldest.isoformat()}, {(today - oldest).days} days old "
            f"(over {stale}); re-check it"
        )
    return Estimate(
        id=bill.candidate_id,
        target=target.id,
        option=opt.name if opt else bill.option_label,
        name=target.name + (f" {opt.name}" if opt else ""),
        provider=target.provider,
        billing_model=target.billing_model,
        scales_to_zero=target.scales_to_zero,
        feasible=not bill.reasons,
        monthly_usd=float(total),
        monthly_usd_unrounded=float(sum(bill.exact, Decimal(0))),
        reasons=bill.reasons,
        warnings=bill.warnings,
        line_items=bill.items,
        sizing=bill.sizing,
        duration_s=float(bill.d),
        p95_latency_s=bill.p95_s,
        cold_start_fraction=bill.cold_fraction if target.scales_to_zero else None,
        oldest_as_of=oldest.isoformat() if oldest else None,
        unneeded_gpu=UNNEEDED_GPU in bill.warnings,
        busy_s=None if bill.busy_s is None else float(bill.busy_s),
        alive_s=None if bill.alive_s is None else float(bill.alive_s),
        commitment=bill.commitment,
    )


def check_profile(catalog: Catalog, profile: WorkloadProfile) -> None:
    """Refuse (4xx, naming the field) pins and terms that name nothing in the catalog."""
    for target_id, option in profile.instance_types.items():
        try:
            target = catalog.target(target_id)
        except CatalogError as exc:
            raise BadRequest(f"instance_types.{target_id}: {exc.message}") from exc
        names = {o.name for o in catalog.options(target)}
        if not names:
            raise BadRequest(
                f"instance_types.{target_id}: {target.name} has no options to pin; remove it"
            )
        if option not in names and option not in target.refused_options:
            raise BadRequest(
                f"instance_types.{target_id}: {target.name} has no option {option!r} "
                f"(offered: {', '.join(sorted(names))})"
            )
    for target_id, term in profile.commitments.items():
        try:
            target = catalog.target(target_id)
        except CatalogError as exc:
            raise BadRequest(f"commitments.{target_id}: {exc.message}") from exc
        try:
            target.commitment(term)
        except CatalogError as exc:
            raise BadRequest(exc.message) from exc


def estimate_all(catalog: Catalog, profile: WorkloadProfile, *, today: date) -> list[Estimate]:
    """Every candidate; refused configurations come back infeasible with the reason."""
    check_profile(catalog, profile)
    out = []
    for target, option in candidates(catalog, profile):
        try:
            out.append(estimate(catalog, profile, target.id, option, today=today))
        except ImpossibleConfiguration as exc:
            out.append(
                Estimate(
                    id=candidate_id(target, option),
                    target=target.id,
                    option=option,
                    name=target.name + (f" {option}" if option else ""),
                    provider=target.provider,
                    billing_model=target.billing_model,
                    scales_to_zero=target.scales_to_zero,
                    feasible=False,
                    monthly_usd=None,
                    monthly_usd_unrounded=None,
                    reasons=[f"refused: {exc.message}"],
                )
            )
    return out


# -- limits ----------------------------------------------------------------------------
def _check(b: _Bill) -> None:
    """Rule the candidate out (reasons) or flag it (warnings) against its limits."""
    t, p, lim, opt = b.target, b.profile, b.target.limits, b.option
    if t.billing_model == "per_token":
        return  # the estimator checked tokens and context
    d = float(b.d)
    if t.serves == "hosted_llm":
        if not p.is_llm:
            b.reasons.append(f"{t.name} serves the provider's LLMs; this workload has no tokens")
    else:
        _check_gpu(b, t, p, opt)
    if lim.timeout_s is not None and d > lim.timeout_s:
        b.reasons.append(f"a request takes {d:g} s; {t.name} times out at {lim.timeout_s:g} s")
    if t.mode == "async" and not p.allow_async:
        b.reasons.append(
            "answers asynchronously (queue and S3); "
            "set allow_async if clients can poll or take a callback"
        )
    limit = lim.async_payload_bytes if t.mode == "async" else lim.sync_payload_bytes
    size = p.payload_bytes()
    if limit is not None and size > limit:
        b.reasons.append(f"payload of {human_bytes(size)} is over the {human_bytes(limit)} limit")
    peak = p.peak(float(b.seconds))
    if lim.max_concurrency is not None and peak > lim.max_concurrency:
        text = f"peak concurrency {peak:.3g} is over the limit of {lim.max_concurrency:,}"
        if lim.concurrency_soft:
            b.warnings.append(text + " (a soft quota: ask the provider to raise it)")
        else:
            b.reasons.append(text)
    if t.id == "aws.ec2.spot":
        b.warnings.append(
            "spot capacity can be reclaimed with two minutes' notice; the price moves"
        )
    _check_latency(b, t, p, d)


def _check_gpu(b: _Bill, t: Target, p: WorkloadProfile, opt: Option | None) -> None:
    has_gpu = opt is not None and opt.gpu is not None
    wanted = p.gpu or ("any" if p.is_llm else None)
    if wanted is None:
        if has_gpu:
            b.warnings.append(UNNEEDED_GPU)
        return
    if not has_gpu:
        where = opt.name if opt is not None and b.catalog.options(t) else t.name
        b.reasons.append(f"needs a GPU ({wanted}); {where} has none")
        return
    assert opt is not None and opt.gpu is not None
    if wanted.lower() == "any" and opt.gpu.lower().startswith("inferentia"):
        # Inferentia runs only models compiled with the Neuron SDK: ask for it by name.
        b.reasons.append(
            f"{opt.name} has {opt.gpu}, which needs a Neuron-compiled model; "
            f"set gpu: {opt.gpu} if yours is"
        )
        return
    if wanted.lower() != "any" and opt.gpu.lower() != wanted.lower():
        b.reasons.append(f"needs a {wanted} GPU; {opt.name} has {opt.gpu}")
    if p.gpu_memory_gb > opt.gpu_memory_gb:
        b.reasons.append(
            f"needs {p.gpu_memory_gb:g} GB of GPU memory; {opt.name} has {opt.gpu_memory_gb:g} GB"
        )


def _check_latency(b: _Bill, t: Target, p: WorkloadProfile, d: float) -> None:
    share, _ = _cold(b)
    b.cold_fraction = share
    cold_p95 = t.cold_start.p95_s + p.model_load_s
    b.p95_s = d + cold_p95 if t.scales_to_zero and share > COLD_P95_SHARE else d
    sla = p.latency_sla_p95_s
    if sla is None or b.p95_s <= sla:
        return
    if b.p95_s > d:
        b.reasons.append(
            f"p95 with cold starts is about {b.p95_s:.3g} s ({share:.0%} of requests cold, "
            f"cold start p95 {cold_p95:g} s), over the {sla:g} s SLA"
        )
    else:
        b.reasons.append(f"compute alone takes {d:g} s, over the {sla:g} s p95 SLA")
