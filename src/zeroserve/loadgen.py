"""A small closed-loop HTTP/1.1 load generator for the demo and the benchmarks.

Each of ``concurrency`` keep-alive connections sends a pre-encoded request,
reads the whole response and sends the next. It records every latency (no
coordinated-omission correction: these are the times clients saw). Written on
raw asyncio streams so it costs a fraction of what a general client would.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    requests: int
    errors: int
    elapsed_s: float
    latencies_s: list[float] = field(repr=False, default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        return float(np.percentile(self.latencies_s, q) * 1000.0)


def encode_post(url: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bytes]:
    """(status, body, raw head) of one HTTP/1.1 response with a Content-Length."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body, head


async def run_load(
    url: str, body: bytes, *, concurrency: int, requests: int, headers: dict[str, str] | None = None
) -> LoadResult:
    """Send ``requests`` requests over ``concurrency`` connections; record each latency."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    payload = encode_post(url, body, headers)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    remaining = requests

    async def worker() -> None:
        nonlocal remaining
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                writer.write(payload)
                status, _, _ = await _read_response(reader)
                latencies.append(time.perf_counter() - started)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    errors = sum(n for s, n in statuses.items() if s != 200)
    return LoadResult(concurrency, len(latencies), errors, elapsed, latencies, statuses)


class Connection:
    """One keep-alive connection for timing single requests (no connect time included)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.parts = urlsplit(url)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(
            self.parts.hostname, self.parts.port
        )
        return self

    async def post(self, path: str, body: bytes) -> tuple[int, bytes, float, bytes]:
        """(status, body, seconds, raw response head)."""
        assert self.reader is not None and self.writer is not None
        request = encode_post(f"{self.url.rstrip('/')}{path}", body)
        started = time.perf_counter()
        self.writer.write(request)
        status, data, head = await _read_response(self.reader)
        return status, data, time.perf_counter() - started, head

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
