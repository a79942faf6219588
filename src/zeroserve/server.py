"""Run the server under uvicorn."""

from __future__ import annotations

import uvicorn

from zeroserve import logs
from zeroserve.gateway.app import create_app
from zeroserve.settings import Settings


def serve(settings: Settings, access_log: bool = False) -> None:
    logs.configure(settings.log_level, settings.log_json)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        access_log=access_log,
        log_level="warning",
        server_header=False,
        date_header=False,
        loop="auto",
        http="auto",
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run()
