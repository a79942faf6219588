"""Batch transform runs under /api/batch."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from zeroserve.jobs.batch_service import BatchRequest

router = APIRouter()


def service(request: Request) -> Any:
    return request.app.state.zs.batch_service


@router.post("/batch", status_code=201)
async def start_batch(request: Request, body: BatchRequest) -> dict[str, Any]:
    """Plan the shards, serve the model and queue one job per shard."""
    result: dict[str, Any] = await service(request).start(body)
    return result


@router.get("/batch")
async def list_batches(request: Request) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = await service(request).list_runs()
    return result


@router.get("/batch/{run_id}")
async def batch_status(request: Request, run_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await service(request).status(run_id)
    return result


@router.post("/batch/{run_id}/cancel")
async def cancel_batch(request: Request, run_id: str) -> dict[str, Any]:
    """Stop before the next shards; finished shards stay; resume continues."""
    result: dict[str, Any] = await service(request).cancel(run_id)
    return result


@router.post("/batch/{run_id}/resume")
async def resume_batch(request: Request, run_id: str) -> dict[str, Any]:
    """Run the shards that are not done (after a cancel, a failure or a crash)."""
    result: dict[str, Any] = await service(request).resume(run_id)
    return result
