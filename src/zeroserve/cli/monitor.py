"""`zeroserve rollout|shadow|ab|drift|logs ...` and `endpoints set-traffic|set-logging`."""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from zeroserve.cli import endpoints, models
from zeroserve.cli.client import Client, console, fail


class Format(StrEnum):
    TEXT = "text"
    JSON = "json"


class ReportFormat(StrEnum):
    JSON = "json"
    HTML = "html"


rollout_app = typer.Typer(
    help="Canary rollouts that promote or roll back by themselves.", no_args_is_help=True
)
shadow_app = typer.Typer(
    help="Compare a shadow's outputs with the primary's.", no_args_is_help=True
)
ab_app = typer.Typer(help="A/B verdicts from feedback.", no_args_is_help=True)
drift_app = typer.Typer(help="Input and output drift against the reference.", no_args_is_help=True)
logs_app = typer.Typer(help="Query the prediction log (DuckDB SQL).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add these commands to the `zeroserve` app (called once from cli/main.py)."""
    app.add_typer(rollout_app, name="rollout")
    app.add_typer(shadow_app, name="shadow")
    app.add_typer(ab_app, name="ab")
    app.add_typer(drift_app, name="drift")
    app.add_typer(logs_app, name="logs")
    endpoints.app.command("set-traffic")(set_traffic)
    endpoints.app.command("set-logging")(set_logging)
    models.app.command("set-evaluation")(set_evaluation)


def set_evaluation(
    name: str, path: Annotated[Path, typer.Argument(help=".npz with arrays x and y")]
) -> None:
    """Store a model's evaluation set (what `models promote --require-better` scores)."""
    if not path.is_file():
        fail(f"{path} is not a file")
    with path.open("rb") as fh:
        out = Client().request(
            "PUT", f"/api/models/{name}/evaluation", files={"file": (path.name, fh)}
        )
    console.print(f"{name}: evaluation set of {out['rows']} rows stored")


def check_gate(name: str, version: int, requirements: list[str], output: str) -> None:
    """Exit 1, explaining why, unless ``version`` beats production by every margin."""
    client = Client()
    response = client.http.post(
        f"/api/models/{name}/versions/{version}/gate", json={"require_better": requirements}
    )
    body = response.json() if response.content else {}
    report = body.get("details", body) if response.status_code == 409 else body
    if response.status_code not in (200, 409):
        fail(f"{response.status_code}: {body.get('error', response.text)}")
    if output == "json":
        _print_json(report)
    else:
        for reason in report.get("reasons", []):
            console.print(f"  {reason}")
    if response.status_code == 409:
        fail(f"not promoted: {name}:{version} does not beat production by the required margins")


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2) + "\n")


def set_traffic(
    endpoint: str,
    weights: Annotated[
        list[str], typer.Argument(help="MODEL:VERSION=WEIGHT ..., e.g. fraud:3=90 fraud:4=10")
    ],
) -> None:
    """Split an endpoint's traffic between model versions."""
    from zeroserve.control.traffic import parse_weight_args
    from zeroserve.errors import BadRequest

    try:
        parsed = parse_weight_args(weights)
    except BadRequest as exc:
        fail(exc.message)
    out = Client().request("PUT", f"/api/endpoints/{endpoint}/traffic", json={"weights": parsed})
    split = ", ".join(f"{k} {v:.1f}%" for k, v in out["weights"].items())
    console.print(f"{endpoint}: {split}")


def set_logging(
    endpoint: str, rate: Annotated[float, typer.Option(help="share of requests to log, 0..1")]
) -> None:
    """Set the prediction-log sample rate of an endpoint."""
    Client().request("PUT", f"/api/endpoints/{endpoint}/logging", json={"rate": rate})
    console.print(f"{endpoint}: logging {rate:.0%} of requests")


