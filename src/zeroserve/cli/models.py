"""`zeroserve models ...`: register, list, show, promote, alias."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from zeroserve.cli.client import Client, console
from zeroserve.types import Stage

app = typer.Typer(help="Register and manage model versions.", no_args_is_help=True)


@app.command()
def register(
    path: Annotated[
        Path, typer.Argument(help="model file: .skops .joblib .pkl .onnx .ubj .json .txt .py")
    ],
    name: Annotated[str, typer.Option("--name", "-n", help="model name")],
    flavor: Annotated[
        str | None, typer.Option(help="sklearn, onnx, xgboost, lightgbm, python")
    ] = None,
    trust: Annotated[
        bool, typer.Option(help="allow pickle files and python code (runs code from the file)")
    ] = False,
    compile: Annotated[
        str | None,
        typer.Option("--compile", help="'onnx': convert a scikit-learn model and check it"),
    ] = None,
    tolerance: Annotated[
        float, typer.Option(help="largest output difference --compile accepts")
    ] = 1e-5,
    sample: Annotated[
        Path | None, typer.Option(help="reference inputs (.npy .csv .parquet)")
    ] = None,
    signature: Annotated[
        Path | None, typer.Option(help="signature JSON, when it cannot be inferred")
    ] = None,
    entrypoint: Annotated[str | None, typer.Option(help="class name of a python model")] = None,
    description: Annotated[str, typer.Option(help="free text")] = "",
) -> None:
    """Register a model file as a new version."""
    with console.status(f"registering {path.name}" + (" and compiling to ONNX" if compile else "")):
        started = time.perf_counter()
        info = Client().register(
            name,
            path,
            flavor=flavor,
            trust=trust,
            compile=compile,
            tolerance=tolerance,
            sample=sample,
            signature=signature,
            entrypoint=entrypoint,
            description=description,
        )
    console.print(
        f"[green]registered[/green] {info['model']} version {info['version']} "
        f"({info['flavor']}) in {time.perf_counter() - started:.1f} s"
    )
    metrics = info.get("metrics") or {}
    if metrics.get("compiled_from"):
        console.print(
            f"  ONNX check: {metrics['check_rows']} rows ({metrics['check_sample']}), "
            f"largest difference {metrics['max_abs_diff']:.2g} "
            f"(tolerance {metrics['tolerance']:g}), labels equal: {metrics['labels_equal']}"
        )
    _print_signature(info["signature"])


def _print_signature(signature: dict[str, list[dict[str, object]]]) -> None:
    table = Table(title="signature", show_edge=False)
    for col in ("", "name", "dtype", "shape"):
        table.add_column(col)
    for kind in ("inputs", "outputs"):
        for spec in signature[kind]:
            table.add_row(
                kind[:-1], str(spec["name"]), str(spec["dtype"]), json.dumps(spec["shape"])
            )
    console.print(table)


@app.command("list")
def list_models() -> None:
    """List models and their versions."""
    models = Client().get("/api/models")
    table = Table(title="models")
    for col in ("model", "version", "flavor", "stage", "aliases", "inputs", "registered"):
        table.add_column(col)
    for m in models:
        for v in m["versions"]:
            spec = v["signature"]["inputs"][0]
            table.add_row(
                m["name"],
                str(v["version"]),
                v["flavor"],
                v["stage"],
                ", ".join(v["aliases"]),
                f"{spec['dtype']} {spec['shape']}",
                time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created_at"])),
            )
    console.print(table)


@app.command()
def show(name: str) -> None:
    """Show one model with all its versions as JSON."""
    console.print_json(json.dumps(Client().get(f"/api/models/{name}")))


@app.command()
def promote(
    name: str,
    version: int,
    stage: Annotated[
        Stage, typer.Option(help="none, staging, production, archived")
    ] = Stage.PRODUCTION,
    keep_existing: Annotated[
        bool, typer.Option(help="do not archive the version that held the stage")
    ] = False,
    require_better: Annotated[
        list[str] | None,
        typer.Option(help="METRIC:MARGIN to beat production by on the evaluation set"),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json (gate report)")] = "text",
) -> None:
    """Move a version to a stage (the previous holder is archived)."""
    if require_better:
        from zeroserve.cli.monitor import check_gate

        check_gate(name, version, require_better, output)
    info = Client().promote(name, version, stage.value, archive_existing=not keep_existing)
    console.print(f"{name} version {info['version']} is now [bold]{info['stage']}[/bold]")
    _print_redeployed(info)


@app.command()
def alias(name: str, alias: str, version: int) -> None:
    """Point an alias (e.g. champion) at a version."""
    info = Client().set_alias(name, alias, version)
    console.print(f"{name}:{alias} -> version {version}")
    _print_redeployed(info)


def _print_redeployed(info: dict[str, Any]) -> None:
    for line in info.get("redeployed") or []:
        console.print(f"  [green]redeployed[/green] {line} (it follows this reference)")


@app.command()
def delete(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
) -> None:
    """Delete a model and all its versions (refused while an endpoint serves it)."""
    if not yes:
        typer.confirm(f"delete model {name} and all its versions?", abort=True)
    Client().delete_model(name)
    console.print(f"deleted model {name}")
