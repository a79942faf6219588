"""`zeroserve deploy`, `zeroserve endpoints ...` and `zeroserve invoke`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from zeroserve.cli.client import Client, console, fail, parse_model_ref, read_text
from zeroserve.errors import ZeroserveError
from zeroserve.types import Mode

app = typer.Typer(help="List, describe and delete endpoints.", no_args_is_help=True)

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``30s``, ``5m``, ``250ms``, ``1h`` or a number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h|d)?\s*", text)
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 5m or 1h")
    return float(match.group(1)) * UNITS[match.group(2) or "s"]


def deploy(
    model: Annotated[str, typer.Argument(help="NAME, NAME:VERSION, NAME:ALIAS or NAME@stage")],
    endpoint: Annotated[
        str | None, typer.Option(help="endpoint name (default: the model name)")
    ] = None,
    mode: Annotated[Mode, typer.Option(help="realtime, serverless or async")] = Mode.REALTIME,
    min_replicas: Annotated[int | None, typer.Option(help="replicas kept at all times")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="upper bound for the autoscaler")] = None,
    provisioned: Annotated[
        int | None, typer.Option(help="warm replicas kept even when idle")
    ] = None,
    target_concurrency: Annotated[
        float | None, typer.Option(help="in-flight requests per replica")
    ] = None,
    max_queue: Annotated[int | None, typer.Option(help="queued requests before 429")] = None,
    idle_timeout: Annotated[
        str | None, typer.Option(help="scale to zero after this idle time, e.g. 30s")
    ] = None,
    scale_down_delay: Annotated[
        str | None, typer.Option(help="hold replicas this long after load drops, e.g. 30s")
    ] = None,
    memory_limit_mb: Annotated[
        int | None, typer.Option(help="kill a replica above this memory")
    ] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="rows per batch")] = None,
    max_batch_wait_ms: Annotated[
        float | None, typer.Option(help="extra wait to fill a batch")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="request timeout, e.g. 30s")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(help="in-flight requests per endpoint")
    ] = None,
    update: Annotated[
        bool, typer.Option(help="allow switching an existing endpoint to another version")
    ] = False,
    follow: Annotated[
        bool,
        typer.Option(help="follow the alias or stage (NAME@production): promotions redeploy it"),
    ] = False,
) -> None:
    """Serve a model version as an endpoint; returns when it is ready.

    An existing endpoint keeps its version unless --update is given; with
    NAME@stage --follow the endpoint switches whenever another version is promoted.
    """
    name, ref = parse_model_ref(model)
    body: dict[str, Any] = {
        "endpoint": endpoint,
        "update": update,
        "follow": follow,
        "mode": mode.value,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "provisioned": provisioned,
        "target_concurrency": target_concurrency,
        "max_queue": max_queue,
        "idle_timeout_s": parse_duration(idle_timeout) if idle_timeout else None,
        "scale_down_delay_s": parse_duration(scale_down_delay) if scale_down_delay else None,
        "memory_limit_mb": memory_limit_mb,
        "max_batch_size": max_batch_size,
        "max_batch_wait_ms": max_batch_wait_ms,
        "request_timeout_s": parse_duration(timeout) if timeout else None,
        "max_concurrency": max_concurrency,
    }
    client = Client()
    with console.status(f"deploying {model}"):
        result = client.deploy(name, ref, **{k: v for k, v in body.items() if v is not None})
    spec = result["spec"]
    variant = spec["variants"][0]
    console.print(
        f"[green]deployed[/green] {variant['model']} version {variant['version']} as "
        f"endpoint [bold]{spec['name']}[/bold] ({spec['mode']})"
    )
    console.print(f"  {_tracking(variant)}")
    _print_changes(result)
    console.print(f"  POST {client.url}/v1/endpoints/{spec['name']}/invocations")
    console.print(f"  POST {client.url}/v2/models/{spec['name']}/infer")


def _tracking(variant: dict[str, Any]) -> str:
    """``follows fraud@production`` or ``pinned to version 3``."""
    follow = variant.get("follow")
    if follow:
        ref = (
            f"{variant['model']}{follow}"
            if follow.startswith("@")
            else f"{variant['model']}:{follow}"
        )
        return f"follows {ref}"
    return f"pinned to version {variant['version']}"


def _print_changes(result: dict[str, Any]) -> None:
    for change in result.get("changes") or []:
        console.print(f"  changed: {change}")


@app.command()
def update(
    name: str,
    version: Annotated[
        str | None,
        typer.Option(help="serve this version, alias or @stage (e.g. 3, champion, @production)"),
    ] = None,
    follow: Annotated[
        bool | None,
        typer.Option("--follow/--pin", help="follow the alias or stage, or pin the version"),
    ] = None,
    min_replicas: Annotated[int | None, typer.Option(help="replicas kept at all times")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="upper bound for the autoscaler")] = None,
    provisioned: Annotated[
        int | None, typer.Option(help="warm replicas kept even when idle")
    ] = None,
    target_concurrency: Annotated[
        float | None, typer.Option(help="in-flight requests per replica")
    ] = None,
    max_queue: Annotated[int | None, typer.Option(help="queued requests before 429")] = None,
    idle_timeout: Annotated[str | None, typer.Option(help="e.g. 30s")] = None,
    scale_down_delay: Annotated[str | None, typer.Option(help="e.g. 30s")] = None,
    memory_limit_mb: Annotated[int | None, typer.Option(help="kill a replica above this")] = None,
    max_batch_size: Annotated[int | None, typer.Option(help="rows per batch")] = None,
    max_batch_wait_ms: Annotated[float | None, typer.Option(help="wait to fill a batch")] = None,
    timeout: Annotated[str | None, typer.Option(help="request timeout, e.g. 30s")] = None,
    max_concurrency: Annotated[int | None, typer.Option(help="in-flight per endpoint")] = None,
) -> None:
    """Change an endpoint's version, follow/pin or scaling; what is not given stays."""
    changes: dict[str, Any] = {
        "ref": version,
        "follow": follow,
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "provisioned": provisioned,
        "target_concurrency": target_concurrency,
        "max_queue": max_queue,
        "idle_timeout_s": parse_duration(idle_timeout) if idle_timeout else None,
        "scale_down_delay_s": parse_duration(scale_down_delay) if scale_down_delay else None,
        "memory_limit_mb": memory_limit_mb,
        "max_batch_size": max_batch_size,
        "max_batch_wait_ms": max_batch_wait_ms,
        "request_timeout_s": parse_duration(timeout) if timeout else None,
        "max_concurrency": max_concurrency,
    }
    if all(v is None for v in changes.values()):
        fail(f"say what to change, e.g. zeroserve endpoints update {name} --max-replicas 4")
    with console.status(f"updating {name}"):
        result = Client().update_endpoint(name, **changes)
    if not result.get("changes"):
        console.print(f"endpoint {name} already has these settings; nothing changed")
        return
    console.print(f"[green]updated[/green] endpoint [bold]{name}[/bold]")
    _print_changes(result)