@rollout_app.command("start")
def rollout_start(
    endpoint: str,
    to: Annotated[str, typer.Option(help="the canary: MODEL:VERSION")],
    steps: Annotated[str, typer.Option(help="canary percentages")] = "5,25,50,100",
    bake: Annotated[str, typer.Option(help="time at each step, e.g. 30s")] = "30s",
    min_requests: Annotated[int, typer.Option(help="canary requests before any verdict")] = 20,
    alpha: Annotated[float, typer.Option(help="false-rollback rate per guard")] = 0.01,
    latency_ratio: Annotated[float, typer.Option(help="canary p99 / baseline p99 tolerated")] = 1.5,
    on_input_drift: Annotated[str, typer.Option(help="hold, rollback or ignore")] = "hold",
    output: Annotated[Format, typer.Option("--format")] = Format.TEXT,
) -> None:
    """Start a canary rollout; it advances, promotes or rolls back on its own."""
    try:
        step_list = [float(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        fail(f"--steps {steps!r}: give percentages like 5,25,50,100")
    body = {
        "to": to,
        "steps": step_list,
        "bake_s": endpoints.parse_duration(bake),
        "min_requests": min_requests,
        "alpha": alpha,
        "latency_ratio": latency_ratio,
        "on_input_drift": on_input_drift,
    }
    info = Client().post(f"/api/endpoints/{endpoint}/rollout", json=body)
    if output == Format.JSON:
        _print_json(info)
        return
    console.print(
        f"rollout {info['id']} on {endpoint}: {info['baseline']} -> {info['canary']} ({to}), "
        f"canary at {info['canary_weight']:g}%"
    )


def _print_rollout(info: dict[str, Any]) -> None:
    console.print(
        f"[bold]{info['endpoint']}[/bold] rollout {info['id']}: {info['baseline']} -> "
        f"{info['canary']} ({info['to']}) [bold]{info['state']}[/bold], canary at "
        f"{info['canary_weight']:g}% (step {info['step'] + 1} of {len(info['plan']['steps'])})"
    )
    req, err = info["requests"], info["errors"]
    console.print(
        f"  requests: baseline {req['baseline']} ({err['baseline']} errors), "
        f"canary {req['canary']} ({err['canary']} errors)"
    )
    console.print(f"  {info['reason']}")
    table = Table(show_edge=False)
    for col in ("time", "action", "reason"):
        table.add_column(col)
    for d in info["decisions"][-10:]:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(d["at"])), d["action"], d["reason"])
    console.print(table)
    for d in info["decisions"][-1:]:
        for g in d.get("guards", []):
            console.print(f"  {g['guard']}: {g['status']} - {g['detail']}")


@rollout_app.command("status")
def rollout_status(
    endpoint: str, output: Annotated[Format, typer.Option("--format")] = Format.TEXT
) -> None:
    """The running (or latest) rollout of an endpoint, with its decisions and evidence."""
    info = Client().get(f"/api/endpoints/{endpoint}/rollout")
    _print_json(info) if output == Format.JSON else _print_rollout(info)


@rollout_app.command("abort")
def rollout_abort(endpoint: str) -> None:
    """Abort the running rollout: traffic returns to the baseline at once."""
    info = Client().request("DELETE", f"/api/endpoints/{endpoint}/rollout")
    console.print(
        f"{endpoint}: rollout {info['id']} {info['state']}; {info['baseline']} serves all traffic"
    )


@rollout_app.command("list")
def rollout_list(
    state: Annotated[
        str | None, typer.Option(help="running, promoted, rolled_back, aborted")
    ] = None,
    output: Annotated[Format, typer.Option("--format")] = Format.TEXT,
) -> None:
    """Rollouts, newest first."""
    rows = Client().get("/api/rollouts", params={"state": state} if state else None)
    if output == Format.JSON:
        _print_json(rows)
        return
    table = Table(title="rollouts")
    for col in ("id", "endpoint", "to", "state", "canary %", "guard", "reason"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["id"]), r["endpoint"], r["to"], r["state"], f"{r['canary_weight']:g}",
            r["fired"] or "", r["reason"][:80],
        )  # fmt: skip
    console.print(table)


@shadow_app.command("report")
def shadow_report(
    endpoint: str, output: Annotated[Format, typer.Option("--format")] = Format.TEXT
) -> None:
    """Label agreement and score differences between the shadow and the primary."""
    report = Client().get(f"/api/endpoints/{endpoint}/shadow")
    if output == Format.JSON:
        _print_json(report)
        return
    if not report["comparisons"]:
        console.print(f"{endpoint}: no shadow comparisons yet (shadow: {report['shadow']})")
    for name, cmp in report["comparisons"].items():
        console.print(
            f"[bold]{name}[/bold]: {cmp['requests_compared']} requests compared, "
            f"{cmp['shadow_errors']} shadow errors, {cmp['dropped']} dropped"
        )
        if "label_agreement" in cmp:
            a = cmp["label_agreement"]
            console.print(
                f"  label agreement {a['rate']:.2%} (95% CI {a['ci95'][0]:.2%}-{a['ci95'][1]:.2%})"
            )
        if "score_difference" in cmp:
            d = cmp["score_difference"]
            qs = ", ".join(f"{k} {v:.4g}" for k, v in d["quantiles"].items())
            console.print(f"  mean |score difference| {d['mean_abs']:.4g}; shadow - primary: {qs}")


