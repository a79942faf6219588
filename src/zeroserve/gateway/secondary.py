"""A secondary gateway process: more cores for the request path.

Started by the control process (gateway/peers.py) as
``python -m zeroserve.gateway.secondary LISTEN_FD CONTROL_FD CONTROL_URL``.
It accepts connections on the same listening socket as the control process,
answers the inference routes itself (same data plane, its own channels to the
same replicas) and forwards every other request to the control process.
It never owns a replica: it follows the state the control process sends, and
reports what it holds so the autoscaler sees all the demand.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

import uvicorn

from zeroserve import logs
from zeroserve.backends import create_backend
from zeroserve.gateway.dataplane import DataPlane
from zeroserve.gateway.link import encode_line, read_first_line, read_lines
from zeroserve.gateway.mirror import Mirror
from zeroserve.gateway.monitor_peer import PeerMonitor
from zeroserve.gateway.proxy import ControlProxy
from zeroserve.llm.gateway import build_gateway
from zeroserve.metrics import Metrics
from zeroserve.outcomes import Outcomes
from zeroserve.serving.zygote import die_with_parent
from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.gateway")

STATS_INTERVAL_S = 0.1
METRICS_EVERY = 10  # stats intervals
FIRST_STATE_TIMEOUT_S = 30.0


class SecondaryGateway:
    """The ASGI app of a secondary process: its data plane, a proxy, and the link."""

    def __init__(self, settings: Settings, control: socket.socket, control_url: str) -> None:
        self.control = control
        self.metrics = Metrics()
        self.outcomes = Outcomes(shared=True)
        self.mirror = Mirror(
            self.metrics,
            self.send,
            create_backend(settings),
            settings.batch_deadline_s,
        )
        self.proxy = ControlProxy(control_url)
        self.llm = build_gateway(settings, self.metrics.registry, self.proxy)
        self.dataplane = DataPlane(self.mirror, settings, self.metrics, self.llm, self.outcomes)
        self.monitor = PeerMonitor(settings.resolved_artifact_url)
        self.dataplane.monitor = self.monitor
        self.server: uvicorn.Server | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._first_state = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        else:
            await self.dataplane(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _start(self) -> None:
        self.control.setblocking(False)
        reader, self._writer = await asyncio.open_unix_connection(sock=self.control, limit=2**26)
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen(reader)), loop.create_task(self._report())]
        self.monitor.start()
        await self.llm.service.start()
        self.send({"op": "hello", "pid": os.getpid()})
        # Serve nothing before the routes are here: a request would find no endpoint.
        await asyncio.wait_for(self._first_state.wait(), FIRST_STATE_TIMEOUT_S)
        self.send({"op": "ready"})

    async def _stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.mirror.stop()
        await self.llm.service.stop()
        await self.proxy.aclose()
        await asyncio.to_thread(self.monitor.stop)

    def send(self, message: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(encode_line(message))

    async def _listen(self, reader: asyncio.StreamReader) -> None:
        try:
            async for message in read_lines(reader):
                op = message.get("op")
                if op == "state":
                    self.mirror.apply(message)
                    self._first_state.set()
                    self.send({"op": "ack", "version": message["version"]})
                elif op == "died":
                    self.mirror.died(
                        str(message["key"]), str(message["address"]), str(message["how"])
                    )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("bad message from the control process")
        # The control process is gone (or broke the link): stop serving with it.
        if self.server is not None:
            self.server.should_exit = True

    async def _report(self) -> None:
        last: dict[str, list[float]] | None = None
        ticks = 0
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            ticks += 1
            try:
                last = self._send_report(last, ticks)
            except Exception:  # the next tick tries again; demand must keep flowing
                log.exception("reporting to the control process failed")

    def _send_report(
        self, last: dict[str, list[float]] | None, ticks: int
    ) -> dict[str, list[float]] | None:
        """Send demand (when it changed), new outcomes, and every second metrics and usage."""
        report = self.mirror.report()
        entries = self.outcomes.drain()
        if entries:
            self.send({"op": "outcomes", "entries": entries})
        monitored = self.monitor.report()
        if monitored is not None:
            self.send(monitored)
        if report != last:
            self.send({"op": "stats", "pools": report, "answered": self.dataplane.answered})
        if ticks % METRICS_EVERY == 0:
            self.send(
                {
                    "op": "metrics",
                    "samples": self.metrics.samples(),
                    "usage": self.mirror.usage.drain(),
                }
            )
        return report


def main() -> None:
    listen_fd, control_fd, control_url = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    die_with_parent()
    control = socket.socket(fileno=control_fd)
    hello = read_first_line(control)
    settings = Settings.model_validate(hello["settings"])
    logs.configure(settings.log_level, settings.log_json)
    from zeroserve.server import uvicorn_config

    app = SecondaryGateway(settings, control, control_url)
    server = uvicorn.Server(uvicorn_config(app, settings, bool(hello.get("access_log"))))
    app.server = server
    server.run(sockets=[socket.socket(fileno=listen_fd)])


if __name__ == "__main__":
    main()
