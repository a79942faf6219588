"""The LLM gateway's control API under ``/api/llm`` (admin keys): models, keys, usage, reload."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from zeroserve.llm.service import LLMService

router = APIRouter(tags=["llm"])


def _svc(request: Request) -> LLMService:
    return request.app.state.llm  # type: ignore[no-any-return]


MAX_BUDGET_USD = Decimal(10**9)
"""A billion dollars: micro-dollars then still fit the ledger's 64-bit integers."""
MAX_RATE = 10**9


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    team: str | None = None
    budget_usd: Decimal | None = Field(None, ge=0, le=MAX_BUDGET_USD)
    rpm: int | None = Field(None, gt=0, le=MAX_RATE)
    tpm: int | None = Field(None, gt=0, le=MAX_RATE)
    models: list[str] | None = Field(None, max_length=1000)


class TeamBudget(BaseModel):
    budget_usd: Decimal | None = Field(None, ge=0, le=MAX_BUDGET_USD)


def _micros(usd: Decimal | None) -> int | None:
    return None if usd is None else int((usd * 1_000_000).to_integral_value())


@router.get("/models")
async def models(request: Request) -> list[dict[str, Any]]:
    svc = _svc(request)
    out = []
    for name, entry in sorted(svc.models.items()):
        out.append(
            {
                "name": name,
                "kind": entry.spec.kind,
                "routing": entry.spec.routing,
                "fallbacks": entry.spec.fallbacks,
                "deployments": [
                    {
                        "name": s.name,
                        "provider": s.spec.provider,
                        "model": s.spec.model,
                        "base_url": s.spec.base_url,
                        "weight": s.spec.weight,
                        "context_window": s.spec.context_window,
                        "price_micros_per_mtok": {
                            "input": s.rates.input,
                            "output": s.rates.output,
                            "cache_read": s.rates.cache_read,
                            "cache_write": s.rates.cache_write,
                        },
                        "breaker": s.breaker,
                        "healthy": s.healthy,
                        "in_flight": s.in_flight,
                        "ttft_ewma_ms": None if s.ttft_ewma_s is None else s.ttft_ewma_s * 1000,
                        "total_ewma_ms": None if s.total_ewma_s is None else s.total_ewma_s * 1000,
                    }
                    for s in entry.states
                ],
            }
        )
    return out


@router.post("/reload")
async def reload(request: Request) -> dict[str, Any]:
    svc = _svc(request)
    config = svc.reload()
    await svc.announce_reload()
    return {"models": [m.name for m in config.models], "source": str(svc.config_source or "")}


@router.post("/keys", status_code=201)
async def create_key(request: Request, spec: KeyCreate) -> dict[str, Any]:
    svc = _svc(request)
    record, secret = await svc.db(
        lambda: svc.ledger.create_key(
            spec.name, spec.team, _micros(spec.budget_usd), spec.rpm, spec.tpm, spec.models
        )
    )
    await svc.refresh_keys()
    return {**record.public(), "key": secret}


@router.get("/keys")
async def list_keys(request: Request) -> list[dict[str, Any]]:
    svc = _svc(request)
    return [k.public() for k in await svc.db(svc.ledger.list_keys)]


@router.delete("/keys/{ref}")
async def revoke_key(request: Request, ref: str) -> dict[str, Any]:
    svc = _svc(request)
    record = await svc.db(svc.ledger.revoke, ref)
    await svc.refresh_keys()
    return record.public()  # type: ignore[no-any-return]


@router.put("/teams/{team}")
async def team_budget(request: Request, team: str, spec: TeamBudget) -> dict[str, Any]:
    svc = _svc(request)
    await svc.db(svc.ledger.set_team_budget, team, _micros(spec.budget_usd))
    return {"team": team, "budget_micros": _micros(spec.budget_usd)}


@router.get("/usage")
async def usage(
    request: Request, by: str = "model", key: str | None = None, since: float | None = None
) -> list[dict[str, Any]]:
    svc = _svc(request)
    await svc.flush()
    return await svc.db(svc.ledger.usage, by, key, since)  # type: ignore[no-any-return]


@router.get("/usage/rows")
async def usage_rows(
    request: Request,
    key: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="at most 1,000 rows")] = 100,
) -> list[dict[str, Any]]:
    svc = _svc(request)
    await svc.flush()
    return await svc.db(svc.ledger.rows, key, limit)  # type: ignore[no-any-return]