@ab_app.command("report")
def ab_report(
    endpoint: str,
    window: Annotated[str, typer.Option(help="feedback window, e.g. 7d")] = "7d",
    output: Annotated[Format, typer.Option("--format")] = Format.TEXT,
) -> None:
    """Per-variant metrics with 95% intervals, significance and a sample-ratio check."""
    report = Client().get(f"/api/endpoints/{endpoint}/ab", params={"window": window})
    if output == Format.JSON:
        _print_json(report)
        return
    table = Table(title=f"{endpoint}: {report['joined_rows']} rows with feedback")
    for col in ("variant", "metric", "value", "95% CI", "n"):
        table.add_column(col)
    for variant, metrics in report["variants"].items():
        for name, m in metrics.items():
            low, high = m["ci95"]
            ci = f"{low:.4g} - {high:.4g}" if low is not None and high is not None else ""
            table.add_row(variant, name, f"{m['value']:.4g}", ci, str(m["n"]))
    console.print(table)
    for c in report["comparisons"]:
        console.print(
            f"  {c['variant']} vs {c['control']} on {c['metric']}: {c['difference']:+.4g} "
            f"(p={c['p_value']:.3g}): {c['verdict']}"
        )
    srm = report["sample_ratio"]
    if srm.get("checked"):
        verdict = "MISMATCH" if srm["mismatch"] else "ok"
        console.print(
            f"  sample ratio: {verdict} (chi2 p={srm['p_value']:.3g}, observed {srm['observed']})"
        )


@drift_app.command("report")
def drift_report(
    endpoint: str,
    window: Annotated[str, typer.Option(help="live window, e.g. 1h, 24h")] = "24h",
    variant: Annotated[str | None, typer.Option(help="one variant (default: all)")] = None,
    output: Annotated[ReportFormat | None, typer.Option("--format", help="json or html")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="write the report to this file")] = None,
) -> None:
    """Per-feature drift of live traffic from the version's reference, and output drift."""
    params: dict[str, str] = {
        "window": window,
        "format": "html" if output == ReportFormat.HTML else "json",
    }
    if variant:
        params["variant"] = variant
    client = Client()
    if output == ReportFormat.HTML:
        response = client.http.get(f"/api/endpoints/{endpoint}/drift", params=params)
        if response.status_code >= 400:
            fail(f"{response.status_code}: {response.json().get('error', response.text)}")
        text = response.text
    else:
        report = client.get(f"/api/endpoints/{endpoint}/drift", params=params)
        if output == ReportFormat.JSON or out is not None:
            text = json.dumps(report, indent=2)
        else:
            _print_drift(report)
            return
    if out is not None:
        out.write_text(text)
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


def _print_drift(report: dict[str, Any]) -> None:
    for r in report["variants"]:
        if "error" in r:
            console.print(f"{r['variant']}: {r['error']}")
            continue
        drifted = ", ".join(r["drifted"]) or "none"
        title = f"{report['endpoint']}/{r['variant']}: {r['rows']} live rows, drifted: {drifted}"
        table = Table(title=title)
        for col in ("column", "method", "score", "threshold", "PSI", "q", "drift"):
            table.add_column(col)
        for f in [*r["features"], *r["outputs"]][:30]:
            psi = f.get("psi")
            table.add_row(
                f["feature"], f["method"], f"{f['score']:.4f}", f"{f['threshold']:g}",
                "" if psi is None else f"{psi:.4f}", f"{f['q_value']:.2g}",
                "yes" if f["drifted"] else "",
            )  # fmt: skip
        console.print(table)


@logs_app.command("query")
def logs_query(
    endpoint: str,
    since: Annotated[
        str, typer.Option(help="window, e.g. 15m, 1h, 7d; 'all' for everything")
    ] = "1h",
    sql: Annotated[
        str | None, typer.Option(help="one SELECT over `predictions` and `feedback`")
    ] = None,
    output: Annotated[Format, typer.Option("--format")] = Format.TEXT,
) -> None:
    """Query an endpoint's prediction log with DuckDB SQL (read-only)."""
    body = {"since": None if since == "all" else since, "sql": sql}
    result = Client().post(f"/api/endpoints/{endpoint}/logs/query", json=body)
    if output == Format.JSON:
        _print_json(result)
        return
    table = Table(show_edge=False)
    for col in result["columns"]:
        table.add_column(col)
    for row in result["rows"]:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
    if result["truncated"]:
        console.print("(more rows; add a LIMIT or narrow --since)")
