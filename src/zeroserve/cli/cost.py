"""`zeroserve cost ...`: where to serve a model, and what it will cost."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from zeroserve.cost.advisor import Advice, advise
from zeroserve.cost.catalog import apply_overrides, load_catalog, parse_override
from zeroserve.cost.evaluate import estimate as estimate_one
from zeroserve.cost.profile import WorkloadProfile, load_profile
from zeroserve.cost.report import render_html, to_json
from zeroserve.errors import ZeroserveError

app = typer.Typer(help="Estimate serving costs per target and recommend one.", no_args_is_help=True)
console = Console()
err_console = Console(stderr=True)

Format = Literal["table", "json", "html"]
DEFAULT_URL = "http://127.0.0.1:8300"


COMPACT_ROWS = 8  # feasible targets in the default table; --all shows every candidate


def _fail(message: str) -> typer.Exit:
    # One line: soft wrapping off so a long message never spills over several.
    err_console.print(f"[red]error:[/red] {' '.join(message.split())}", soft_wrap=True)
    return typer.Exit(1)


def _validation_message(exc: ValidationError) -> str:
    """Pydantic's errors as one line that names each field."""
    parts = []
    for err in exc.errors()[:4]:
        where = ".".join(str(p) for p in err["loc"]) or "profile"
        parts.append(f"{where}: {err['msg']}")
    return "invalid profile: " + "; ".join(parts)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise _fail(f"{flag} takes TARGET=VALUE, got {item!r}")
        out[key] = value
    return out


