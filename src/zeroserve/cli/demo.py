"""`zeroserve demo`: the fraud model served as scikit-learn and as ONNX, compared."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from zeroserve.cli.demo_table import serve_by_column
from zeroserve.loadgen import run_load
from zeroserve.process import ServerProcess

console = Console()
N_FEATURES = 98
CONCURRENCY = (1, 8, 32)


def train(workdir: Path) -> tuple[Any, np.ndarray[Any, Any]]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(
        n_samples=20_000,
        n_features=N_FEATURES,
        n_informative=30,
        n_redundant=10,
        weights=[0.97, 0.03],
        flip_y=0.01,
        random_state=7,
    )
    x = x.astype(np.float32)
    model = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=7).fit(x, y)
    np.save(workdir / "reference.npy", x[:5_000])
    return model, x


def in_process_latency(model: Any, x: np.ndarray[Any, Any], onnx_path: Path) -> dict[str, float]:
    from zeroserve.runtimes.onnx import make_session

    model.n_jobs = 1
    row = x[:1]
    session = make_session(str(onnx_path))
    timings = {}
    cases: tuple[tuple[str, Callable[[], object], int], ...] = (
        ("sklearn", lambda: model.predict_proba(row), 100),
        ("onnx", lambda: session.run(None, {"input": row}), 5_000),
    )
    for name, fn, n in cases:
        fn()
        started = time.perf_counter()
        for _ in range(n):
            fn()
        timings[name] = (time.perf_counter() - started) / n
    return timings


def register_and_deploy(client: httpx.Client, workdir: Path) -> None:
    def register(data: dict[str, str]) -> dict[str, Any]:
        with (
            (workdir / "fraud.skops").open("rb") as model,
            (workdir / "reference.npy").open("rb") as sample,
        ):
            response = client.post(
                "/api/models/fraud/versions",
                data=data,
                files={"file": ("fraud.skops", model), "sample": ("reference.npy", sample)},
            )
        response.raise_for_status()
        return response.json()  # type: ignore[no-any-return]

    with console.status("registering fraud v1 (scikit-learn, skops)"):
        register({})
    with console.status("registering fraud v2 (compiled to ONNX, checked on the sample)"):
        v2 = register({"compile": "onnx"})
    check = v2["metrics"]
    console.print(
        f"  ONNX conversion checked on {check['check_rows']} reference rows: largest "
        f"probability difference {check['max_abs_diff']:.1e}, labels equal"
    )
    for endpoint, ref in (("fraud-sklearn", "1"), ("fraud-onnx", "2")):
        with console.status(f"deploying {endpoint}"):
            client.post(
                "/api/deploy",
                json={
                    "model": "fraud",
                    "ref": ref,
                    "endpoint": endpoint,
                    "max_replicas": 2,
                    "min_replicas": 2,
                    "max_batch_size": 64,
                },
            ).raise_for_status()


def verify(client: httpx.Client, model: Any, x: np.ndarray[Any, Any], onnx_path: Path) -> float:
    """Served predictions against in-process ones; returns the largest difference."""
    from zeroserve.runtimes.onnx import make_session

    rows = x[-200:]
    want_sklearn = model.predict_proba(rows)
    session = make_session(str(onnx_path))  # configured as in the replicas
    want_onnx = session.run(["probabilities"], {"input": rows})[0]
    worst = 0.0
    for endpoint, want in (("fraud-sklearn", want_sklearn), ("fraud-onnx", want_onnx)):
        response = client.post(
            f"/v1/endpoints/{endpoint}/invocations", json={"instances": rows.tolist()}
        )
        response.raise_for_status()
        got = np.array([p["probabilities"] for p in response.json()["predictions"]])
        diff = float(np.max(np.abs(got - want)))
        if diff > 0.0:
            raise AssertionError(f"{endpoint} served predictions differ by {diff}")
        worst = max(worst, diff)
    return worst


def load(url: str, row: list[float], requests: int) -> list[tuple[str, int, Any]]:
    body = orjson.dumps({"instances": [row]})
    results = []
    for endpoint in ("fraud-sklearn", "fraud-onnx"):
        target = f"{url}/v1/endpoints/{endpoint}/invocations"
        asyncio.run(run_load(target, body, concurrency=8, requests=200))  # warm up
        for c in CONCURRENCY:
            n = requests if c > 1 else max(100, requests // 4)
            with console.status(f"{endpoint}: {n} requests at concurrency {c}"):
                result = asyncio.run(run_load(target, body, concurrency=c, requests=n))
            if result.errors:
                raise AssertionError(
                    f"{endpoint}: {result.errors} failed requests {result.statuses}"
                )
            results.append((endpoint, c, result))
    return results


def run_demo(requests: int = 2000, keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="zeroserve-demo-"))
    console.print(
        Panel.fit(
            "zeroserve demo: a 98-feature, 100-tree fraud model, served as "
            "scikit-learn and as ONNX",
            style="bold",
        )
    )
    try:
        with console.status("training a RandomForest (98 features, 100 trees) on 20,000 rows"):
            model, x = train(workdir)
            import skops.io as sio

            sio.dump(model, workdir / "fraud.skops")
        with ServerProcess(workdir / "state") as server:
            console.print(f"server up at {server.url} (log: {server.log_path})")
            client = httpx.Client(
                base_url=server.url, timeout=600, headers={"x-zeroserve-client": "demo"}
            )
            register_and_deploy(client, workdir)
            onnx_path = workdir / "state" / "artifacts" / "models" / "fraud" / "2" / "model.onnx"
            single = in_process_latency(model, x, onnx_path)
            results = load(server.url, x[0].tolist(), requests)
            worst = verify(client, model, x, onnx_path)
            report(single, results, worst)
            serve_by_column(client, workdir, console)
        return 0
    finally:
        if keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def report(single: dict[str, float], results: list[tuple[str, int, Any]], worst: float) -> None:
    table = Table(title="served over HTTP, one row per request")
    for col in ("endpoint", "concurrency", "requests/s", "p50 ms", "p99 ms"):
        table.add_column(col, justify="right")
    for endpoint, c, r in results:
        table.add_row(
            endpoint,
            str(c),
            f"{r.throughput:,.0f}",
            f"{r.percentile_ms(50):.2f}",
            f"{r.percentile_ms(99):.2f}",
        )
    console.print(table)
    rps = {(e, c): r.throughput for e, c, r in results}
    top = max(CONCURRENCY)
    speedup = rps[("fraud-onnx", top)] / max(rps[("fraud-sklearn", top)], 1e-9)
    console.print(
        Panel.fit(
            f"in-process, one row: scikit-learn {single['sklearn'] * 1e3:.1f} ms, ONNX Runtime "
            f"{single['onnx'] * 1e6:.0f} us ({single['sklearn'] / single['onnx']:.0f}x faster)\n"
            f"served at concurrency {top}: ONNX {rps[('fraud-onnx', top)]:,.0f} requests/s vs "
            f"scikit-learn {rps[('fraud-sklearn', top)]:,.0f} ({speedup:.1f}x)\n"
            f"served predictions equal the in-process model's (largest difference {worst:g})\n"
            f"machine: {os.cpu_count()} cores",
            title="headline",
            style="green",
        )
    )
