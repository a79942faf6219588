"""Run the server under uvicorn: the control process and, when asked, secondary gateways."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn

from zeroserve import logs
from zeroserve.settings import Settings

BACKLOG = 2048


def uvicorn_config(app: Any, settings: Settings, access_log: bool) -> uvicorn.Config:
    from zeroserve.gateway.access import AccessGuard
    from zeroserve.gateway.httplimits import protocol_class

    return uvicorn.Config(
        AccessGuard(app, settings),
        lifespan="on",
        access_log=access_log,
        log_level="warning",
        server_header=False,
        date_header=False,
        loop="auto",
        http=protocol_class(settings),
        h11_max_incomplete_event_size=int(settings.max_header_kb * 1024),
        timeout_keep_alive=30,
        backlog=BACKLOG,
    )


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def serve(settings: Settings, access_log: bool = False) -> None:
    """Bind the port, then serve on it from ``settings.gateway_processes`` processes.

    The control process binds, so secondaries inherit the same listening socket
    and the kernel spreads connections over every process waiting on it.
    Requests that only the control process can answer reach it from the
    secondaries on a private loopback port.
    """
    from zeroserve.gateway.app import create_app  # here: secondaries import this module too

    logs.configure(settings.log_level, settings.log_json)
    try:
        public = bind(settings.host, settings.port)
    except OSError as exc:
        where = f"{settings.host}:{settings.port}"
        raise SystemExit(f"error: cannot listen on {where}: {exc}") from None
    sockets = [public]
    peers = None
    if settings.gateway_processes > 1:
        private = bind("127.0.0.1", 0)
        sockets.append(private)
        peers = (public, f"http://127.0.0.1:{private.getsockname()[1]}", access_log)
    app = create_app(settings, peers=peers)
    uvicorn.Server(uvicorn_config(app, settings, access_log)).run(sockets=sockets)
