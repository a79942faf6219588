"""``/api/cost``: estimates from a profile, reports from metered usage, the catalog.

Dependencies come from ``request.app.state``: ``session_factory`` and ``meter``,
and optionally ``cost_catalog`` (the packaged catalog otherwise).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from zeroserve.cost.advisor import Advice, advise
from zeroserve.cost.catalog import Catalog, PriceOverride, apply_overrides, default_catalog
from zeroserve.cost.meter import EndpointUsage, Meter, is_internal, parse_window
from zeroserve.cost.profile import WorkloadProfile
from zeroserve.cost.report import render_html
from zeroserve.errors import NotFound

router = APIRouter()


class EstimateRequest(BaseModel):
    """A workload profile, optional price overrides, and the date to judge price age by."""

    profile: WorkloadProfile
    overrides: list[PriceOverride] = Field(default_factory=list)
    today: date | None = Field(None, description="default: the server's date")
    curves: bool = Field(True, description="compute cost curves, crossovers and change points")


@dataclass(slots=True)
class EndpointReport:
    """One endpoint's month: measured usage, the profile made of it, and the advice.

    Internal endpoints (batch transform runs) come back marked, without advice,
    unless ``include_internal`` is set.
    """

    endpoint: str
    window: str
    usage: EndpointUsage
    profile: dict[str, Any]
    advice: Advice | None
    internal: bool = False
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)


def _catalog(request: Request) -> Catalog:
    catalog = getattr(request.app.state, "cost_catalog", None)
    return catalog if isinstance(catalog, Catalog) else default_catalog()


def _estimate(request: Request, body: EstimateRequest) -> Advice:
    today = body.today or date.today()
    catalog = apply_overrides(_catalog(request), body.overrides, today)
    return advise(catalog, body.profile, today=today, with_curves=body.curves)


@router.post("/estimate", response_model=Advice, summary="Rank every target for a workload profile")
def estimate(request: Request, body: EstimateRequest) -> Advice:
    return _estimate(request, body)


@router.post(
    "/estimate.html", response_class=HTMLResponse, summary="The estimate as an HTML report"
)
def estimate_html(request: Request, body: EstimateRequest) -> HTMLResponse:
    return HTMLResponse(render_html(_estimate(request, body)))


def _reports(
    request: Request,
    endpoint: str | None,
    window: str,
    latency_sla_p95_s: float | None,
    gpu: str | None,
    free_tier: bool,
    hours_per_month: float | None,
    curves: bool,
    include_internal: bool = False,
) -> list[EndpointReport]:
    meter: Meter = request.app.state.meter
    sessions = request.app.state.session_factory
    now = time.time()
    meter.flush(sessions, now)  # include what is still in memory
    usage = meter.usage(sessions, endpoint, now - parse_window(window), now)
    if not usage.endpoints:
        raise NotFound(
            f"no usage metered {'for endpoint ' + repr(endpoint) + ' ' if endpoint else ''}"
            f"in the last {window}; serve some traffic or use `zeroserve cost estimate`"
        )
    catalog = _catalog(request)
    hours = hours_per_month or float(catalog.hours_per_month())
    today = date.today()
    out = []
    for used in usage.endpoints:
        profile = used.to_profile(
            hours, latency_sla_p95_s=latency_sla_p95_s, gpu=gpu, free_tier=free_tier
        )
        internal = is_internal(used.endpoint)
        skip = internal and not include_internal and used.endpoint != endpoint
        warning = used.window_warning(window, hours)
        out.append(
            EndpointReport(
                endpoint=used.endpoint,
                window=window,
                usage=used,
                profile=profile.model_dump(mode="json"),
                advice=None if skip else advise(catalog, profile, today=today, with_curves=curves),
                internal=internal,
                warnings=[warning] if warning else [],
                assumptions=used.assumptions(),
            )
        )
    return out


@router.get(
    "/report",
    response_model=list[EndpointReport],
    summary="Extrapolate metered usage to a month and rank targets for it",
)
def report(
    request: Request,
    endpoint: Annotated[str | None, Query(description="default: every endpoint")] = None,
    window: Annotated[str, Query(description="how far back to look: 7d, 24h, 90m")] = "7d",
    latency_sla_p95_s: Annotated[float | None, Query(gt=0)] = None,
    gpu: Annotated[
        str | None, Query(description="GPU the model needs: any, T4, L4, A10G...")
    ] = None,
    free_tier: bool = False,
    hours_per_month: Annotated[float | None, Query(gt=0)] = None,
    curves: bool = True,
    include_internal: Annotated[
        bool, Query(description="also price internal endpoints (batch-<run>)")
    ] = False,
) -> list[EndpointReport]:
    return _reports(
        request,
        endpoint,
        window,
        latency_sla_p95_s,
        gpu,
        free_tier,
        hours_per_month,
        curves,
        include_internal,
    )


@router.get("/report.html", response_class=HTMLResponse, summary="One endpoint's report as HTML")
def report_html(
    request: Request,
    endpoint: str,
    window: str = "7d",
    latency_sla_p95_s: Annotated[float | None, Query(gt=0)] = None,
    gpu: str | None = None,
    free_tier: bool = False,
    hours_per_month: Annotated[float | None, Query(gt=0)] = None,
) -> HTMLResponse:
    found = _reports(
        request, endpoint, window, latency_sla_p95_s, gpu, free_tier, hours_per_month, True
    )
    advice = found[0].advice
    assert advice is not None  # a named endpoint is always priced
    return HTMLResponse(render_html(advice))


@router.get("/catalog", response_model=Catalog, summary="The pricing catalog in use")
def catalog(request: Request) -> Catalog:
    return _catalog(request)
