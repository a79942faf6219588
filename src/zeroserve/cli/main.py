"""The `zeroserve` command."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from zeroserve import __version__
from zeroserve.cli import batch, cost, endpoints, jobs, llm, models, monitor
from zeroserve.cli.client import fail, print_error
from zeroserve.errors import ZeroserveError
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
monitor.register(app)
app.add_typer(llm.app, name="llm")
app.command()(endpoints.deploy)
app.command()(endpoints.invoke)

LOG_LEVELS = ("debug", "info", "warning", "error")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"zeroserve {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """zeroserve: serve models as real-time, serverless, async and batch endpoints."""


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
    from zeroserve.settings import Settings, settings_error

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
    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level {log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    try:
        settings = Settings(log_level=log_level, log_json=not text_logs, **overrides)  # type: ignore[arg-type]
    except ValueError as exc:  # pydantic's ValidationError included
        fail(f"invalid settings: {settings_error(exc)}")
    from zeroserve.integrity import StateCorrupted, secure_data_dir

    secure_data_dir(settings.data_dir)  # 0700, and umask 077 for every file we write
    try:
        serve(settings, access_log=access_log)
    except StateCorrupted as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(3) from None


@app.command()
def demo(
    requests: Annotated[int, typer.Option(help="requests per concurrency level")] = 2000,
    keep: Annotated[bool, typer.Option(help="keep the demo's data directory")] = False,
) -> None:
    """Train a fraud model, serve it as scikit-learn and as ONNX, and compare them."""
    from zeroserve.cli.demo import run_demo

    raise typer.Exit(run_demo(requests, keep))


def run(args: list[str] | None = None) -> int:
    """Run one command; every error becomes one line on stderr and a non-zero code."""
    try:
        result = app(args, standalone_mode=False)
    except typer.TyperException as exc:  # usage errors, bad options
        if type(exc).__name__ == "NoArgsIsHelpError":
            typer.echo(exc.format_message())
            return 2
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        print_error(exc.format_message() + hint)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        print_error("aborted")
        return 1
    except ZeroserveError as exc:
        status = getattr(exc, "http_status", None)  # set on errors the server answered
        print_error(exc.message + (f" ({status})" if status else ""))
        return 1
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print_error(f"{exc.strerror or exc}{where}")
        return 1
    except Exception as exc:
        if os.environ.get("ZEROSERVE_DEBUG"):
            raise
        print_error(
            f"unexpected {type(exc).__name__}: {exc} (set ZEROSERVE_DEBUG=1 for the traceback, "
            "and please report it)"
        )
        return 1
    return result if isinstance(result, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
