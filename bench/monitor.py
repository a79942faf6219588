"""Monitoring benchmarks (issue 12).

    .venv/bin/python bench/monitor.py drift            # 1,000,000 logged rows x 98 features
    .venv/bin/python bench/monitor.py record           # prediction-log cost per request, in process

``drift`` writes the log once under bench/.cache/drift (Parquet in the Hive layout
the server writes, through ``PredictionLog``), profiles a 100,000-row reference, then
times ``drift_report`` in a fresh process and reports its peak RSS. Five features are
shifted by 0.2 sigma; the report must flag exactly those.

The end-to-end figures (prediction log and shadow at 100% against the same endpoint
without them, time from a broken canary's first request to the baseline) need the
data-plane wiring (see docs/design-notes.md, "Rollouts and monitoring") and are not
in this script yet.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from zeroserve.monitor.predlog import PredictionLog
from zeroserve.monitor.profile import Profile, build_profile
from zeroserve.monitor.report import drift_report
from zeroserve.registry.store import ArtifactStore
from zeroserve.types import Signature, TensorSpec

CACHE = Path(__file__).parent / ".cache" / "drift"
FEATURES = 98
SHIFTED = (3, 17, 40, 66, 90)
T0 = 1_800_000_000.0
SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, FEATURES])],
    outputs=[TensorSpec(name="probabilities", dtype="float32", shape=[-1, 2])],
)


def prepare(rows: int, chunk: int) -> None:
    if (CACHE / "done.json").exists() and json.loads((CACHE / "done.json").read_text())[
        "rows"
    ] == rows:
        return
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.5, 20.0, FEATURES).astype(np.float32)
    offset = rng.normal(0, 100, FEATURES).astype(np.float32)
    reference = rng.standard_normal((100_000, FEATURES), dtype=np.float32) * scale + offset
    build_profile(SIG, {"input": reference}).save(CACHE / "profile.json")
    store = ArtifactStore(str(CACHE / "store"))
    clock = iter(np.linspace(T0, T0 + 1800, 3 * (rows // chunk) + 10).tolist())
    log = PredictionLog(store, default_rate=1.0, clock=lambda: next(clock), flush_rows=10**9)
    started = time.perf_counter()
    for i in range(rows // chunk):
        x = rng.standard_normal((chunk, FEATURES), dtype=np.float32)
        x[:, list(SHIFTED)] += 0.2
        x = x * scale + offset
        p1 = rng.random(chunk, dtype=np.float32)
        log.max_buffer_bytes = 1 << 40
        log.record(
            "fraud",
            "v1",
            f"r{i}",
            {"input": x},
            {"probabilities": np.stack([1 - p1, p1], 1)},
            1.0,
            signature=SIG,
        )
        log.flush()
    (CACHE / "done.json").write_text(
        json.dumps({"rows": rows, "write_s": time.perf_counter() - started})
    )


def measure() -> None:
    profile = Profile.load(CACHE / "profile.json")
    store = ArtifactStore(str(CACHE / "store"))
    started = time.perf_counter()
    report = drift_report(
        profile, store, "fraud", variant="v1", since_ts=T0 - 1, until_ts=T0 + 3600
    )
    elapsed = time.perf_counter() - started
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({
        "rows": report["rows"], "features": len(report["features"]), "seconds": elapsed,
        "peak_rss_mb": rss_mb, "drifted": report["drifted"],
    }))  # fmt: skip


def drift(args: argparse.Namespace) -> None:
    prepare(args.rows, args.chunk)
    written = json.loads((CACHE / "done.json").read_text())
    print(f"log: {args.rows:,} rows x {FEATURES} features, written in {written['write_s']:.1f} s")
    runs = []
    for _ in range(args.repeats):
        out = subprocess.run(
            [sys.executable, __file__, "_measure"], check=True, capture_output=True, text=True
        ).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
        print(f"  report: {runs[-1]['seconds']:.2f} s, peak RSS {runs[-1]['peak_rss_mb']:.0f} MB")
    want = [f"input_{i}" for i in SHIFTED]
    got = sorted(runs[-1]["drifted"], key=lambda f: int(f.split("_")[1]))
    verdict = "exactly the shifted ones" if got == want else f"MISMATCH, want {want}"
    print(f"drifted: {got} ({verdict})")
    best = min(r["seconds"] for r in runs)
    median = sorted(r["seconds"] for r in runs)[len(runs) // 2]
    print(f"best {best:.2f} s, median {median:.2f} s (goal < 10 s)")


def record(args: argparse.Namespace) -> None:
    """The hot-path cost of ``record`` (100% sampling) for one 98-feature row."""
    log = PredictionLog(ArtifactStore(str(CACHE / "record-store")), default_rate=1.0)
    x = {"input": np.ones((1, FEATURES), dtype=np.float32)}
    y = {"probabilities": np.array([[0.3, 0.7]], dtype=np.float32)}
    n = args.n
    started = time.perf_counter()
    for i in range(n):
        log.record("fraud", "v1", f"r{i}", x, y, 1.0, signature=SIG)
    per_call_us = (time.perf_counter() - started) / n * 1e6
    started = time.perf_counter()
    rows = log.flush()
    flush_s = time.perf_counter() - started
    print(f"record: {per_call_us:.2f} us per request; flush: {rows:,} rows in {flush_s:.2f} s "
          f"({rows / flush_s:,.0f} rows/s, off the request path)")  # fmt: skip
    shutil.rmtree(CACHE / "record-store", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drift")
    d.add_argument("--rows", type=int, default=1_000_000)
    d.add_argument("--chunk", type=int, default=50_000)
    d.add_argument("--repeats", type=int, default=3)
    r = sub.add_parser("record")
    r.add_argument("--n", type=int, default=100_000)
    sub.add_parser("_measure")
    args = parser.parse_args()
    {"drift": drift, "record": record, "_measure": lambda _a: measure()}[args.command](args)


if __name__ == "__main__":
    main()
