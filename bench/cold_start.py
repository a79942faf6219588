"""Scale-from-zero latency through HTTP versus a fresh process.

For the ONNX-compiled 100-tree forest and the scikit-learn original, each on a
serverless endpoint with a short idle timeout: wait until the endpoint has no
replica, send one request on an open keep-alive connection, time it until the
response arrives, check it was a cold start. Alternates models per cycle. In
the same run, times what a naive platform does on a cold start: a fresh
Python process that imports the libraries, loads the artifact and predicts.

With ``--processes 2`` the server runs a secondary gateway process and the
timed connection is one that the secondary holds (found by the ``Via`` header
it adds to what it forwards): the cold start then includes the wake message
to the control process, the fork, the state update and the secondary's new
channel to the replica.

    .venv/bin/python bench/cold_start.py [--cycles 50] [--fresh-runs 10] [--processes 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from zeroserve.cli.demo import train
from zeroserve.loadgen import Connection
from zeroserve.process import ServerProcess

FRESH = {
    "onnx": (
        "import onnxruntime as ort, numpy as np\n"
        "s = ort.InferenceSession({path!r}, providers=['CPUExecutionProvider'])\n"
        "s.run(None, {{'input': np.zeros((1, 98), np.float32)}})\n"
    ),
    "sklearn": (
        "import numpy as np, skops.io as sio\n"
        "m = sio.load({path!r}, trusted=sio.get_untrusted_types(file={path!r}))\n"
        "m.predict_proba(np.zeros((1, 98), np.float32))\n"
    ),
}


def fresh_process_s(kind: str, path: Path, runs: int) -> list[float]:
    code = FRESH[kind].format(path=str(path))
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        times.append(time.perf_counter() - started)
    return times


def replicas(client: httpx.Client, endpoint: str) -> int:
    status = client.get(f"/api/endpoints/{endpoint}").json()["status"]
    return sum(len(v["replicas"]) + v["starting"] for v in status["variants"])


async def open_connection(url: str, on_secondary: bool) -> Connection:
    """A keep-alive connection; with ``on_secondary``, one a secondary gateway accepted."""
    for _ in range(200):
        conn = await Connection(url).open()
        if not on_secondary:
            return conn
        _, _, _, head = await conn.post("/healthz", b"")  # forwarded by a secondary: Via
        if b"\r\nvia:" in head.lower():
            return conn
        conn.close()
    raise RuntimeError("no connection landed on a secondary gateway in 200 tries")


async def cold_cycles(
    url: str,
    client: httpx.Client,
    endpoints: list[str],
    cycles: int,
    body: bytes,
    on_secondary: bool = False,
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {e: [] for e in endpoints}
    conn = await open_connection(url, on_secondary)
    try:
        for i in range(cycles * len(endpoints)):
            endpoint = endpoints[i % len(endpoints)]
            deadline = time.monotonic() + 30
            while replicas(client, endpoint) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.05)  # let the scale-down finish reaping
            status, data, seconds, head = await conn.post(
                f"/v1/endpoints/{endpoint}/invocations", body
            )
            if status != 200 or b"x-zeroserve-cold-start: true" not in head.lower():
                raise RuntimeError(f"cycle {i} on {endpoint}: {status} {data[:200]!r} {head!r}")
            results[endpoint].append(seconds)
    finally:
        conn.close()
    return results


def summary(times: list[float]) -> dict[str, float]:
    ms = np.array(times) * 1000.0
    return {
        "n": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--fresh-runs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--processes", type=int, default=1, help="gateway processes")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zs-cold-"))
    model, x = train(work)
    import skops.io as sio

    sio.dump(model, work / "fraud.skops")
    env = {"ZEROSERVE_GATEWAY_PROCESSES": str(args.processes)}
    with ServerProcess(work / "state", env=env) as server:
        client = httpx.Client(
            base_url=server.url, timeout=600, headers={"x-zeroserve-client": "bench"}
        )
        for data in ({}, {"compile": "onnx"}):
            with (work / "fraud.skops").open("rb") as fh:
                client.post(
                    "/api/models/fraud/versions", data=data, files={"file": ("fraud.skops", fh)}
                ).raise_for_status()
        for endpoint, ref in (("cold-sklearn", "1"), ("cold-onnx", "2")):
            client.post(
                "/api/deploy",
                json={
                    "model": "fraud",
                    "ref": ref,
                    "endpoint": endpoint,
                    "mode": "serverless",
                    "idle_timeout_s": 0.1,
                    "scale_down_delay_s": 0.0,
                },
            ).raise_for_status()
        body = orjson.dumps({"instances": [x[0].tolist()]})
        cold = asyncio.run(
            cold_cycles(
                server.url,
                client,
                ["cold-onnx", "cold-sklearn"],
                args.cycles,
                body,
                on_secondary=args.processes > 1,
            )
        )
        onnx_path = work / "state" / "artifacts" / "models" / "fraud" / "2" / "model.onnx"
        fresh = {
            "onnx": fresh_process_s("onnx", onnx_path, args.fresh_runs),
            "sklearn": fresh_process_s("sklearn", work / "fraud.skops", args.fresh_runs),
        }
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "cycles": args.cycles,
        "gateway_processes": args.processes,
        "timed_on": "secondary" if args.processes > 1 else "control process",
    }
    for kind, endpoint in (("onnx", "cold-onnx"), ("sklearn", "cold-sklearn")):
        c, f = summary(cold[endpoint]), summary(fresh[kind])
        report[kind] = {
            "zeroserve_cold_start": c,
            "fresh_process": f,
            "ratio_fresh_over_cold_p50": f["p50_ms"] / c["p50_ms"],
        }
    print(json.dumps(report, indent=2))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