@app.command("list")
def list_endpoints() -> None:
    """List endpoints with their variants and replicas."""
    table = Table(title="endpoints")
    for col in (
        "endpoint",
        "mode",
        "variant",
        "model",
        "weight",
        "replicas",
        "in flight",
        "cold starts",
        "version",
    ):
        table.add_column(col)
    for item in Client().endpoints():
        spec, status = item["spec"], item["status"]
        pools = {p["variant"]: p for p in status.get("variants", [])}
        for v in spec["variants"]:
            pool = pools.get(v["name"], {})
            table.add_row(
                spec["name"],
                spec["mode"],
                v["name"],
                f"{v['model']}:{v['version']}",
                f"{v['weight']:g}",
                f"{len(pool.get('replicas', []))}/{pool.get('target_replicas', '?')}",
                str(pool.get("in_flight", 0)),
                str(pool.get("cold_starts", 0)),
                _tracking(v),
            )
    console.print(table)


@app.command()
def describe(name: str) -> None:
    """Show an endpoint's spec, replicas, queue and scaling metrics."""
    client = Client()
    item = client.endpoint(name)
    spec, status = item["spec"], item["status"]
    console.print(
        f"[bold]{spec['name']}[/bold]  mode={spec['mode']}  "
        f"timeout={spec['request_timeout_s']:g}s  "
        f"max_concurrency={spec.get('max_concurrency') or '-'}  "
        f"state={status.get('state', '?')}"
    )
    if status.get("error"):
        console.print(
            f"[red]failed[/red] (attempt {status.get('attempts')}, retrying in "
            f"{status.get('retry_in_s')} s): {status['error']}"
        )
    for v in spec["variants"]:
        hint = (
            "promotions redeploy it"
            if v.get("follow")
            else "promotions do not move it; deploy NAME@stage --follow to follow them"
        )
        console.print(f"  {v['name']}: {_tracking(v)} ({hint})")
    table = Table(show_edge=False)
    for col in (
        "variant",
        "model",
        "replicas",
        "target",
        "queued",
        "in flight",
        "cold starts",
        "zygote",
        "scaling",
    ):
        table.add_column(col)
    pools = {p["variant"]: p for p in status.get("variants", [])}
    for v in spec["variants"]:
        p = pools.get(v["name"], {})
        s = v["scaling"]
        table.add_row(
            v["name"],
            f"{v['model']}:{v['version']}",
            ", ".join(str(r.get("pid", r["address"])) for r in p.get("replicas", [])) or "0",
            str(p.get("target_replicas", "?")),
            str(p.get("queued", 0)),
            str(p.get("in_flight", 0)),
            str(p.get("cold_starts", 0)),
            f"up, load {p.get('zygote_load_s', 0)}s" if p.get("zygote_alive") else "down",
            f"{s['min_replicas']}..{s['max_replicas']}, idle {s['idle_timeout_s']:g}s, "
            f"target {s['target_concurrency'] or 'auto'}/replica",
        )
    console.print(table)
    _print_stats(client, name)


