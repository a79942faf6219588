"""The `zeroserve` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from zeroserve.cli import batch, cost, endpoints, jobs, llm, models
from zeroserve.settings import DEFAULT_PORT

app = typer.Typer(
    help="zeroserve: serve models as real-time, serverless, async and batch endpoints.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models.app, name="models")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(jobs.app, name="jobs")
app.add_typer(batch.app, name="batch")
app.add_typer(cost.app, name="cost")
app.add_typer(llm.app, name="llm")
app.command()(endpoints.deploy)
app.command()(endpoints.invoke)


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="bind address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help=f"port (default {DEFAULT_PORT})")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="state directory (default ./.zeroserve)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
    text_logs: Annotated[bool, typer.Option(help="human-readable logs instead of JSON")] = False,
    access_log: Annotated[bool, typer.Option(help="log every request (costs throughput)")] = False,
    processes: Annotated[
        int | None,
        typer.Option(help="gateway processes sharing the port (default 1; about one per core)"),
    ] = None,
) -> None:
    """Start the gateway and the controller."""
    from zeroserve.server import serve
    from zeroserve.settings import Settings

    overrides = {
        k: v
        for k, v in {
            "host": host,
            "port": port,
            "data_dir": data_dir,
            "gateway_processes": processes,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(log_level=log_level, log_json=not text_logs, **overrides)  # type: ignore[arg-type]
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    serve(settings, access_log=access_log)


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="requests per concurrency level")] = 2000,
    keep: Annotated[bool, typer.Option(help="keep the demo's data directory")] = False,
) -> None:
    """Train a fraud model, serve it as scikit-learn and as ONNX, and compare them."""
    from zeroserve.cli.demo import run_demo

    raise typer.Exit(run_demo(requests, keep))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
