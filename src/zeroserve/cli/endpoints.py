"""`zeroserve deploy`, `zeroserve endpoints ...` and `zeroserve invoke`."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from zeroserve.cli.client import Client, console, fail, parse_model_ref
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
) -> None:
    """Serve a model version as an endpoint; returns when it is ready."""
    name, ref = parse_model_ref(model)
    body: dict[str, Any] = {
        "model": name,
        "ref": ref,
        "endpoint": endpoint,
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
    with console.status(f"deploying {model}"):
        result = Client().post("/api/deploy", json={k: v for k, v in body.items() if v is not None})
    spec = result["spec"]
    variant = spec["variants"][0]
    console.print(
        f"[green]deployed[/green] {variant['model']} version {variant['version']} as "
        f"endpoint [bold]{spec['name']}[/bold] ({spec['mode']})"
    )
    console.print(f"  POST {Client().url}/v1/endpoints/{spec['name']}/invocations")
    console.print(f"  POST {Client().url}/v2/models/{spec['name']}/infer")


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
    ):
        table.add_column(col)
    for item in Client().get("/api/endpoints"):
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
            )
    console.print(table)


@app.command()
def describe(name: str) -> None:
    """Show an endpoint's spec, replicas, queue and scaling metrics."""
    item = Client().get(f"/api/endpoints/{name}")
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
    _print_stats(name)


def _print_stats(name: str) -> None:
    """Outcomes per variant over the last minute (all gateway processes)."""
    try:
        stats = Client().get(f"/api/endpoints/{name}/stats")
    except httpx.HTTPError:
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
    Client().request("DELETE", f"/api/endpoints/{name}")
    console.print(f"deleted endpoint {name}")


def invoke(
    endpoint: str,
    data: Annotated[
        str | None, typer.Option("--json", help='request JSON, e.g. {"instances": [[...]]}')
    ] = None,
    file: Annotated[
        Path | None, typer.Option(help="read the request JSON from a file ('-': stdin)")
    ] = None,
) -> None:
    """Send one request to an endpoint and print the answer."""
    if data is None and file is None:
        fail("give the request with --json '...' or --file request.json")
    text = (
        data
        if data is not None
        else (sys.stdin.read() if str(file) == "-" else Path(str(file)).read_text())
    )
    client = Client()
    response = client.http.post(
        f"/v1/endpoints/{endpoint}/invocations",
        content=text,
        headers={"content-type": "application/json"},
    )
    if response.status_code >= 400:
        fail(f"{response.status_code}: {response.json().get('error', response.text)}")
    if response.headers.get("x-zeroserve-cold-start"):
        console.print("[yellow]cold start[/yellow]")
    console.print_json(json.dumps(response.json()))
