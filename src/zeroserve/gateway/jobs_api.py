"""Routes for async jobs: status and cancel on the data plane, management under /api/jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from zeroserve.errors import Conflict
from zeroserve.jobs.queue import JobStatus

MAX_LIST_LIMIT = 1000
ListLimit = Annotated[
    int, Query(ge=1, le=MAX_LIST_LIMIT, description=f"at most {MAX_LIST_LIMIT} jobs")
]

data_router = APIRouter()
admin_router = APIRouter()


def service(request: Request) -> Any:
    return request.app.state.zs.async_service


@data_router.get("/v1/jobs/{job_id}")
async def job_status(request: Request, job_id: str) -> dict[str, Any]:
    """Status of an async job, with its result inline (up to 1 MB) or by URI."""
    result: dict[str, Any] = await service(request).status(job_id)
    return result


@data_router.delete("/v1/jobs/{job_id}")
async def cancel_job(request: Request, job_id: str) -> dict[str, Any]:
    """Cancel a job that has not started; 409 if it is running or done."""
    result: dict[str, Any] = await service(request).cancel(job_id)
    return result


@admin_router.get("/jobs")
async def list_jobs(
    request: Request,
    status: JobStatus | None = None,
    endpoint: str | None = None,
    limit: ListLimit = 100,
) -> list[dict[str, Any]]:
    svc = service(request)
    queue = f"endpoint:{endpoint}" if endpoint else None
    jobs = await asyncio.to_thread(svc.queue.list, status=status, queue=queue, limit=limit)
    return [svc.describe(j) for j in jobs]


@admin_router.get("/jobs/dead-letters")
async def dead_letters(
    request: Request, endpoint: str | None = None, limit: ListLimit = 100
) -> list[dict[str, Any]]:
    svc = service(request)
    queue = f"endpoint:{endpoint}" if endpoint else None
    jobs = await asyncio.to_thread(svc.queue.dead_letters, queue, limit)
    return [svc.describe(j) for j in jobs]


@admin_router.get("/jobs/{job_id}")
async def show_job(request: Request, job_id: str) -> dict[str, Any]:
    result: dict[str, Any] = await service(request).status(job_id)
    return result


@admin_router.post("/jobs/{job_id}/retry")
async def retry_job(request: Request, job_id: str) -> dict[str, Any]:
    """Queue a dead or failed job again, with its attempts reset."""
    svc = service(request)
    if not await asyncio.to_thread(svc.queue.retry, job_id):
        job = await asyncio.to_thread(svc.queue.get, job_id)
        raise Conflict(
            f"job {job_id} is {job.status.value}; only dead or failed jobs can be retried"
        )
    job = await asyncio.to_thread(svc.queue.get, job_id)
    svc.wake(job.payload["endpoint"])
    result: dict[str, Any] = await svc.status(job_id)
    return result


@admin_router.get("/endpoints/{name}/webhook-secret")
async def webhook_secret(request: Request, name: str) -> dict[str, str]:
    """The key that signs this endpoint's webhooks (HMAC-SHA256)."""
    return {
        "endpoint": name,
        "secret": service(request).webhook_secret(name),
        "header": "X-Zeroserve-Signature",
        "scheme": "t=<unix>,v1=hex(hmac(secret, t.body))",
    }
