"""LLM gateway benchmark: zeroserve vs. direct-to-upstream vs. LiteLLM's proxy, one run.

A local upstream (bench/llm_upstream.py) answers in fixed time: ``instant``, ``delay50``
(50 ms), or ``stream`` (N chunks at a fixed inter-token delay). An open-loop generator
sends requests at fixed rates (a request is due at ``t0 + i / rate`` whether or not earlier
ones finished; latency counts from that due time, so a stalled server cannot hide its
queue) over keep-alive connections, with a 1 s timeout. Each target runs the same rates on
the same upstream; overhead = target minus direct at the same rate. CPU per request comes
from /proc (user + system time of the server's processes), resident memory is sampled
every second, and a soak phase checks that memory stays flat.

    .venv/bin/python bench/llm_gateway.py                       # everything (~14 min)
    .venv/bin/python bench/llm_gateway.py --duration-s 3 --soak-s 20 --out /tmp/smoke.json

LiteLLM runs from its own virtual environment, bench/.cache/litellm-venv
(``python -m venv bench/.cache/litellm-venv && bench/.cache/litellm-venv/bin/pip install
'litellm[proxy]==1.79.3'``), one worker, no callbacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
LITELLM = ROOT / "bench" / ".cache" / "litellm-venv" / "bin" / "litellm"
TIMEOUT_S = 1.0
MESSAGES = [{"role": "user", "content": "Say hello."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code < 500:
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not come up")


# ---------------------------------------------------------------- processes and /proc


def tree(pid: int) -> list[int]:
    out = [pid]
    for child in (
        Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if Path(f"/proc/{pid}").exists()
        else []
    ):
        out.extend(tree(int(child)))
    return out


def cpu_s(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


@dataclass
class Target:
    name: str
    url: str  # base URL up to and including /v1
    process: subprocess.Popen[bytes] | None = None
    model_prefix: str = ""

    def pids(self) -> list[int]:
        return tree(self.process.pid) if self.process else []

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("ab")
    return subprocess.Popen(
        cmd,
        stdout=fh,
        stderr=fh,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **env},
    )


# ---------------------------------------------------------------- the open-loop generator


@dataclass
class Phase:
    target: str
    mode: str
    rate: int
    duration_s: float
    sent: int = 0
    ok: int = 0
    failed: int = 0
    timeouts: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    cpu_s: float = 0.0
    rss_mb: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    ttft_ms: list[float] = field(default_factory=list, repr=False)
    overhead_us: list[float] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        def pct(xs: list[float], q: float) -> float | None:
            return round(float(np.percentile(xs, q)), 3) if xs else None

        return {
            "target": self.target,
            "mode": self.mode,
            "rate": self.rate,
            "duration_s": self.duration_s,
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "success": round(self.ok / self.sent, 4) if self.sent else 0.0,
            "achieved_rps": round(self.ok / self.duration_s, 1),
            "p50_ms": pct(self.latencies_ms, 50),
            "p90_ms": pct(self.latencies_ms, 90),
            "p99_ms": pct(self.latencies_ms, 99),
            "mean_ms": round(float(np.mean(self.latencies_ms)), 3) if self.latencies_ms else None,
            "ttft_p50_ms": pct(self.ttft_ms, 50),
            "ttft_p99_ms": pct(self.ttft_ms, 99),
            "overhead_header_p50_us": pct(self.overhead_us, 50),
            "overhead_header_p99_us": pct(self.overhead_us, 99),
            "cpu_us_per_request": round(self.cpu_s / self.ok * 1e6, 1) if self.ok else None,
            "cpu_cores": round(self.cpu_s / self.duration_s, 3),
            "rss_mb": round(self.rss_mb, 1),
        }


def request_bytes(
    url: str, model: str, stream: bool, headers: dict[str, str]
) -> tuple[str, int, bytes]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    body: dict[str, Any] = {"model": model, "messages": MESSAGES, "max_tokens": 16}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    raw = json.dumps(body).encode()
    head = [
        f"POST {parts.path}/chat/completions HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(raw)}",
    ]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return (
        parts.hostname or "127.0.0.1",
        parts.port or 80,
        ("\r\n".join(head) + "\r\n\r\n").encode() + raw,
    )


async def read_response(
    reader: asyncio.StreamReader, due: float, loop: asyncio.AbstractEventLoop
) -> tuple[int, float | None, float | None]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length, chunked, overhead = 0, False, None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"x-zeroserve-overhead-us":
            overhead = float(value)
    if not chunked:
        if length:
            await reader.readexactly(length)
        return status, None, overhead
    ttft = None
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")
            return status, ttft, overhead
        data = await reader.readexactly(size + 2)
        if ttft is None and b'"content":"tok' in data.replace(b" ", b""):
            ttft = (loop.time() - due) * 1000


async def open_loop(
    target: Target, mode: str, rate: int, duration_s: float, headers: dict[str, str]
) -> Phase:
    loop = asyncio.get_running_loop()
    host, port, payload = request_bytes(
        target.url, target.model_prefix + mode, mode == "stream", headers
    )
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    phase = Phase(target.name, mode, rate, duration_s)

    async def one(due: float) -> None:
        conn = idle.pop() if idle else None
        try:
            async with asyncio.timeout(TIMEOUT_S):
                if conn is None:
                    conn = await asyncio.open_connection(host, port)
                conn[1].write(payload)
                status, ttft, overhead = await read_response(conn[0], due, loop)
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            phase.failed += 1
            phase.timeouts += isinstance(exc, TimeoutError)
            name = type(exc).__name__
            phase.errors[name] = phase.errors.get(name, 0) + 1
            if conn is not None:
                conn[1].close()
            return
        phase.latencies_ms.append((loop.time() - due) * 1000)
        if status == 200:
            phase.ok += 1
            if ttft is not None:
                phase.ttft_ms.append(ttft)
            if overhead is not None:
                phase.overhead_us.append(overhead)
        else:
            phase.failed += 1
            phase.errors[str(status)] = phase.errors.get(str(status), 0) + 1
        idle.append(conn)

    pids = target.pids()
    cpu0 = cpu_s(pids)
    n = int(rate * duration_s)
    t0 = loop.time() + 0.01
    tasks = []
    for i in range(n):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(due)))
    await asyncio.gather(*tasks)
    phase.sent = n
    phase.cpu_s = cpu_s(pids) - cpu0
    phase.rss_mb = rss_mb(pids)
    for _, writer in idle:
        writer.close()
    return phase


async def soak(
    target: Target, rate: int, seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    samples: list[tuple[float, float]] = []
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    while time.monotonic() - started < seconds:
        phase = await open_loop(target, "instant", rate, min(10.0, seconds), headers)
        results.append(phase.summary())
        samples.append((round(time.monotonic() - started, 1), round(rss_mb(target.pids()), 1)))
    rss = [s[1] for s in samples]
    return {
        "target": target.name,
        "rate": rate,
        "seconds": round(time.monotonic() - started),
        "rss_samples": samples,
        "rss_first_mb": rss[0],
        "rss_last_mb": rss[-1],
        "rss_max_mb": max(rss),
        "p99_ms_by_window": [r["p99_ms"] for r in results],
        "success": min(r["success"] for r in results),
    }


# ---------------------------------------------------------------- targets


def start_upstream(tmp: Path, chunks: int, chunk_ms: float) -> Target:
    port = free_port()
    env = {"LLM_BENCH_CHUNKS": str(chunks), "LLM_BENCH_CHUNK_MS": str(chunk_ms)}
    proc = start(
        [sys.executable, str(ROOT / "bench" / "llm_upstream.py"), str(port)],
        env,
        tmp / "upstream.log",
    )
    target = Target("direct", f"http://127.0.0.1:{port}/v1", proc)
    wait_http(f"http://127.0.0.1:{port}/v1/models")
    return target


def start_zeroserve(tmp: Path, upstream: Target, processes: int) -> Target:
    port = free_port()

    def deps(m: str) -> list[dict[str, Any]]:
        return [
            {
                "name": f"up-{m}",
                "provider": "openai",
                "model": m,
                "base_url": upstream.url,
                "prices": {"input": "0.15", "output": "0.6"},
            }
        ]

    config = {
        "cache": {"enabled": False},
        "resilience": {"health_interval_s": 600},
        "models": [{"name": m, "deployments": deps(m)} for m in ("instant", "delay50", "stream")],
    }
    cfg = tmp / "llm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {
        "ZEROSERVE_LLM_CONFIG": str(cfg),
        "ZEROSERVE_GATEWAY_PROCESSES": str(processes),
        "PYTHONPATH": str(ROOT / "src"),
    }
    cmd = [
        sys.executable,
        "-m",
        "zeroserve.cli.main",
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(tmp / f"zs{processes}"),
        "--text-logs",
    ]
    proc = start(cmd, env, tmp / "zeroserve.log")
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return Target(
        "zeroserve" if processes == 1 else f"zeroserve-{processes}proc",
        f"http://127.0.0.1:{port}/v1",
        proc,
    )


def start_litellm(tmp: Path, upstream: Target) -> Target | None:
    if not LITELLM.exists():
        print(f"LiteLLM not installed at {LITELLM}; skipping it", file=sys.stderr)
        return None
    port = free_port()
    config = {
        "model_list": [
            {
                "model_name": m,
                "litellm_params": {
                    "model": f"openai/{m}",
                    "api_base": upstream.url,
                    "api_key": "fake",
                },
            }
            for m in ("instant", "delay50", "stream")
        ],
        "litellm_settings": {"telemetry": False, "drop_params": True},
    }
    cfg = tmp / "litellm.yaml"
    cfg.write_text(yaml.safe_dump(config))
    env = {
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
        "PYTHONPATH": "",
    }
    proc = start(
        [str(LITELLM), "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
        env,
        tmp / "litellm.log",
    )
    wait_http(f"http://127.0.0.1:{port}/health/liveliness", 180)
    return Target("litellm", f"http://127.0.0.1:{port}/v1", proc)


def litellm_version() -> str:
    py = LITELLM.parent / "python"
    out = subprocess.run(
        [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
    )
    return out.stdout.strip() or "unknown"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    rates = [int(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="llm-bench-"))
    upstream = start_upstream(tmp, args.chunks, args.chunk_ms)
    targets = [upstream, start_zeroserve(tmp, upstream, 1)]
    litellm = None if args.no_litellm else start_litellm(tmp, upstream)
    if litellm:
        targets.append(litellm)
    phases: list[dict[str, Any]] = []
    try:
        for t in targets:  # warm-up: connections, imports, JIT-free but cache-hot
            await open_loop(t, "instant", 50, 2, {})
        plan: list[tuple[Target, str, int]] = []
        for t in targets:
            plan += [(t, "instant", r) for r in rates]
            if args.instant_only:
                continue
            if t.name != "litellm":
                plan += [(t, "delay50", 1000), (t, "stream", 100), (t, "stream", 500)]
            else:
                plan += [(t, "delay50", 100), (t, "stream", 100)]
        for t, mode, rate in plan:
            if t.name == "litellm" and rate > args.litellm_max_rate:
                continue
            phase = await open_loop(t, mode, rate, args.duration_s, {})
            s = phase.summary()
            phases.append(s)
            print(json.dumps(s), flush=True)
            await asyncio.sleep(3 if t.name == "litellm" else 1)  # let the last timeouts drain
        soak_result = None
        if litellm is not None:
            litellm.stop()  # nothing else competes with the soak
        if args.soak_s > 0:
            soak_result = await soak(targets[1], args.soak_rate, args.soak_s, {})
            print(
                json.dumps({k: v for k, v in soak_result.items() if k != "rss_samples"}), flush=True
            )
    finally:
        for t in reversed(targets):
            t.stop()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, load average at end {os.getloadavg()[0]:.2f}",
        "litellm_version": litellm_version() if litellm else None,
        "python": sys.version.split()[0],
        "phases": phases,
        "soak": soak_result,
    }


def markdown(result: dict[str, Any]) -> str:
    """Tables for docs/benchmarks.md: every phase, then overhead against direct."""
    phases = result["phases"]
    lines = [
        "| target | mode | rate | success | p50 ms | p90 ms | p99 ms | TTFT p50 | TTFT p99 "
        "| self-reported overhead p50/p99 us | CPU us/req | cores | RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    for p in phases:
        oh = (
            "-"
            if p["overhead_header_p50_us"] is None
            else f"{p['overhead_header_p50_us']:g} / {p['overhead_header_p99_us']:g}"
        )
        lines.append(
            f"| {p['target']} | {p['mode']} | {p['rate']} | {p['success'] * 100:.2f}% "
            f"| {f(p['p50_ms'])} | {f(p['p90_ms'])} | {f(p['p99_ms'])} | {f(p['ttft_p50_ms'])} "
            f"| {f(p['ttft_p99_ms'])} | {oh} | {f(p['cpu_us_per_request'])} "
            f"| {f(p['cpu_cores'])} | {f(p['rss_mb'])} |"
        )
    direct = {(p["mode"], p["rate"]): p for p in phases if p["target"] == "direct"}
    lines += [
        "",
        "| target | mode | rate | p50 - direct ms | p99 - direct ms | TTFT p50 - direct ms |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in phases:
        d = direct.get((p["mode"], p["rate"]))
        if p["target"] == "direct" or d is None or p["p50_ms"] is None:
            continue
        ttft = (
            "-"
            if p["ttft_p50_ms"] is None or d["ttft_p50_ms"] is None
            else f"{p['ttft_p50_ms'] - d['ttft_p50_ms']:.3f}"
        )
        lines.append(
            f"| {p['target']} | {p['mode']} | {p['rate']} | {p['p50_ms'] - d['p50_ms']:.3f} "
            f"| {p['p99_ms'] - d['p99_ms']:.3f} | {ttft} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rates", default="100,500,1000,2000")
    p.add_argument("--duration-s", type=float, default=10.0)
    p.add_argument("--chunks", type=int, default=20)
    p.add_argument("--chunk-ms", type=float, default=2.0)
    p.add_argument("--soak-s", type=float, default=600.0)
    p.add_argument("--soak-rate", type=int, default=500)
    p.add_argument("--litellm-max-rate", type=int, default=2000)
    p.add_argument("--no-litellm", action="store_true")
    p.add_argument("--instant-only", action="store_true", help="only the instant-mode rates")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / ".cache" / "llm_gateway.json")
    p.add_argument("--report", type=Path, help="print the markdown tables of a saved run and exit")
    args = p.parse_args()
    if args.report:
        print(markdown(json.loads(args.report.read_text())))
        return
    result = asyncio.run(run(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(markdown(result))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
