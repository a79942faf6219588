"""Endpoint lifecycle: what a redeploy would change, and endpoints that follow an alias or stage.

A variant is either *pinned* to a version or *follows* a reference (``@production``,
an alias such as ``champion``). When a promotion or an alias change moves that
reference, ``refollow`` re-applies the endpoint's spec with the new version; the
controller starts the new pool, switches the route and drains the old pool, so
requests keep being answered during the switch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from zeroserve.errors import BadRequest, ZeroserveError
from zeroserve.types import EndpointSpec, VariantSpec

if TYPE_CHECKING:
    from zeroserve.control.controller import Controller
    from zeroserve.registry.registry import Registry

log = logging.getLogger("zeroserve.lifecycle")

DRAIN_TIMEOUT_S = 30.0
DRAIN_POLL_S = 0.01


def is_followable(ref: str | None) -> bool:
    """An alias or a stage moves; a version number, ``latest`` or nothing does not follow."""
    return bool(ref) and not str(ref).isdigit() and ref != "latest"


def check_followable(model: str, ref: str | None) -> str:
    if not is_followable(ref):
        given = f"{model}:{ref}" if ref else model
        raise BadRequest(
            f"--follow needs an alias or a stage to follow, e.g. {model}@production or "
            f"{model}:champion; {given} names no moving reference"
        )
    assert ref is not None
    return ref


def reference(model: str, ref: str) -> str:
    return f"{model}{ref}" if ref.startswith("@") else f"{model}:{ref}"


def served_versions(spec: EndpointSpec) -> list[tuple[str, int]]:
    variants = [*spec.variants, *([spec.shadow] if spec.shadow else [])]
    return sorted((v.model, v.version) for v in variants)


def switches_version(current: EndpointSpec, new: EndpointSpec) -> bool:
    """Would ``new`` serve other model versions than ``current``?"""
    return served_versions(current) != served_versions(new)


def describe_versions(spec: EndpointSpec) -> str:
    return ", ".join(f"{model} version {version}" for model, version in served_versions(spec))


def changes(current: EndpointSpec, new: EndpointSpec) -> list[str]:
    """What applying ``new`` over ``current`` changes, one readable item each."""
    found: list[str] = []
    if switches_version(current, new):
        found.append(f"serves {describe_versions(current)} -> {describe_versions(new)}")
    for field in ("mode", "request_timeout_s", "max_concurrency"):
        before, after = getattr(current, field), getattr(new, field)
        if before != after:
            found.append(f"{field} {_show(before)} -> {_show(after)}")
    if len(current.variants) != len(new.variants):
        found.append(f"variants {len(current.variants)} -> {len(new.variants)}")
    for old, fresh in zip(current.variants, new.variants, strict=False):
        found.extend(_variant_changes(old, fresh, len(new.variants) > 1))
    return found


def _variant_changes(old: VariantSpec, new: VariantSpec, named: bool) -> list[str]:
    prefix = f"{new.name}: " if named else ""
    found = []
    if old.follow != new.follow:
        before = f"follows {reference(old.model, old.follow)}" if old.follow else "pinned"
        after = f"follows {reference(new.model, new.follow)}" if new.follow else "pinned"
        found.append(f"{prefix}{before} -> {after}")
    for field in ("weight", "max_batch_size", "max_batch_wait_ms", "memory_limit_mb"):
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            found.append(f"{prefix}{field} {_show(before)} -> {_show(after)}")
    old_scaling, new_scaling = old.scaling.model_dump(), new.scaling.model_dump()
    for field, before in old_scaling.items():
        if new_scaling[field] != before:
            found.append(f"{prefix}{field} {_show(before)} -> {_show(new_scaling[field])}")
    return found


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(getattr(value, "value", value))


def retarget(spec: EndpointSpec, variant: str, version: int) -> EndpointSpec:
    """``spec`` with one variant moved to ``version`` (a new variant name, so a new pool)."""
    variants = [
        v.model_copy(update={"name": f"v{version}", "version": version}) if v.name == variant else v
        for v in spec.variants
    ]
    return spec.model_copy(update={"variants": variants})


def following(specs: list[EndpointSpec], model: str) -> list[EndpointSpec]:
    return [s for s in specs if any(v.model == model and v.follow for v in s.variants)]


async def refollow(registry: Registry, controller: Controller, model: str) -> list[str]:
    """Redeploy the endpoints whose variants follow a reference of ``model`` that moved.

    Returns ``endpoint: version A -> B`` for each switch. A reference that no
    longer resolves (the stage was emptied) leaves the endpoint as it is.
    """
    switched: list[str] = []
    for spec in following(await asyncio.to_thread(registry.list_endpoints), model):
        new = spec
        for variant in spec.variants:
            if variant.model != model or not variant.follow:
                continue
            try:
                target = await asyncio.to_thread(registry.get_version, model, variant.follow)
            except ZeroserveError as exc:
                log.warning(
                    "followed reference resolves to nothing; endpoint unchanged",
                    extra={
                        "endpoint": spec.name,
                        "follows": reference(model, variant.follow),
                        "error": exc.message,
                    },
                )
                continue
            if target.version != variant.version:
                new = retarget(new, variant.name, target.version)
                switched.append(
                    f"{spec.name}: {model} version {variant.version} -> {target.version}"
                )
        if new is not spec:
            await asyncio.to_thread(registry.put_endpoint, new)
            await controller.apply(new)
            log.info(
                "endpoint follows a promotion",
                extra={"endpoint": spec.name, "serves": describe_versions(new)},
            )
    return switched


async def drain(pool: Any, timeout_s: float = DRAIN_TIMEOUT_S) -> bool:
    """Wait until a pool no route points to has answered its requests in flight."""
    deadline = time.monotonic() + timeout_s
    while getattr(pool, "in_flight", 0) > 0:
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(DRAIN_POLL_S)
    return True
