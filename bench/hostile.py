"""Small-request latency while hostile clients load the gateway.

Serves the ONNX-compiled forest (98 features) and measures the latency of one-row
inference requests on a keep-alive connection, sequentially:

- alone;
- while ``--big-clients`` clients each send 6 MB bodies in a loop (the review's M6);
- while ``--stalled`` connections hold unfinished headers (the review's H5), and how long
  the server takes to close them all.

    .venv/bin/python bench/hostile.py [--requests 200] [--big-clients 3] [--stalled 3000]

Run with ``PYTHONPATH=<other checkout>/src`` to measure another version side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

from zeroserve.cli.demo import train
from zeroserve.process import ServerProcess

HEADERS = {"x-zeroserve-client": "bench"}


def latencies_ms(url: str, body: bytes, count: int) -> list[float]:
    out = []
    with httpx.Client(base_url=url, timeout=120, headers=HEADERS) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(
                "/v1/endpoints/fraud/invocations",
                content=body,
                headers={"content-type": "application/json"},
            )
            out.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    return out


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99) - 1], 2),
        "max_ms": round(ordered[-1], 2),
    }


def with_big_bodies(url: str, small: bytes, big: bytes, clients: int, count: int) -> Any:
    stop = threading.Event()
    sent = [0]

    def sender() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=HEADERS) as client:
            while not stop.is_set():
                client.post(
                    "/v1/endpoints/fraud/invocations",
                    content=big,
                    headers={"content-type": "application/json"},
                )
                sent[0] += 1

    threads = [threading.Thread(target=sender, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    values = latencies_ms(url, small, count)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    return {**summary(values), "big_requests_sent": sent[0]}


def with_stalled(port: int, url: str, small: bytes, stalled: int, count: int) -> Any:
    socks = []
    for i in range(stalled):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ".encode())
        socks.append(sock)
    opened = time.monotonic()
    values = latencies_ms(url, small, count)
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, deadline = 0, time.monotonic() + 60
    while closed < stalled and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                if sock.recv(65536):
                    continue
            except ConnectionError:
                pass
            sel.unregister(sock)
            closed += 1
    all_closed_s = time.monotonic() - opened
    for s in socks:
        s.close()
    return {
        **summary(values),
        "stalled": stalled,
        "closed_by_server": closed,
        "all_closed_after_s": round(all_closed_s, 1) if closed == stalled else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--big-clients", type=int, default=3)
    parser.add_argument("--stalled", type=int, default=3000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zs-hostile-"))
    model, x = train(work)
    import skops.io as sio

    sio.dump(model, work / "fraud.skops")
    env = {"ZEROSERVE_MAX_CONNECTIONS": str(args.stalled + 500)}
    with ServerProcess(work / "state", env=env) as server:
        client = httpx.Client(base_url=server.url, timeout=600, headers=HEADERS)
        with (work / "fraud.skops").open("rb") as fh:
            client.post(
                "/api/models/fraud/versions",
                data={"compile": "onnx"},
                files={"file": ("fraud.skops", fh)},
            ).raise_for_status()
        client.post("/api/deploy", json={"model": "fraud"}).raise_for_status()
        small = orjson.dumps({"instances": [x[0].tolist()]})
        rows = int(5.9 * 1024 * 1024 / len(orjson.dumps(x[0].tolist())))
        big = orjson.dumps({"instances": np.resize(x, (rows, x.shape[1])).tolist()})
        latencies_ms(server.url, small, 50)  # warm up
        report = {
            "machine": {"cores": os.cpu_count()},
            "big_body_mb": round(len(big) / 1024 / 1024, 2),
            "alone": summary(latencies_ms(server.url, small, args.requests)),
            "with_big_bodies": with_big_bodies(
                server.url, small, big, args.big_clients, args.requests
            ),
            "with_stalled_connections": with_stalled(
                server.port, server.url, small, args.stalled, args.requests
            ),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
