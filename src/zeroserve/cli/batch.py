"""`zeroserve batch ...`: batch transforms with a progress bar."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from zeroserve.cli.client import Client, console

app = typer.Typer(help="Run a model over a whole dataset.", no_args_is_help=True)


def follow(client: Client, run: dict[str, Any]) -> dict[str, Any]:
    """Poll a run until it stops, with rows done and rows per second."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(f"batch {run['run_id']}", total=run["rows"], rate=0.0)
        while True:
            progress.update(task, completed=run["rows_done"], rate=run["rows_per_s"])
            if run["state"] != "running":
                return run
            time.sleep(0.5)
            run = client.batch_status(run["run_id"])


def report(run: dict[str, Any]) -> None:
    style = {"done": "green", "running": "yellow"}.get(run["state"], "red")
    console.print(
        f"[{style}]{run['state']}[/{style}]: {run['rows_written']:,} rows written "
        f"to {run['output_uri']} ({run['shards_done']}/{run['shards']} shards, "
        f"{run['bad_rows']} bad rows skipped)"
    )
    for error in run.get("errors") or ([run["error"]] if run.get("error") else []):
        console.print(f"  [red]{error}[/red]")


@app.command()
def run(
    model: Annotated[str, typer.Option(help="NAME[:VERSION|:ALIAS] or NAME@stage")],
    input: Annotated[str, typer.Option("--input", help="CSV, JSONL or Parquet: path or URI")],
    output: Annotated[str, typer.Option("--output", help="output directory: path or URI")],
    format: Annotated[str | None, typer.Option(help="csv, jsonl or parquet (input)")] = None,
    output_format: Annotated[str | None, typer.Option(help="default: the input's")] = None,
    id_column: Annotated[str | None, typer.Option(help="column joined to the predictions")] = None,
    shard_rows: Annotated[int, typer.Option(help="rows per shard (one job each)")] = 100_000,
    skip_bad_rows: Annotated[bool, typer.Option(help="write bad rows to errors-*.jsonl")] = False,
    max_replicas: Annotated[int, typer.Option(help="replicas working on the run")] = 2,
    wait: Annotated[bool, typer.Option(help="follow the run with a progress bar")] = True,
) -> None:
    """Start a batch transform; by default, follow it to the end."""
    client = Client()
    options: dict[str, Any] = {
        "format": format,
        "output_format": output_format,
        "id_column": id_column,
        "shard_rows": shard_rows,
        "skip_bad_rows": skip_bad_rows,
        "max_replicas": max_replicas,
    }
    started = client.batch_run(model, input, output, wait=False, **options)
    console.print(
        f"batch run [bold]{started['run_id']}[/bold]: {started['rows']:,} rows in "
        f"{started['shards']} shards"
    )
    if not wait:
        return
    final = follow(client, started)
    report(final)
    if final["state"] != "done":
        raise typer.Exit(1)


@app.command()
def status(run_id: str) -> None:
    """Where a run stands."""
    report(Client().batch_status(run_id))


@app.command()
def resume(run_id: str, wait: Annotated[bool, typer.Option()] = True) -> None:
    """Continue a cancelled, failed or interrupted run where it stopped."""
    client = Client()
    run_ = client.post(f"/api/batch/{run_id}/resume")
    if wait:
        run_ = follow(client, run_)
    report(run_)


@app.command()
def cancel(run_id: str) -> None:
    """Stop a run after the shards in progress; `resume` continues it."""
    report(Client().post(f"/api/batch/{run_id}/cancel"))


@app.command("list")
def list_runs() -> None:
    """Recent batch runs."""
    table = Table(title="batch runs")
    for col in ("run", "model", "state", "rows", "shards", "rows/s", "output"):
        table.add_column(col)
    for r in Client().batch_runs():
        table.add_row(
            r["run_id"],
            r["model"],
            r["state"],
            f"{r['rows_done']:,}/{r['rows']:,}",
            f"{r['shards_done']}/{r['shards']}",
            f"{r['rows_per_s']:,.0f}",
            r["output_uri"],
        )
    console.print(table)