@app.command()
def estimate(
    profile_file: Annotated[
        Path | None, typer.Option("--profile", help="profile YAML/JSON; flags override it")
    ] = None,
    requests: Annotated[float | None, typer.Option("--requests", help="requests per month")] = None,
    duration_s: Annotated[
        float | None, typer.Option("--duration-s", help="compute seconds per request")
    ] = None,
    memory_mb: Annotated[int | None, typer.Option(help="memory per replica, MB")] = None,
    vcpus: Annotated[float | None, typer.Option(help="vCPU per replica")] = None,
    payload_in: Annotated[int | None, typer.Option(help="bytes in per request")] = None,
    payload_out: Annotated[int | None, typer.Option(help="bytes out per request")] = None,
    peak_concurrency: Annotated[
        float | None, typer.Option(help="requests in flight at peak")
    ] = None,
    replica_concurrency: Annotated[
        float | None, typer.Option(help="measured concurrent requests per replica")
    ] = None,
    gpu: Annotated[
        str | None, typer.Option(help="GPU needed: any, T4, L4, A10G, A100, H100")
    ] = None,
    sla: Annotated[
        float | None, typer.Option("--sla", help="p95 latency SLA in seconds, cold starts included")
    ] = None,
    input_tokens: Annotated[int | None, typer.Option(help="LLM input tokens per request")] = None,
    output_tokens: Annotated[int | None, typer.Option(help="LLM output tokens per request")] = None,
    tokens_per_s: Annotated[
        float | None, typer.Option(help="self-hosted output tokens/s per GPU")
    ] = None,
    cached_share: Annotated[
        float | None, typer.Option(help="share of input tokens read from the prompt cache, 0..1")
    ] = None,
    cache_write_share: Annotated[
        float | None, typer.Option(help="share of input tokens written to the cache, 0..1")
    ] = None,
    batch_share: Annotated[
        float | None, typer.Option(help="share of LLM calls that can wait for a batch API, 0..1")
    ] = None,
    rows_per_request: Annotated[float | None, typer.Option(help="rows per request")] = None,
    rows_per_s: Annotated[
        float | None, typer.Option(help="rows a second one batch instance processes")
    ] = None,
    commitment: Annotated[
        list[str], typer.Option(help="savings plan or reserved term TARGET=TERM, repeatable")
    ] = [],  # noqa: B006
    allow_async: Annotated[bool | None, typer.Option("--allow-async/--sync-only")] = None,
    free_tier: Annotated[bool | None, typer.Option("--free-tier/--no-free-tier")] = None,
    hours_per_month: Annotated[float | None, typer.Option(help="730 (default) or 720")] = None,
    instance_type: Annotated[list[str], typer.Option(help="pin TARGET=TYPE, repeatable")] = [],  # noqa: B006
    catalog_file: Annotated[
        Path | None, typer.Option("--catalog", help="your own catalog YAML")
    ] = None,
    price: Annotated[
        list[str], typer.Option(help="override TARGET[:METER[:OPTION]]=USD or =-15%")
    ] = [],  # noqa: B006
    target: Annotated[
        str | None, typer.Option(help="price one target only (TARGET or TARGET:OPTION)")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or html")] = "table",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="write to this file")
    ] = None,
    details: Annotated[bool, typer.Option(help="show every line item")] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="list every candidate, not only the cheapest")
    ] = False,
    today: Annotated[
        str | None, typer.Option(help="judge price age as of this date (YYYY-MM-DD)")
    ] = None,
) -> None:
    """Estimate the monthly bill on every target for a workload profile."""
    if fmt not in ("table", "json", "html"):
        raise _fail("--format is table, json or html")
    flags: dict[str, Any] = {
        "requests_per_month": requests,
        "duration_s": duration_s,
        "memory_mb": memory_mb,
        "vcpus": vcpus,
        "payload_in_bytes": payload_in,
        "payload_out_bytes": payload_out,
        "peak_concurrency": peak_concurrency,
        "replica_concurrency": replica_concurrency,
        "gpu": gpu,
        "latency_sla_p95_s": sla,
        "input_tokens_per_request": input_tokens,
        "output_tokens_per_request": output_tokens,
        "self_host_tokens_per_s": tokens_per_s,
        "cached_input_share": cached_share,
        "cache_write_share": cache_write_share,
        "batch_share": batch_share,
        "rows_per_request": rows_per_request,
        "rows_per_s": rows_per_s,
        "allow_async": allow_async,
        "free_tier": free_tier,
        "hours_per_month": hours_per_month,
    }
    try:
        base = load_profile(profile_file).model_dump(exclude_unset=True) if profile_file else {}
        base.update({k: v for k, v in flags.items() if v is not None})
        if instance_type:
            base["instance_types"] = {
                **base.get("instance_types", {}),
                **_pairs(instance_type, "--instance-type"),
            }
        if commitment:
            base["commitments"] = {
                **base.get("commitments", {}),
                **_pairs(commitment, "--commitment"),
            }
        if "requests_per_month" not in base:
            raise _fail("give --requests (and --duration-s) or --profile FILE")
        profile = WorkloadProfile.model_validate(base)
        day = date.fromisoformat(today) if today else date.today()
        catalog = apply_overrides(
            load_catalog(catalog_file), [parse_override(p) for p in price], day
        )
        if target is not None:
            name, _, option = target.partition(":")
            one = estimate_one(catalog, profile, name, option or None, today=day)
            _emit(json.dumps(dataclasses.asdict(one), indent=2) if fmt == "json" else None, output)
            if fmt != "json":
                _print_one(one)
            return
        advice = advise(catalog, profile, today=day)
    except ZeroserveError as exc:
        raise _fail(exc.message) from exc
    except ValidationError as exc:  # pydantic validation of flags
        raise _fail(_validation_message(exc)) from exc
    except ValueError as exc:  # a malformed --today
        raise _fail(str(exc)) from exc
    _render(advice, fmt, output, details, show_all)


def _emit(text: str | None, output: Path | None) -> None:
    if text is None:
        return
    if output is not None:
        output.write_text(text)
        console.print(f"wrote {output}")
    else:
        print(text)


def _render(
    advice: Advice, fmt: str, output: Path | None, details: bool, show_all: bool = False
) -> None:
    if fmt == "json":
        _emit(json.dumps(to_json(advice), indent=2), output)
    elif fmt == "html":
        try:
            page = render_html(advice)
        except ZeroserveError as exc:
            raise _fail(exc.message) from exc
        _emit(page, output or Path(f"cost-{advice.profile['name']}.html"))
    else:
        print_advice(advice, details, show_all)


