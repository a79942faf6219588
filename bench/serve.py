"""Serving benchmark (issue 2): single-row requests/s and latency over HTTP, all targets in one run.

    python bench/serve.py [--targets a,b,...] [--duration-s 10] [--concurrency 1,8,32]
                          [--repeats 3] [--out results.json]

Every target serves the same 98-feature, 100-tree random forest. Targets run one at a
time, alternating per repeat; load comes from wrk (throughput, wrk's latency) and from
bench/wrk/rawlat.c (raw latency of every request). See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from peers.process import TargetError, tree_cpu_s
from peers.targets import TARGETS, Artifacts, Target

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
WRK_SCRIPT = BENCH_DIR / "wrk" / "post.lua"
RAWLAT_SOURCE = BENCH_DIR / "wrk" / "rawlat.c"
N_FEATURES = 98
ARTIFACT_SPEC = (
    "RandomForestClassifier(n_estimators=100, random_state=0) on make_classification("
    f"n_samples=20000, n_features={N_FEATURES}, n_informative=30, random_state=0), float32"
)
WRK_TIMEOUT_S = 10
PAUSE_S = 1.0  # between load phases, so sockets and queues settle
SPREAD_WARNING = 0.2  # (max - min) / median of requests/s above this: the machine was busy

KEY_PACKAGES = {
    "zeroserve", "bentoml", "mlserver", "mlserver-sklearn", "scikit-learn", "onnxruntime",
    "numpy", "starlette", "uvicorn", "uvloop", "fastapi",
}  # fmt: skip

Row = dict[str, Any]


# -- artifacts ---------------------------------------------------------------------------------


def make_artifacts(cache_dir: Path) -> Artifacts:
    """The forest as joblib and ONNX, and one request row; made once, kept in the cache."""
    import joblib
    import numpy as np
    import onnxruntime as ort
    import sklearn
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    out = cache_dir / "artifacts"
    joblib_path, onnx_path, meta_path = out / "model.joblib", out / "model.onnx", out / "meta.json"
    spec = {"spec": ARTIFACT_SPEC, "scikit-learn": sklearn.__version__}
    fresh = meta_path.exists() and json.loads(meta_path.read_text()).get("spec") == spec
    if not (fresh and joblib_path.exists() and onnx_path.exists()):
        print(f"[artifacts] training {ARTIFACT_SPEC} ...", flush=True)
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        x, y = make_classification(
            n_samples=20000, n_features=N_FEATURES, n_informative=30, random_state=0
        )
        x = x.astype(np.float32)
        model = RandomForestClassifier(n_estimators=100, random_state=0, n_jobs=-1).fit(x, y)
        model.set_params(n_jobs=None)  # the artifact as a default-constructed forest would be
        onnx_model = convert_sklearn(
            model,
            initial_types=[("input", FloatTensorType([None, N_FEATURES]))],
            options={id(model): {"zipmap": False}},
        )
        out.mkdir(parents=True, exist_ok=True)
        joblib.dump(model, joblib_path)
        onnx_path.write_bytes(onnx_model.SerializeToString())
        row = [float(v) for v in x[0]]
        expected = float(model.predict(np.asarray([row], dtype=np.float32))[0])
        meta_path.write_text(json.dumps({"spec": spec, "row": row, "expected": expected}))
    meta = json.loads(meta_path.read_text())
    row, expected = meta["row"], meta["expected"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    onnx_label = session.run(None, {"input": np.asarray([row], dtype=np.float32)})[0][0]
    if float(onnx_label) != expected:
        raise SystemExit(f"ONNX predicts {onnx_label} for the row, scikit-learn {expected}")
    return Artifacts(cache_dir, joblib_path, onnx_path, row, expected)


# -- load generators ---------------------------------------------------------------------------


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found: apt-get update && apt-get install -y wrk")
    return wrk


def build_rawlat(cache_dir: Path) -> Path | None:
    """Compile the raw-latency client once; None (raw latency skipped) without a C compiler."""
    binary = cache_dir / "bin" / "rawlat"
    if binary.exists() and binary.stat().st_mtime >= RAWLAT_SOURCE.stat().st_mtime:
        return binary
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        print("[rawlat] no C compiler (apt-get install gcc): raw latency skipped", flush=True)
        return None
    binary.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([compiler, "-O2", "-o", str(binary), str(RAWLAT_SOURCE)], check=True)
    return binary


def run_wrk(url: str, body_file: Path, concurrency: int, duration_s: float) -> Row:
    threads = 1 if concurrency < 8 else 2
    command = [
        require_wrk(), f"-t{threads}", f"-c{concurrency}", f"-d{duration_s:g}s",
        f"--timeout={WRK_TIMEOUT_S}s", "-s", str(WRK_SCRIPT), url, "--", str(body_file),
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=False
    )
    for line in result.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            stats: Row = json.loads(line.removeprefix("WRK_JSON "))
            stats["rps"] = stats["requests"] / (stats["duration_us"] / 1e6)
            stats["n_errors"] = sum(stats["errors"].values())
            return stats
    raise TargetError(f"wrk gave no summary: {result.stdout[-500:]} {result.stderr[-500:]}")


def run_rawlat(binary: Path, url: str, body_file: Path, concurrency: int, duration_s: float) -> Row:
    parts = urlsplit(url)
    command = [
        str(binary), parts.hostname or "127.0.0.1", str(parts.port), parts.path, str(body_file),
        str(concurrency), f"{duration_s:g}",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 60, check=True
    )
    stats: Row = json.loads(result.stdout)
    return stats


# -- one target, one repeat --------------------------------------------------------------------


def measure_target(
    target: Target, repeat: int, args: argparse.Namespace, rawlat: Path | None
) -> list[Row]:
    """Start, check, warm up, load at each concurrency, stop. One row per concurrency."""
    log = CACHE_DIR / "logs" / f"{target.name}-r{repeat}.log"
    body_file = CACHE_DIR / "bodies" / f"{target.name}.json"
    body_file.parent.mkdir(parents=True, exist_ok=True)
    body_file.write_bytes(target.body)
    rows: list[Row] = []
    try:
        started = time.monotonic()
        target.start(log)
        target.check_prediction()
        up_s = time.monotonic() - started
        print(f"  {target.name}: up in {up_s:.1f} s, prediction ok", flush=True)
        run_wrk(target.url, body_file, max(args.concurrency), args.warmup_s)
        for concurrency in args.concurrency:
            time.sleep(PAUSE_S)
            cpu_before = tree_cpu_s(target.pid)
            stats = run_wrk(target.url, body_file, concurrency, args.duration_s)
            cpu_s = tree_cpu_s(target.pid) - cpu_before
            row: Row = {
                "target": target.name, "repeat": repeat, "concurrency": concurrency,
                "rps": stats["rps"], "requests": stats["requests"], "errors": stats["n_errors"],
                "wrk_latency_us": stats["latency_us"],
                "cpu_us_per_request": 1e6 * cpu_s / max(stats["requests"], 1),
            }  # fmt: skip
            if rawlat is not None and args.raw_duration_s > 0:
                time.sleep(PAUSE_S)
                row["raw"] = run_rawlat(
                    rawlat, target.url, body_file, concurrency, args.raw_duration_s
                )
            print(f"    c={concurrency:<3} {format_row(row)}", flush=True)
            rows.append(row)
    finally:
        target.stop()
    return rows


def format_row(row: Row) -> str:
    raw = row.get("raw") or {}
    return (
        f"{row['rps']:9.0f} req/s  p50 {row['wrk_latency_us']['p50'] / 1e3:7.2f} ms  "
        f"p99 {row['wrk_latency_us']['p99'] / 1e3:7.2f} ms  "
        f"raw p50 {raw.get('p50_us', float('nan')) / 1e3:7.2f} ms  "
        f"raw p99 {raw.get('p99_us', float('nan')) / 1e3:7.2f} ms  "
        f"cpu {row['cpu_us_per_request']:7.0f} us/req  errors {row['errors']}"
    )


# -- summary -----------------------------------------------------------------------------------


def summarize(runs: list[Row], targets: dict[str, Target]) -> list[Row]:
    """Per target and concurrency: medians across repeats, spread, and the ratio to baseline."""
    groups: dict[tuple[str, int], list[Row]] = {}
    for run in runs:
        groups.setdefault((run["target"], run["concurrency"]), []).append(run)

    def median(rows: list[Row], get: Any) -> float | None:
        values = [v for v in (get(r) for r in rows) if v is not None]
        return statistics.median(values) if values else None

    summary: dict[tuple[str, int], Row] = {}
    for (name, concurrency), rows in groups.items():
        rps = [r["rps"] for r in rows]
        med = statistics.median(rps)
        summary[(name, concurrency)] = {
            "target": name, "concurrency": concurrency, "repeats": len(rows),
            "rps_median": med, "rps_min": min(rps), "rps_max": max(rps),
            "busy": med > 0 and (max(rps) - min(rps)) / med > SPREAD_WARNING,
            "p50_ms": median(rows, lambda r: r["wrk_latency_us"]["p50"] / 1e3),
            "p99_ms": median(rows, lambda r: r["wrk_latency_us"]["p99"] / 1e3),
            "raw_p50_ms": median(rows, lambda r: r.get("raw", {}).get("p50_us", 0) / 1e3 or None),
            "raw_p99_ms": median(rows, lambda r: r.get("raw", {}).get("p99_us", 0) / 1e3 or None),
            "cpu_us_per_request": median(rows, lambda r: r["cpu_us_per_request"]),
            "errors": sum(r["errors"] for r in rows),
        }  # fmt: skip
    for (name, concurrency), row in summary.items():
        target = targets[name]
        base = [summary[(b, concurrency)] for b in target.baseline if (b, concurrency) in summary]
        if base:
            best = max(base, key=lambda r: r["rps_median"])
            row["baseline"] = best["target"]
            row["ratio"] = row["rps_median"] / best["rps_median"] if best["rps_median"] else None
            if target.goal_ratio is not None and concurrency == 32 and row["ratio"] is not None:
                row["goal_ratio"] = target.goal_ratio
                row["goal_met"] = row["ratio"] >= target.goal_ratio
    order = {name: i for i, name in enumerate(targets)}
    return sorted(summary.values(), key=lambda r: (order[r["target"]], r["concurrency"]))


def print_table(summary: list[Row]) -> None:
    header = (
        f"{'target':<20} {'c':>3} {'req/s':>8} {'[min-max]':>15} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'raw p50':>7} {'raw p99':>7} {'cpu us/req':>10}  ratio"
    )
    print("\n" + header + "\n" + "-" * len(header))
    for r in summary:
        spread = f"[{r['rps_min']:.0f}-{r['rps_max']:.0f}]"

        def ms(value: float | None) -> str:
            return f"{value:7.2f}" if value is not None else "      -"

        ratio = ""
        if r.get("ratio") is not None:
            ratio = f"{r['ratio']:.2f}x {r['baseline']}"
            if "goal_met" in r:
                ratio += f" (goal {r['goal_ratio']}x: {'met' if r['goal_met'] else 'NOT met'})"
        flags = (" busy?" if r["busy"] else "") + (f" errors={r['errors']}" if r["errors"] else "")
        print(
            f"{r['target']:<20} {r['concurrency']:>3} {r['rps_median']:>8.0f} {spread:>15} "
            f"{ms(r['p50_ms'])} {ms(r['p99_ms'])} {ms(r['raw_p50_ms'])} {ms(r['raw_p99_ms'])} "
            f"{r['cpu_us_per_request']:>10.0f}  {ratio}{flags}"
        )


def markdown(results: Row) -> str:
    """The figures, versions and command as a section to paste into docs/benchmarks.md."""
    m = results["machine"]
    lines = [
        f"### Serving benchmark, {results['started_at']}",
        "",
        f"Command: `{results['command']}`  ",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['wrk']}  ",
        f"Model: {results['model']}; one row per request; medians of "
        f"{results['settings']['repeats']} repeats of {results['settings']['duration_s']:g} s.",
        "",
        "| target | c | req/s (min-max) | p50 ms | p99 ms | raw p50 ms | raw p99 ms "
        "| CPU us/req | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]

    def ms(value: float | None) -> str:
        return f"{value:.2f}" if value is not None else "-"

    for r in results["summary"]:
        ratio = f"{r['ratio']:.2f}x {r['baseline']}" if r.get("ratio") is not None else ""
        if "goal_met" in r:
            ratio += f" (goal {r['goal_ratio']:g}x {'met' if r['goal_met'] else 'not met'})"
        lines.append(
            f"| {r['target']} | {r['concurrency']} | {r['rps_median']:,.0f} "
            f"({r['rps_min']:,.0f}-{r['rps_max']:,.0f}) | {ms(r['p50_ms'])} | {ms(r['p99_ms'])} "
            f"| {ms(r['raw_p50_ms'])} | {ms(r['raw_p99_ms'])} | {r['cpu_us_per_request']:,.0f} "
            f"| {ratio} |"
        )
    lines += ["", "Versions:", ""]
    for name, info in results["targets"].items():
        if info["status"] == "unavailable":
            lines.append(f"- {name}: unavailable: {info['error'].splitlines()[0]}")
            continue
        shown = [v for v in info["versions"] if v.split("==")[0].lower() in KEY_PACKAGES]
        lines.append(f"- {name}: {', '.join(shown)}" + ("" if info["status"] == "ok" else
                                                          f" ({info['status']})"))  # fmt: skip
    return "\n".join(lines) + "\n"


def machine() -> Row:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines()
                  if ln.startswith("model name")), "?")  # fmt: skip
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    wrk_version = subprocess.run([require_wrk(), "-v"], capture_output=True, text=True, check=False)
    return {
        "cores": os.cpu_count(), "cpu": model, "memory_gib": round(mem_kb / 2**20, 1),
        "kernel": platform.release(), "python": platform.python_version(),
        "wrk": (wrk_version.stdout + wrk_version.stderr).splitlines()[0].split(" Copyright")[0],
    }  # fmt: skip


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    def ints(text: str) -> list[int]:
        return [int(part) for part in text.split(",") if part]

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default=",".join(TARGETS),
                        help=f"comma-separated, from: {', '.join(TARGETS)}")  # fmt: skip
    parser.add_argument("--duration-s", type=float, default=10.0, help="wrk load per phase")
    parser.add_argument("--raw-duration-s", type=float, default=None,
                        help="raw-latency phase after each wrk phase (default min(3, duration); "
                        "0 skips it)")  # fmt: skip
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--concurrency", type=ints, default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results.json"))
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write table, versions and command as Markdown")  # fmt: skip
    args = parser.parse_args(argv)
    args.targets = [name for name in args.targets.split(",") if name]
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; known: {', '.join(TARGETS)}")
    if args.raw_duration_s is None:
        args.raw_duration_s = min(3.0, args.duration_s)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every `finally` stops its server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    require_wrk()
    rawlat = build_rawlat(CACHE_DIR)
    artifacts = make_artifacts(CACHE_DIR)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    targets: dict[str, Target] = {}
    status: dict[str, Row] = {}
    for name in args.targets:
        target = TARGETS[name](artifacts)
        try:
            target.prepare()
            targets[name] = target
            status[name] = {"status": "ok", "versions": target.versions()}
        except TargetError as exc:
            print(f"[skip] {name}: {exc}", flush=True)
            status[name] = {"status": "unavailable", "error": str(exc)}

    runs: list[Row] = []
    for repeat in range(args.repeats):
        names = list(targets)
        names = names[repeat % len(names) :] + names[: repeat % len(names)] if names else []
        print(f"\n== repeat {repeat + 1}/{args.repeats}: {', '.join(names)}", flush=True)
        for name in names:
            try:
                runs.extend(measure_target(targets[name], repeat, args, rawlat))
            except (TargetError, httpx.HTTPError, subprocess.SubprocessError, OSError) as exc:
                print(f"[fail] {name} (repeat {repeat + 1}): {exc}", flush=True)
                status[name].setdefault("failures", []).append(str(exc))

    measured = {run["target"] for run in runs}
    for name in targets:
        if name not in measured:
            status[name]["status"] = "failed"
    summary = summarize(runs, targets)
    print_table(summary)
    results = {
        "started_at": started_at,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        "model": ARTIFACT_SPEC,
        "settings": {key: str(v) if isinstance(v, Path) else v for key, v in vars(args).items()},
        "targets": status,
        "summary": summary,
        "runs": runs,
    }
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")
    if args.markdown is not None:
        args.markdown.write_text(markdown(results))
        print(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
