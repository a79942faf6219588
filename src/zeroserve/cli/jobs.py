"""`zeroserve jobs ...`: async jobs and the dead-letter queue."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from zeroserve.cli.client import Client, console

app = typer.Typer(help="Inspect and retry async jobs.", no_args_is_help=True)


def _table(title: str, jobs: list[dict[str, Any]]) -> Table:
    table = Table(title=title)
    for col in ("job", "endpoint", "status", "attempts", "age", "error"):
        table.add_column(col, overflow="fold")
    now = time.time()
    for job in jobs:
        table.add_row(
            job["job_id"],
            job["endpoint"] or f"batch {job.get('batch_run')} shard {job.get('shard')}",
            job["status"],
            f"{job['attempts']}/{job['max_attempts']}",
            f"{now - job['created_at']:.0f}s",
            (job.get("error") or "")[:80],
        )
    return table


@app.command("list")
def list_jobs(
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed, dead, cancelled")
    ] = None,
    endpoint: Annotated[str | None, typer.Option(help="only this endpoint's jobs")] = None,
    limit: Annotated[int, typer.Option(help="newest first, at most this many")] = 50,
) -> None:
    """List recent jobs."""
    params = {
        k: v
        for k, v in {"status": status, "endpoint": endpoint, "limit": limit}.items()
        if v is not None
    }
    console.print(_table("jobs", Client().get("/api/jobs", params=params)))


@app.command()
def show(job_id: str) -> None:
    """Show a job with its result (or result URI) and webhook delivery."""
    console.print_json(json.dumps(Client().get(f"/api/jobs/{job_id}")))


@app.command()
def retry(job_id: str) -> None:
    """Queue a dead or failed job again."""
    job = Client().post(f"/api/jobs/{job_id}/retry")
    console.print(f"job {job_id} is {job['status']} again")


@app.command("dead-letters")
def dead_letters(
    endpoint: Annotated[str | None, typer.Option(help="only this endpoint's jobs")] = None,
) -> None:
    """List jobs that used all their attempts."""
    params = {"endpoint": endpoint} if endpoint else {}
    console.print(_table("dead letters", Client().get("/api/jobs/dead-letters", params=params)))