def _print_one(e: Any) -> None:
    status = "[green]feasible[/green]" if e.feasible else "[red]ruled out[/red]"
    console.print(f"[bold]{e.name}[/bold] ({e.id}): ${e.monthly_usd:,.2f} a month, {status}")
    if e.sizing:
        console.print(f"  sizing: {e.sizing}")
    for li in e.line_items:
        console.print(f"  {li.name}: {li.formula}  [dim]({li.confidence}, {li.as_of})[/dim]")
    for r in e.reasons:
        console.print(f"  [red]✗[/red] {r}")
    for w in e.warnings:
        console.print(f"  [yellow]![/yellow] {w}")


def print_advice(advice: Advice, details: bool = False, show_all: bool = False) -> None:
    """The ranking as a Rich table (the cheapest few unless ``show_all``), then what changes."""
    table = Table(
        title=f"monthly cost for {advice.profile['name']} "
        f"({advice.hours_per_month:g} h/month, free tier {'on' if advice.free_tier else 'off'})"
    )
    for col, just in (
        ("#", "right"),
        ("target", "left"),
        ("USD/month", "right"),
        ("sizing", "left"),
        ("why not / notes", "left"),
    ):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    shown_rows = advice.targets if show_all else _compact(advice.targets)
    for i, e in enumerate(shown_rows, start=1):
        usd = "refused" if e.monthly_usd is None else f"{e.monthly_usd:,.2f}"
        notes = "\n".join(
            [f"[red]✗ {r}[/red]" for r in e.reasons]
            + [f"[yellow]! {w}[/yellow]" for w in e.warnings]
        )
        style = None if e.feasible else "dim"
        table.add_row(str(i) if e.feasible else "-", e.id, usd, e.sizing, notes, style=style)
    console.print(table)
    hidden = len(advice.targets) - len(shown_rows)
    if hidden:
        ruled_out = sum(1 for e in advice.targets if not e.feasible)
        console.print(
            f"[dim]{hidden} more candidates not shown ({ruled_out} ruled out); "
            "--all lists them with the reasons[/dim]"
        )
    shown = (
        advice.targets if details else [e for e in advice.targets if e.id == advice.recommendation]
    )
    for e in shown:
        console.print(f"\n[bold]{e.id}[/bold]")
        if e.commitment:
            console.print(f"  commitment: {e.commitment}")
        for li in e.line_items:
            console.print(f"  {li.name}: {li.formula}  [dim]({li.confidence}, {li.as_of})[/dim]")
    console.print(f"\n[bold]{advice.summary}[/bold]")
    for b in advice.llm_break_even[:6]:
        console.print(f"  LLM: {b.text}")
    for w in advice.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _compact(targets: list[Any]) -> list[Any]:
    """The cheapest feasible candidates, one per target, best first."""
    seen: set[str] = set()
    out = []
    for e in targets:
        if e.feasible and e.target not in seen:
            seen.add(e.target)
            out.append(e)
        if len(out) == COMPACT_ROWS:
            break
    return out


