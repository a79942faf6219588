"""`zeroserve llm ...`: the LLM gateway's models, keys and usage."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from zeroserve.cli.client import Client, console

app = typer.Typer(help="The LLM gateway: models, virtual keys, usage.", no_args_is_help=True)
keys_app = typer.Typer(help="Virtual API keys with budgets and limits.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


def _usd(micros: int | None) -> str:
    return "-" if micros is None else f"${micros / 1e6:,.6f}"


@app.command()
def models() -> None:
    """List logical models and their deployments."""
    table = Table(title="LLM models")
    for col in (
        "model",
        "deployment",
        "provider",
        "upstream model",
        "weight",
        "breaker",
        "ewma ms",
    ):
        table.add_column(col)
    for m in Client().get("/api/llm/models"):
        for d in m["deployments"]:
            ewma = d["total_ewma_ms"]
            table.add_row(
                f"{m['name']} ({m['routing']})",
                d["name"],
                d["provider"],
                d["model"],
                f"{d['weight']:g}",
                d["breaker"],
                "-" if ewma is None else f"{ewma:.1f}",
            )
    console.print(table)


@app.command()
def reload() -> None:
    """Re-read the LLM config in every gateway process; in-flight calls finish undisturbed."""
    out = Client().post("/api/llm/reload")
    console.print(f"reloaded {len(out['models'])} models from {out['source'] or 'defaults'}")


@keys_app.command("create")
def create_key(
    name: str,
    team: Annotated[str | None, typer.Option(help="the team whose budget also applies")] = None,
    budget: Annotated[float | None, typer.Option(help="budget in USD")] = None,
    rpm: Annotated[int | None, typer.Option(help="requests a minute")] = None,
    tpm: Annotated[int | None, typer.Option(help="tokens a minute")] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="allowed model (repeat); default all")
    ] = None,
) -> None:
    """Create a key; its secret is shown once and stored only as a hash."""
    body: dict[str, Any] = {"name": name, "team": team, "rpm": rpm, "tpm": tpm, "models": model}
    if budget is not None:
        body["budget_usd"] = str(budget)
    out = Client().post("/api/llm/keys", json=body)
    console.print(f"key {out['id']} ({out['name']}): [bold]{out['key']}[/bold]")
    console.print("store it now: the server keeps only its hash")


@keys_app.command("list")
def list_keys() -> None:
    """List keys with their budgets and spend."""
    table = Table(title="LLM keys")
    for col in (
        "id",
        "name",
        "prefix",
        "team",
        "budget",
        "spent",
        "reserved",
        "rpm",
        "tpm",
        "state",
    ):
        table.add_column(col)
    for k in Client().get("/api/llm/keys"):
        table.add_row(
            k["id"],
            k["name"],
            k["prefix"] + "…",
            k["team"] or "-",
            _usd(k["budget_micros"]),
            _usd(k["spent_micros"]),
            _usd(k["reserved_micros"]),
            str(k["rpm"] or "-"),
            str(k["tpm"] or "-"),
            "revoked" if k["revoked"] else "active",
        )
    console.print(table)


@keys_app.command("revoke")
def revoke_key(ref: Annotated[str, typer.Argument(help="key id, prefix or name")]) -> None:
    """Revoke a key; calls with it fail within a second in every gateway process."""
    out = Client().request("DELETE", f"/api/llm/keys/{ref}")
    console.print(f"revoked {out['id']} ({out['name']})")


@app.command()
def usage(
    key: Annotated[str | None, typer.Option(help="only this key id")] = None,
    by: Annotated[str, typer.Option(help="group by model, key or day")] = "model",
) -> None:
    """Tokens and spend from the ledger."""
    if by not in ("model", "key", "day"):
        typer.echo("error: --by must be model, key or day", err=True)
        raise typer.Exit(2)
    params = {"by": by, **({"key": key} if key else {})}
    rows = Client().get("/api/llm/usage", params=params)
    group = {"model": ["model", "deployment"], "key": ["key_id"], "day": ["day"]}[by]
    table = Table(title=f"LLM usage by {by}")
    cols = [
        *group,
        "requests",
        "input",
        "output",
        "cache read",
        "cache write",
        "cost",
        "estimated",
        "hits",
    ]
    for col in cols:
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(str(r[g]) for g in group),
            str(r["requests"]),
            str(r["input_tokens"]),
            str(r["output_tokens"]),
            str(r["cache_read_tokens"]),
            str(r["cache_write_tokens"]),
            _usd(r["cost_micros"]),
            str(r["estimated"]),
            str(r["cache_hits"]),
        )
    console.print(table)
