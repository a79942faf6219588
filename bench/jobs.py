"""Async jobs per second on the embedded SQLite queue.

Submits small jobs (one 98-feature row) to an async endpoint serving the
ONNX-compiled 100-tree forest, over ``--concurrency`` keep-alive connections,
then waits for all of them to complete. Reports the submit rate (202s per
second) and the end-to-end completion rate (jobs done per second from the
first submit to the last result stored), median/min/max over repeats.

    .venv/bin/python bench/jobs.py [--jobs 3000] [--concurrency 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from zeroserve.cli.demo import train
from zeroserve.loadgen import run_load
from zeroserve.process import ServerProcess


def finished(client: httpx.Client) -> float:
    total = 0.0
    for line in client.get("/metrics").text.splitlines():
        if line.startswith("zeroserve_jobs_finished_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def one_round(
    server: ServerProcess, client: httpx.Client, body: bytes, jobs: int, concurrency: int
) -> dict[str, float]:
    before = finished(client)
    started = time.perf_counter()
    load = asyncio.run(
        run_load(
            f"{server.url}/v1/endpoints/fraud/async", body, concurrency=concurrency, requests=jobs
        )
    )
    submitted = time.perf_counter()
    if load.statuses.get(202, 0) != jobs:
        raise RuntimeError(f"submissions failed: {load.statuses}")
    while finished(client) - before < jobs:
        time.sleep(0.01)
    done = time.perf_counter()
    return {
        "submit_per_s": jobs / (submitted - started),
        "complete_per_s": jobs / (done - started),
        "submit_p50_ms": load.percentile_ms(50),
        "submit_p99_ms": load.percentile_ms(99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zs-jobs-"))
    model, x = train(work)
    import skops.io as sio

    sio.dump(model, work / "fraud.skops")
    with ServerProcess(work / "state") as server:
        client = httpx.Client(
            base_url=server.url, timeout=600, headers={"x-zeroserve-client": "bench"}
        )
        with (work / "fraud.skops").open("rb") as fh:
            client.post(
                "/api/models/fraud/versions",
                data={"compile": "onnx"},
                files={"file": ("fraud.skops", fh)},
            ).raise_for_status()
        client.post(
            "/api/deploy",
            json={"model": "fraud", "mode": "async", "min_replicas": 1, "max_replicas": 1},
        ).raise_for_status()
        body = orjson.dumps({"instances": [x[0].tolist()]})
        one_round(server, client, body, 200, args.concurrency)  # warm up
        rounds = [
            one_round(server, client, body, args.jobs, args.concurrency)
            for _ in range(args.repeats)
        ]
    report: dict[str, Any] = {
        "machine": {"cores": os.cpu_count()},
        "jobs": args.jobs,
        "concurrency": args.concurrency,
    }
    for key in rounds[0]:
        values = [r[key] for r in rounds]
        report[key] = {"median": float(np.median(values)), "min": min(values), "max": max(values)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