@app.command()
def report(
    endpoint: Annotated[str | None, typer.Option(help="one endpoint (default: all)")] = None,
    window: Annotated[str, typer.Option(help="how far back to look: 7d, 24h, 90m")] = "7d",
    sla: Annotated[float | None, typer.Option("--sla", help="p95 latency SLA in seconds")] = None,
    gpu: Annotated[str | None, typer.Option(help="GPU the model needs")] = None,
    free_tier: Annotated[bool, typer.Option("--free-tier/--no-free-tier")] = False,
    hours_per_month: Annotated[float | None, typer.Option(help="730 (default) or 720")] = None,
    fmt: Annotated[str, typer.Option("--format", help="table, json or html")] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="every candidate, not only the cheapest per target")
    ] = False,
    include_internal: Annotated[
        bool, typer.Option(help="also price internal endpoints (batch-<run>)")
    ] = False,
) -> None:
    """Extrapolate the metered traffic to a month and rank the targets for it."""
    if fmt not in ("table", "json", "html"):
        raise _fail("--format is table, json or html")
    params: dict[str, Any] = {
        "window": window,
        "free_tier": free_tier,
        "include_internal": include_internal,
    }
    for key, value in (
        ("endpoint", endpoint),
        ("latency_sla_p95_s", sla),
        ("gpu", gpu),
        ("hours_per_month", hours_per_month),
    ):
        if value is not None:
            params[key] = value
    if fmt == "html":
        if endpoint is None:
            raise _fail("--format html needs --endpoint")
        page = _get("/api/cost/report.html", params).text
        _emit(page, output or Path(f"cost-{endpoint}.html"))
        return
    found = _get("/api/cost/report", params).json()
    if fmt == "json":
        _emit(json.dumps(found, indent=2), output)
        return
    internal = [i["endpoint"] for i in found if i["advice"] is None]
    for item in found:
        if item["advice"] is not None:
            _print_report(item, show_all)
    if internal:
        console.print(
            f"[dim]left out internal endpoints: {', '.join(internal)} "
            "(batch transform runs; --include-internal prices them)[/dim]"
        )


def _print_report(item: dict[str, Any], show_all: bool) -> None:
    """One endpoint: what was measured, what was assumed, the cheapest targets, the changes."""
    u, p, advice = item["usage"], item["profile"], item["advice"]
    console.print(
        f"[bold]{item['endpoint']}[/bold]: {u['requests']:,} requests in "
        f"{u['observed_s'] / 3600:,.1f} h observed (window {item['window']}), "
        f"{u['compute_s']:,.1f} compute-s, peak {u['peak_concurrency']} in flight, "
        f"peak memory {u['peak_memory_mb']:,.0f} MB, {u['cold_starts']} cold starts"
    )
    console.print(
        f"  a month at this rate: {p['requests_per_month']:,.0f} requests of "
        f"{p['duration_s']:.4g} s, {p['memory_mb']:,} MB"
    )
    for w in item["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    for a in item["assumptions"]:
        console.print(f"  [dim]assumed {a}[/dim]")
    targets = advice["targets"]
    rows = targets if show_all else _compact_dicts(targets)
    table = Table(show_edge=False)
    for col in ("target", "USD/month", "sizing" if not show_all else "why not"):
        table.add_column(col)
    for e in rows:
        usd = "refused" if e["monthly_usd"] is None else f"{e['monthly_usd']:,.2f}"
        mark = " *" if e["id"] == advice["recommendation"] else ""
        last = "; ".join(e["reasons"]) if show_all else e["sizing"]
        table.add_row(e["id"] + mark, usd, last, style=None if e["feasible"] else "dim")
    console.print(table)
    if not show_all and len(rows) < len(targets):
        console.print(f"[dim]{len(targets) - len(rows)} more candidates: --all lists them[/dim]")
    console.print(f"[bold]{advice['summary']}[/bold]")
    for w in advice["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")


def _compact_dicts(targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    out = []
    for e in targets:
        if e["feasible"] and e["target"] not in seen:
            seen.add(e["target"])
            out.append(e)
        if len(out) == COMPACT_ROWS:
            break
    return out


def _get(path: str, params: dict[str, Any]) -> httpx.Response:
    url = os.environ.get("ZEROSERVE_URL", DEFAULT_URL).rstrip("/")
    key = os.environ.get("ZEROSERVE_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(url + path, params=params, headers=headers, timeout=120.0)
    except httpx.TransportError as exc:
        raise _fail(
            f"cannot reach zeroserve at {url} ({exc}); start it with `zeroserve up` "
            "or set ZEROSERVE_URL"
        ) from exc
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise _fail(f"{response.status_code}: {message}")
    return response
