"""`zeroserve models ...`: register, list, show, promote, alias."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table

from zeroserve.cli.client import Client, console, fail
from zeroserve.registry.python_dir import pack
from zeroserve.types import Signature, Stage

app = typer.Typer(help="Register and manage model versions.", no_args_is_help=True)


@app.command()
def register(
    path: Annotated[
        str,
        typer.Argument(
            help="model file (.skops .joblib .pkl .onnx .ubj .json .txt .py), a python model "
            "directory, an MLflow model directory, or a runs:/ or models:/ URI"
        ),
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
    """Register a model file or directory as a new version."""
    with tempfile.TemporaryDirectory(prefix="zs-upload-") as tmp:
        upload = _upload_path(path, Path(tmp))
        if sample is not None and not sample.is_file():
            fail(f"sample {sample} is not a file; pass --sample with a .npy, .csv or .parquet file")
        sig_text = None
        if signature is not None:
            if not signature.is_file():
                fail(f"signature {signature} is not a file")
            sig_text = signature.read_text()
            try:
                Signature.model_validate_json(sig_text)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "the document"
                fail(f"{signature} is not a valid signature: {where}: {err['msg']}")
        _register(
            upload,
            name,
            flavor,
            trust,
            compile,
            tolerance,
            sample,
            sig_text,
            entrypoint,
            description,
        )


def _upload_path(path: str, tmp: Path) -> Path:
    """A file to upload: the file itself, or a directory (or MLflow URI) packed as .tar.gz."""
    if path.startswith(("runs:/", "models:/")):
        try:
            import mlflow.artifacts
        except ImportError:
            fail(f"{path} is an MLflow URI; install MLflow (pip install 'zeroserve[mlflow]')")
        try:
            local = Path(mlflow.artifacts.download_artifacts(path, dst_path=str(tmp / "mlflow")))
        except Exception as exc:  # MLflow's own errors vary by store
            fail(f"MLflow could not fetch {path}: {exc}")
        return pack(local, tmp / "model.tar.gz")
    source = Path(path)
    if source.is_dir():
        return pack(source, tmp / f"{source.name or 'model'}.tar.gz")
    if not source.is_file():
        fail(f"{path} is not a file or a model directory")
    return source


def _register(
    path: Path,
    name: str,
    flavor: str | None,
    trust: bool,
    compile: str | None,
    tolerance: float,
    sample: Path | None,
    signature: str | None,
    entrypoint: str | None,
    description: str,
) -> None:
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
            signature=json.loads(signature) if signature else None,
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


def _print_signature(signature: dict[str, Any]) -> None:
    table = Table(title="signature", show_edge=False)
    for col in ("", "name", "type", "shape / nulls"):
        table.add_column(col)
    if signature.get("columns"):
        for col in signature["columns"]:
            kind = str(col["type"]) + (f" {col['categories']}" if col.get("categories") else "")
            nulls = "nullable" if col.get("nullable") else "required"
            table.add_row("column", str(col["name"]), kind, nulls)
    else:
        for spec in signature["inputs"]:
            names = spec.get("names")
            shape = json.dumps(spec["shape"]) + (" (named columns)" if names else "")
            table.add_row("input", str(spec["name"]), str(spec["dtype"]), shape)
    for spec in signature["outputs"]:
        table.add_row("output", str(spec["name"]), str(spec["dtype"]), json.dumps(spec["shape"]))
    console.print(table)
    if signature.get("classes") is not None:
        console.print(f"classes: {', '.join(str(c) for c in signature['classes'])}")


@app.command("list")
def list_models() -> None:
    """List models and their versions."""
    models = Client().get("/api/models")
    table = Table(title="models")
    for col in ("model", "version", "flavor", "stage", "aliases", "inputs", "registered"):
        table.add_column(col)
    for m in models:
        for v in m["versions"]:
            sig = v["signature"]
            spec = sig["inputs"][0]
            inputs = (
                f"table of {len(sig['columns'])} columns"
                if sig.get("columns")
                else f"{spec['dtype']} {spec['shape']}"
            )
            table.add_row(
                m["name"],
                str(v["version"]),
                v["flavor"],
                v["stage"],
                ", ".join(v["aliases"]),
                inputs,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(v["created_at"])),
            )
    console.print(table)


@app.command()
def show(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="the whole record as JSON")] = False,
) -> None:
    """Show one model: each version with its signature (columns, types, classes)."""
    model = Client().get(f"/api/models/{name}")
    if as_json:
        console.print_json(json.dumps(model))
        return
    console.print(f"[bold]{model['name']}[/bold] {model.get('description') or ''}")
    for v in model["versions"]:
        aliases = f" aliases: {', '.join(v['aliases'])}" if v["aliases"] else ""
        console.print(f"\nversion {v['version']} ({v['flavor']}, {v['stage']}){aliases}")
        _print_signature(v["signature"])


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
) -> None:
    """Move a version to a stage (the previous holder is archived)."""
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
