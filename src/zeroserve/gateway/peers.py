"""The control process's side of its secondary gateway processes.

It starts them on the shared listening socket, sends each the settings and
then the routing state whenever routes or live replicas change, adds what
they report (pool demand, metrics, usage) to its own view, and restarts one
that dies. A secondary's crash costs only the requests on its connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zeroserve.control.controller import Controller, PoolKey, pool_key_text
from zeroserve.control.routes import VariantRoute
from zeroserve.gateway.link import encode_line, read_lines
from zeroserve.gateway.mirror import usage_records
from zeroserve.metrics import Metrics, SampleRow
from zeroserve.outcomes import Outcomes
from zeroserve.serving.pool import UsageSink
from zeroserve.serving.scaling_pool import PeerPoolStats, ScalingPool
from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.gateway")

RESTART_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 30.0
STOP_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 30.0
SYNC_TIMEOUT_S = 5.0


@dataclass
class Peer:
    id: int
    slot: int
    process: subprocess.Popen[bytes]
    writer: asyncio.StreamWriter
    started_at: float = field(default_factory=time.monotonic)
    pid: int = 0
    ready: bool = False
    answered: int = 0
    applied: int = 0
    """The newest state version this secondary has applied."""

    def send(self, line: bytes) -> None:
        if self.ready and not self.writer.is_closing():
            self.writer.write(line)


class GatewayPeers:
    def __init__(
        self,
        controller: Controller,
        metrics: Metrics,
        outcomes: Outcomes,
        meter: UsageSink,
        settings: Settings,
        listen: socket.socket,
        control_url: str,
        access_log: bool = False,
    ) -> None:
        self.controller = controller
        self.metrics = metrics
        self.outcomes = outcomes
        self.meter = meter
        self.settings = settings
        self.listen = listen
        self.control_url = control_url
        self.access_log = access_log
        self.peers: dict[int, Peer] = {}
        self.restarts: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self._acked = asyncio.Event()
        self.version = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False

    # lifecycle
    async def start(self) -> None:
        self.controller.listeners.append(self._changed.set)
        self.controller.death_listeners.append(self._died)
        self.controller.after_change.append(self.wait_synced)
        for slot in range(self.settings.gateway_processes - 1):
            await self._launch(slot)
        self._spawn(self._broadcast())
        await self._wait(lambda: all(p.ready for p in self.peers.values()), READY_TIMEOUT_S)

    async def stop(self) -> None:
        self._stopping = True
        for peer in list(self.peers.values()):
            with contextlib.suppress(ProcessLookupError):
                peer.process.terminate()
        for peer in list(self.peers.values()):
            try:
                await asyncio.to_thread(peer.process.wait, STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                peer.process.kill()
        for task in list(self._tasks):
            task.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _launch(self, slot: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeroserve.gateway.secondary",
                str(self.listen.fileno()),
                str(theirs.fileno()),
                self.control_url,
            ],
            pass_fds=(self.listen.fileno(), theirs.fileno()),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        hello = {
            "op": "hello",
            "settings": self.settings.model_dump(mode="json"),
            "access_log": self.access_log,
        }
        ours.sendall(encode_line(hello))
        ours.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**26)
        peer = Peer(next(self._ids), slot, process, writer)
        self.peers[peer.id] = peer
        self._spawn(self._listen(peer, reader))

    # messages from a secondary
    async def _listen(self, peer: Peer, reader: asyncio.StreamReader) -> None:
        try:
            async for message in read_lines(reader):
                self._handle(peer, message)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bad message from a secondary gateway", extra={"pid": peer.pid})
        finally:
            self._forget(peer)
        if not self._stopping:
            await self._restart(peer)

    def _handle(self, peer: Peer, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "stats":
            pools = self._pools_by_key()
            for key, values in message["pools"].items():
                pool = pools.get(key)
                if pool is not None:
                    in_flight, queued, last_at, busy_s, peak, cold = values
                    pool.report_peer(
                        peer.id,
                        PeerPoolStats(
                            int(in_flight), int(queued), last_at, busy_s, int(peak), int(cold)
                        ),
                    )
            peer.answered = int(message.get("answered", 0))
        elif op == "outcomes":
            self.outcomes.merge(message["entries"])
        elif op == "wake":
            pool = self._pools_by_key().get(str(message["key"]))
            if pool is not None:
                pool.wake()
        elif op == "hung":
            pool = self._pools_by_key().get(str(message["key"]))
            if pool is not None:
                pool.kill_replica(str(message["address"]), str(message["how"]))
        elif op == "metrics":
            rows: list[SampleRow] = [tuple(row) for row in message["samples"]]
            self.metrics.peer_samples[peer.id] = rows
            for rec in usage_records(message["usage"]):
                self.meter.record(rec)
        elif op == "ack":
            peer.applied = int(message["version"])
            self._acked.set()
        elif op == "hello":
            peer.pid = int(message["pid"])
            peer.ready = True
            peer.send(encode_line(self.state()))
        elif op == "ready":
            log.info("secondary gateway ready", extra={"pid": peer.pid, "slot": peer.slot})

    def _forget(self, peer: Peer) -> None:
        self.peers.pop(peer.id, None)
        peer.ready = False
        peer.writer.close()
        for pool in self.controller.pools().values():
            pool.peers.pop(peer.id, None)
        # Its counters stay in peer_samples: they are final, and counters must not go down.

    async def _restart(self, peer: Peer) -> None:
        code = await asyncio.to_thread(_wait_or_kill, peer.process)
        runs = self.restarts.get(peer.slot, 0)
        if time.monotonic() - peer.started_at > STABLE_AFTER_S:
            runs = 0
        delay = RESTART_BACKOFF_S[min(runs, len(RESTART_BACKOFF_S) - 1)]
        log.warning(
            "secondary gateway exited; restarting it",
            extra={"pid": peer.pid, "code": code, "restart_in_s": delay},
        )
        self.restarts[peer.slot] = runs + 1
        await asyncio.sleep(delay)
        if not self._stopping:
            await self._launch(peer.slot)

    def _pools_by_key(self) -> dict[str, ScalingPool]:
        return {pool_key_text(k): p for k, p in self.controller.pools().items()}

    # messages to the secondaries
    async def _broadcast(self) -> None:
        while True:
            await self._changed.wait()
            self._send_state()

    def _send_state(self) -> None:
        self._changed.clear()
        line = encode_line(self.state())
        for peer in list(self.peers.values()):
            peer.send(line)

    async def wait_synced(self) -> None:
        """Send the newest state now and wait until every secondary has applied it.

        The control API calls this after a deploy or a delete, so a client that
        deploys and then invokes on another connection finds the endpoint there.
        """
        self._send_state()
        version = self.version
        await self._wait(
            lambda: all(p.applied >= version for p in self.peers.values() if p.ready),
            SYNC_TIMEOUT_S,
        )

    async def _wait(self, done: Callable[[], bool], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self._acked.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._acked.wait(), deadline - time.monotonic())

    def _died(self, key: PoolKey, address: str, how: str) -> None:
        line = encode_line(
            {"op": "died", "key": pool_key_text(key), "address": address, "how": how}
        )
        for peer in list(self.peers.values()):
            peer.send(line)

    def state(self) -> dict[str, Any]:
        """Everything a secondary needs to route: endpoints, variants, live replicas."""
        pools = self.controller.pools()

        def variant(endpoint: str, route: VariantRoute) -> dict[str, Any]:
            key: PoolKey = (endpoint, route.spec.name, route.spec.model, route.spec.version)
            pool = pools.get(key)
            replicas = pool.live_replicas() if pool is not None else []
            return {
                "key": pool_key_text(key),
                "spec": route.spec.model_dump(mode="json"),
                "version": route.version.model_dump(mode="json"),
                "last_error": pool.last_error if pool is not None else None,
                "replicas": [r.address for r in replicas],
            }

        self.version += 1
        return {
            "op": "state",
            "version": self.version,
            "routes": [
                {
                    "spec": route.spec.model_dump(mode="json"),
                    "variants": [variant(name, v) for v in route.variants],
                    "shadow": variant(name, route.shadow) if route.shadow else None,
                }
                for name, route in self.controller.routes.items()
            ],
        }

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "pid": peer.pid,
                "slot": peer.slot,
                "ready": peer.ready,
                "answered": peer.answered,
                "uptime_s": round(time.monotonic() - peer.started_at, 1),
                "restarts": self.restarts.get(peer.slot, 0),
            }
            for peer in sorted(self.peers.values(), key=lambda p: p.slot)
        ]


def _wait_or_kill(process: subprocess.Popen[bytes]) -> int | None:
    try:
        return process.wait(timeout=2.0)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout=2.0)
