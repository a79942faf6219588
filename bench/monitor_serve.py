"""Monitoring costs on a live server (issue 12), in one run against the same endpoint.

    .venv/bin/python bench/monitor_serve.py                 # c=32, 3 rounds
    .venv/bin/python bench/monitor_serve.py --requests 5000 --rounds 1   # a smoke run

ONNX forest (bench/serve.py's artifacts), ``zeroserve up --processes 2``. Each round
measures the endpoint three ways, interleaved: plain; prediction log at 100%; a
shadow (the same model) at 100%. Then a rollout to a version that fails every
request, at about 200 requests a second: the time from the rollout's start to
traffic back on the baseline, and how many client requests failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import textwrap
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from serve import make_artifacts
from zeroserve.loadgen import run_load
from zeroserve.process import ServerProcess

BROKEN = textwrap.dedent("""
    import numpy as np

    class Model:
        def load(self, artifact_dir):
            pass

        def predict(self, inputs):
            x = inputs["input"]
            if (x[:, 0] > -50).any():
                raise RuntimeError("this version is broken")
            p = np.tile([1.0, 0.0], (len(x), 1))
            return {"label": np.zeros(len(x), np.int64), "probabilities": p}
""")


def check(r: httpx.Response) -> dict:
    assert r.status_code < 400, r.text
    return r.json() if r.content else {}


def phase(url: str, body: bytes, n: int, c: int) -> tuple[float, float]:
    result = asyncio.run(run_load(url, body, concurrency=c, requests=n))
    assert result.errors == 0, result.statuses
    return result.throughput, result.percentile_ms(99)


async def paced(url: str, body: bytes, rps: float, stop: asyncio.Event) -> list[int]:
    statuses: list[int] = []
    async with httpx.AsyncClient(timeout=30) as http:
        tasks = []
        while not stop.is_set():
            tasks.append(
                asyncio.create_task(
                    http.post(url, content=body, headers={"content-type": "application/json"})
                )
            )
            await asyncio.sleep(1 / rps)
        for t in tasks:
            statuses.append((await t).status_code)
    return statuses


def canary(api: httpx.Client, url: str, body: bytes) -> dict:
    stop = asyncio.Event()

    async def main() -> tuple[list[int], dict]:
        load = asyncio.create_task(paced(url, body, 200.0, stop))
        await asyncio.sleep(2)  # steady traffic first
        started = check(
            api.post(
                "/api/endpoints/bench/rollout",
                json={"to": "broken:1", "steps": [5, 25, 50, 100], "bake_s": 30},
            )
        )
        while True:
            status = check(api.get("/api/endpoints/bench/rollout"))
            if status["state"] != "running":
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1)
        stop.set()
        return await load, {**status, "started": started["started_at"]}

    statuses, status = asyncio.run(main())
    return {
        "state": status["state"],
        "fired": status["fired"],
        "seconds_to_baseline": status["finished_at"] - status["started"],
        "canary_requests": status["requests"]["canary"],
        "client_requests": len(statuses),
        "client_failures": sum(s != 200 for s in statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cache = Path(__file__).parent / ".cache"
    art = make_artifacts(cache)
    body = json.dumps({"instances": [list(art.row)]}).encode()
    with tempfile.TemporaryDirectory(prefix="zs-monitor-bench-") as tmp:
        root = Path(tmp)
        sample = np.random.default_rng(0).normal(size=(2000, len(art.row))).astype(np.float32)
        np.save(root / "sample.npy", sample)
        with ServerProcess(root / "data", env={"ZEROSERVE_GATEWAY_PROCESSES": "2"}) as server:
            api = httpx.Client(base_url=server.url, timeout=300)
            with art.model_onnx.open("rb") as fh, (root / "sample.npy").open("rb") as s:
                check(
                    api.post(
                        "/api/models/forest/versions",
                        files={"file": ("model.onnx", fh), "sample": ("sample.npy", s)},
                    )
                )
            check(api.post("/api/deploy", json={"model": "forest", "endpoint": "bench"}))
            spec = check(api.get("/api/endpoints/bench"))["spec"]
            url = f"{server.url}/v1/endpoints/bench/invocations"

            def configure(log_rate: float, shadow: bool) -> None:
                new = {**spec, "monitoring": {**spec["monitoring"], "log_sample_rate": log_rate}}
                new["shadow"] = (
                    {**spec["variants"][0], "name": "shadow", "weight": 0} if shadow else None
                )
                check(api.post("/api/endpoints", json=new))

            results: dict[str, list[tuple[float, float]]] = {
                "plain": [],
                "log 100%": [],
                "shadow 100%": [],
            }
            phase(url, body, args.requests // 3, args.concurrency)  # warm-up
            for _ in range(args.rounds):
                for name, (rate, shadow) in {
                    "plain": (0.0, False),
                    "log 100%": (1.0, False),
                    "shadow 100%": (0.0, True),
                }.items():
                    configure(rate, shadow)
                    phase(url, body, 2000, args.concurrency)
                    results[name].append(phase(url, body, args.requests, args.concurrency))
            configure(0.0, False)
            base = statistics.median(r[0] for r in results["plain"])
            base_p99 = statistics.median(r[1] for r in results["plain"])
            for name, rows in results.items():
                rps = statistics.median(r[0] for r in rows)
                p99 = statistics.median(r[1] for r in rows)
                print(
                    f"{name:12s} {rps:9,.0f} req/s ({rps / base - 1:+.1%})  "
                    f"p99 {p99:6.2f} ms ({p99 - base_p99:+.2f} ms)  "
                    f"runs: {[round(r[0]) for r in rows]}"
                )
            logged = check(
                api.post(
                    "/api/endpoints/bench/logs/query",
                    json={"since": None, "sql": "SELECT count(*) FROM predictions"},
                )
            )
            print(f"rows logged: {logged['rows'][0][0]:,}")
            (root / "broken.py").write_text(BROKEN)
            sample[:, 0] = -100.0  # registration probes the model: keep it out of the broken branch
            np.save(root / "sample.npy", sample)
            with (root / "broken.py").open("rb") as fh, (root / "sample.npy").open("rb") as s:
                check(
                    api.post(
                        "/api/models/broken/versions",
                        files={"file": ("broken.py", fh), "sample": ("sample.npy", s)},
                        data={"trust": "true"},
                    )
                )
            result = canary(api, url, body)
            print(f"broken canary: {result}")


if __name__ == "__main__":
    main()