def _print_stats(client: Client, name: str) -> None:
    """Outcomes per variant over the last minute (all gateway processes)."""
    try:
        stats = client.send("GET", f"/api/endpoints/{name}/stats").json()
    except ZeroserveError:
        return
    table = Table(show_edge=False, title="last minute")
    for col in ("variant", "role", "requests", "req/s", "5xx rate", "p50 ms", "p99 ms", "errors"):
        table.add_column(col)
    for v in stats:
        w = v["windows"]["1m"]
        causes = ", ".join(f"{c} {n}" for c, n in w["by_cause"].items()) or "-"
        table.add_row(
            v["variant"],
            v["role"],
            str(w["requests"]),
            f"{w['requests_per_s']:.1f}",
            f"{w['error_rate']:.1%}",
            "-" if w["p50_ms"] is None else f"{w['p50_ms']:.2f}",
            "-" if w["p99_ms"] is None else f"{w['p99_ms']:.2f}",
            causes,
        )
    console.print(table)


@app.command()
def delete(name: str) -> None:
    """Delete an endpoint and stop its replicas."""
    Client().delete_endpoint(name)
    console.print(f"deleted endpoint {name}")


def invoke(
    endpoint: str,
    data: Annotated[
        str | None, typer.Option("--json", help='request JSON, e.g. {"instances": [[...]]}')
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="read the request JSON from a file ('-': stdin)")
    ] = None,
    run_async: Annotated[
        bool, typer.Option("--async", help="submit as an async job and wait for its result")
    ] = False,
    timeout: Annotated[
        str | None, typer.Option(help="with --async: give up waiting after this, e.g. 5m")
    ] = None,
) -> None:
    """Send one request to an endpoint and print the answer."""
    if data is None and file is None:
        fail("give the request with --json '...' or --file request.json")
    text = data if data is not None else read_text(Path(str(file)), "--file")
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        source = "--json" if data is not None else f"--file {file}"
        fail(f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")
    client = Client()
    if run_async:
        job = client.send("POST", f"/v1/endpoints/{endpoint}/async", json=body).json()
        with console.status(f"job {job['job_id']} queued; waiting"):
            answer = client.wait(job["job_id"], parse_duration(timeout) if timeout else None)
        console.print(f"[dim]job {job['job_id']}[/dim]")
        console.print_json(json.dumps(answer))
        return
    response = client.invoke_raw(endpoint, text)
    if response.headers.get("x-zeroserve-cold-start"):
        console.print("[yellow]cold start[/yellow]")
    console.print_json(json.dumps(response.json()))
