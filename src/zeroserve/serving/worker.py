"""The replica loop: receive a batch, predict, send the outputs back.

Runs in a process forked from a zygote; the runtime is already loaded.
Errors from the model go back as frames (type and message only, never a
traceback); the process exits when the gateway closes the channel.
"""

from __future__ import annotations

import os
import socket
import time

from zeroserve.runtimes.base import Runtime
from zeroserve.serving.messages import FrameError, reader, recv_frame, send_frame

MAX_ERROR_CHARS = 2000


def serve_replica(sock: socket.socket, runtime: Runtime) -> None:
    send_frame(sock, {"op": "ready", "pid": os.getpid()})
    stream = reader(sock)
    while True:
        try:
            meta, arrays = recv_frame(stream)
        except (FrameError, OSError):
            return
        op = meta.get("op")
        if op == "predict":
            started = time.perf_counter()
            try:
                outputs = runtime.predict(arrays)
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
                send_frame(sock, {"op": "error", "id": meta["id"], "message": message})
                continue
            elapsed = time.perf_counter() - started
            send_frame(sock, {"op": "result", "id": meta["id"], "compute_s": elapsed}, outputs)
        elif op == "stop":
            return
