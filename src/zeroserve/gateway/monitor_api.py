"""Routes for traffic, rollouts, shadow/A-B/drift reports, the prediction log and
feedback. ``admin_router`` mounts under ``/api`` behind the admin key guard;
``data_router`` (feedback) at the root behind the data-plane guard.

Wiring in ``gateway/app.py`` (the lead's composition root)::

    monitor = MonitorService(registry, controller.apply, metrics_registry=metrics.registry)
    controller.extra_managers += monitor.managers()
    api.state.monitor = monitor
    api.include_router(monitor_api.admin_router, prefix="/api", dependencies=guard)
    api.include_router(monitor_api.data_router, dependencies=[Depends(data_guard(settings))])
    # lifespan: monitor.start() after controller.start(); await monitor.stop() before it stops
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, UploadFile
from pydantic import BaseModel, Field
from starlette.responses import HTMLResponse, Response

from zeroserve.control.rollout import RolloutPlan
from zeroserve.control.traffic import set_traffic
from zeroserve.errors import BadRequest, Conflict
from zeroserve.gateway.monitor_service import MonitorService
from zeroserve.monitor.evaluate import check_evaluation_set, evaluation_key
from zeroserve.monitor.query import parse_duration, query
from zeroserve.monitor.report import render_html
from zeroserve.stats import finite
from zeroserve.types import EndpointSpec

admin_router = APIRouter()
data_router = APIRouter()


def monitor(request: Request) -> MonitorService:
    return request.app.state.monitor  # type: ignore[no-any-return]


class TrafficChange(BaseModel):
    weights: dict[str, float] = Field(
        description="weight per MODEL:VERSION (or variant name); unlisted variants leave",
        examples=[{"fraud:3": 90, "fraud:4": 10}],
    )


class RolloutStart(BaseModel):
    to: str = Field(description="the canary, MODEL:VERSION (or MODEL:alias, MODEL@stage)")
    steps: list[float] = Field([5, 25, 50, 100], description="canary percentages")
    bake_s: float = Field(30.0, ge=0, description="time at each step before it may advance")
    min_requests: int = Field(20, ge=1, description="canary requests before any verdict")
    alpha: float = Field(0.01, gt=0, lt=1, description="false-rollback rate per guard")
    error_margin: float = Field(0.01, ge=0, le=1)
    latency_ratio: float = Field(1.5, ge=1)
    latency_slack_ms: float = Field(5.0, ge=0)
    score_threshold: float = Field(0.1, gt=0)
    label_margin: float = Field(0.02, ge=0, le=1)
    on_input_drift: str = Field("hold", pattern="^(hold|rollback|ignore)$")


class LoggingChange(BaseModel):
    rate: float = Field(ge=0, le=1, description="share of requests to log, 0..1")


class LogQuery(BaseModel):
    since: str | None = Field("1h", description="window, e.g. 15m, 1h, 7d; null for all")
    sql: str | None = Field(None, description="one SELECT over `predictions` and `feedback`")


class Feedback(BaseModel):
    request_id: str = Field(min_length=1, description="the X-Request-Id of the answer")
    outcome: Any = Field(None, description="the observed label or value for a one-row request")
    outcomes: list[Any] | None = Field(None, description="one observed outcome per row")


async def _apply_spec(request: Request, spec: EndpointSpec) -> None:
    svc = monitor(request)
    await asyncio.to_thread(svc.registry.put_endpoint, spec)
    await svc.rollouts.apply(spec)


@admin_router.put("/endpoints/{name}/traffic")
async def put_traffic(request: Request, name: str, body: TrafficChange) -> dict[str, Any]:
    """Set the traffic split; new model versions become variants."""
    svc = monitor(request)
    if name in svc.rollouts.canaries:
        raise Conflict(f"endpoint {name!r} has a rollout running; abort it before setting traffic")
    spec = await asyncio.to_thread(svc.registry.get_endpoint, name)

    def resolve(model: str, ref: str) -> int:
        return svc.registry.get_version(model, ref or None).version

    new = await asyncio.to_thread(set_traffic, spec, body.weights, resolve)
    await _apply_spec(request, new)
    total = sum(v.weight for v in new.variants)
    return {"endpoint": name, "weights": {v.name: v.weight / total * 100 for v in new.variants}}


@admin_router.put("/endpoints/{name}/logging")
async def put_logging(request: Request, name: str, body: LoggingChange) -> dict[str, Any]:
    svc = monitor(request)
    spec = await asyncio.to_thread(svc.registry.get_endpoint, name)
    spec = spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"log_sample_rate": body.rate})}
    )
    await _apply_spec(request, spec)
    return {"endpoint": name, "log_sample_rate": body.rate}


@admin_router.post("/endpoints/{name}/rollout", status_code=201)
async def start_rollout(request: Request, name: str, body: RolloutStart) -> dict[str, Any]:
    """Start a canary rollout to ``to``; it promotes or rolls back by itself."""
    model, sep, ref = body.to.partition(":")
    if "@" in model:
        model, _, stage = model.partition("@")
        ref = f"@{stage}"
    elif not sep:
        raise BadRequest(f"--to {body.to!r}: write MODEL:VERSION, e.g. fraud:4")
    try:
        plan = RolloutPlan.from_dict(body.model_dump(exclude={"to"}))
    except ValueError as exc:
        raise BadRequest(f"rollout plan: {exc}") from None
    return await monitor(request).rollouts.start(name, model, ref or None, plan)


@admin_router.get("/endpoints/{name}/rollout")
async def rollout_status(request: Request, name: str) -> dict[str, Any]:
    return await asyncio.to_thread(monitor(request).rollouts.status, name)


@admin_router.delete("/endpoints/{name}/rollout")
async def abort_rollout(request: Request, name: str) -> dict[str, Any]:
    """Abort the running rollout: traffic returns to the baseline at once."""
    return await monitor(request).rollouts.abort(name)


@admin_router.get("/rollouts")
async def list_rollouts(request: Request, state: str | None = None) -> list[dict[str, Any]]:
    return await asyncio.to_thread(monitor(request).rollouts.list_rollouts, state)


@admin_router.get("/endpoints/{name}/shadow")
async def shadow_report(request: Request, name: str) -> dict[str, Any]:
    return finite(await asyncio.to_thread(monitor(request).shadow, name))  # type: ignore[no-any-return]


@admin_router.get("/endpoints/{name}/ab")
async def ab_report(request: Request, name: str, window: str = "7d") -> dict[str, Any]:
    report = await asyncio.to_thread(monitor(request).ab, name, parse_duration(window))
    return finite(report)  # type: ignore[no-any-return]


@admin_router.get("/endpoints/{name}/drift", response_model=None)
async def drift_report(
    request: Request,
    name: str,
    window: str = "24h",
    variant: str | None = None,
    format: Annotated[str, Query(pattern="^(json|html)$")] = "json",
) -> dict[str, Any] | Response:
    report = await asyncio.to_thread(monitor(request).drift, name, parse_duration(window), variant)
    if format == "html":
        pages = [render_html(r) for r in report["variants"] if "features" in r]
        return HTMLResponse("\n".join(pages) or "<p>no variant has a reference profile</p>")
    return finite(report)  # type: ignore[no-any-return]


@admin_router.post("/endpoints/{name}/logs/query")
async def logs_query(request: Request, name: str, body: LogQuery) -> dict[str, Any]:
    svc = monitor(request)
    since = parse_duration(body.since) if body.since else None
    await asyncio.to_thread(svc.predlog.flush)
    result = await asyncio.to_thread(query, svc.registry.store, name, since_s=since, sql=body.sql)
    return result.to_dict()


class GateRequest(BaseModel):
    require_better: list[str] = Field(
        description="METRIC:MARGIN the candidate must beat production by, e.g. accuracy:0.01"
    )


@admin_router.put("/models/{name}/evaluation")
async def put_evaluation(
    request: Request, name: str, file: Annotated[UploadFile, File(description=".npz: x, y")]
) -> dict[str, Any]:
    """Store the model's evaluation set (used by promotion gates)."""
    svc = monitor(request)
    await asyncio.to_thread(svc.registry.get_model, name)
    data = await file.read()
    rows = check_evaluation_set(data)
    await asyncio.to_thread(svc.registry.store.put_bytes, evaluation_key(name), data)
    return {"model": name, "rows": rows}


@admin_router.post("/models/{name}/versions/{version}/gate")
async def promotion_gate(
    request: Request, name: str, version: int, body: GateRequest
) -> dict[str, Any]:
    """Does ``version`` beat production on the evaluation set by every margin? A 409
    that explains itself when not."""
    report = await monitor(request).gate(name, version, body.require_better)
    if not report["passed"]:
        raise Conflict(
            f"{name}:{version} does not beat production: " + "; ".join(report["reasons"]),
            **finite(report),
        )
    return finite(report)  # type: ignore[no-any-return]


@data_router.post("/v1/endpoints/{name}/feedback")
async def feedback(request: Request, name: str, body: Feedback) -> dict[str, Any]:
    """Join an observed outcome to a logged prediction by its request id."""
    outcomes = body.outcomes if body.outcomes is not None else [body.outcome]
    if not outcomes or any(o is None for o in outcomes):
        raise BadRequest("send 'outcome' (one row) or 'outcomes' (one per row), not null")
    return await asyncio.to_thread(monitor(request).feedback, name, body.request_id, outcomes)
