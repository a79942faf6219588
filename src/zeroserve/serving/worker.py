"""The replica loop: receive batches, predict, send the outputs back.

Runs in a process forked from a zygote; the runtime is already loaded. The
replica has one *owner* channel (the socket pair from the zygote, held by the
control process) and a listening socket that the other gateway processes
connect to, so every gateway process can send it work. Batches that arrive
together on different channels are predicted as one call.

Errors from the model go back as frames (type and message only, never a
traceback). The replica stops accepting new channels when its owner closes
the owner channel, and exits once every channel is closed (or after a grace
period, so a stuck peer cannot keep it alive).
"""

from __future__ import annotations

import os
import secrets
import selectors
import socket
import struct
import time
from typing import Any

import numpy as np

from zeroserve.runtimes.base import Runtime
from zeroserve.serving.messages import FrameError, FrameParser, send_frame
from zeroserve.types import Arrays

MAX_ERROR_CHARS = 2000
OOM_EXIT_CODE = 137
RECV_BYTES = 1 << 20
DRAIN_AFTER_OWNER_S = 30.0
_PEERCRED = struct.Struct("3i")

Work = tuple[socket.socket, dict[str, Any], Arrays]


def replica_address() -> str:
    """An abstract-namespace socket name: nothing on disk to clean up or to collide with."""
    return f"\0zeroserve-replica-{os.getpid()}-{secrets.token_hex(8)}"


def serve_replica(owner: socket.socket, runtime: Runtime) -> None:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    address = replica_address()
    listener.bind(address)
    listener.listen(64)
    ready = {"op": "ready", "pid": os.getpid(), "address": address}
    send_frame(owner, ready)
    ReplicaLoop(owner, listener, ready, runtime).run()


class ReplicaLoop:
    """The worker side of a replica: read batches from every channel, predict, reply."""

    def __init__(
        self,
        owner: socket.socket,
        listener: socket.socket,
        ready: dict[str, Any],
        runtime: Runtime,
    ) -> None:
        self.owner = owner
        self.listener: socket.socket | None = listener
        self.ready = ready
        self.runtime = runtime
        self.uid = os.getuid()
        self.channels: dict[socket.socket, FrameParser] = {owner: FrameParser()}
        self.selector = selectors.DefaultSelector()
        self.selector.register(owner, selectors.EVENT_READ)
        self.selector.register(listener, selectors.EVENT_READ)
        self.owner_gone_at: float | None = None

    def run(self) -> None:
        while self.channels:
            timeout = None
            if self.owner_gone_at is not None:
                timeout = self.owner_gone_at + DRAIN_AFTER_OWNER_S - time.monotonic()
                if timeout <= 0:
                    return
            work: list[Work] = []
            for key, _ in self.selector.select(timeout):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    self._accept()
                else:
                    self._read(sock, work)
            if work:
                self._handle(work)

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        # Only processes of our own user may send work (they could ptrace us anyway).
        _pid, uid, _gid = _PEERCRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        )
        if uid != self.uid:
            conn.close()
            return
        conn.setblocking(True)
        try:
            send_frame(conn, self.ready)
        except OSError:
            conn.close()
            return
        self.channels[conn] = FrameParser()
        self.selector.register(conn, selectors.EVENT_READ)

    def _read(self, sock: socket.socket, work: list[Work]) -> None:
        try:
            data = sock.recv(RECV_BYTES)
            frames = self.channels[sock].feed(data) if data else None
        except (OSError, FrameError):
            frames = None
        if frames is None:
            self._close(sock)
            return
        for meta, arrays in frames:
            if meta.get("op") == "predict":
                work.append((sock, meta, arrays))

    def _close(self, sock: socket.socket) -> None:
        if self.channels.pop(sock, None) is None:
            return
        self.selector.unregister(sock)
        sock.close()
        if sock is self.owner and self.listener is not None:
            self.owner_gone_at = time.monotonic()
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None

    def _send(self, sock: socket.socket, meta: dict[str, Any], arrays: Arrays | None) -> None:
        if sock not in self.channels:
            return
        try:
            send_frame(sock, meta, arrays)
        except OSError:
            self._close(sock)
        except Exception as exc:
            message = f"the model returned outputs that cannot be sent back: {exc}"
            self._send(sock, {"op": "error", "id": meta.get("id"), "message": message}, None)

    def _handle(self, work: list[Work]) -> None:
        if len(work) > 1 and _mergeable(work):
            rows = [len(next(iter(a.values()))) for _, _, a in work]
            merged = {k: np.concatenate([a[k] for _, _, a in work]) for k in work[0][2]}
            started = time.perf_counter()
            try:
                outputs = self.runtime.predict(merged)
            except Exception:
                outputs = None  # one bad batch must not fail the others: predict them alone
            elapsed = time.perf_counter() - started
            total = sum(rows)
            if outputs is not None and _rows_are(outputs, total):
                offset = 0
                for (sock, meta, _), n in zip(work, rows, strict=True):
                    sliced = {k: v[offset : offset + n] for k, v in outputs.items()}
                    share = elapsed * n / total
                    self._send(sock, {"op": "result", "id": meta["id"], "compute_s": share}, sliced)
                    offset += n
                return
        for sock, meta, arrays in work:
            self._predict_one(sock, meta, arrays)

    def _predict_one(self, sock: socket.socket, meta: dict[str, Any], arrays: Arrays) -> None:
        started = time.perf_counter()
        try:
            outputs = self.runtime.predict(arrays)
        except MemoryError:
            # Over the kernel's limit (RLIMIT_AS): this process cannot be trusted to go on.
            # No error frame: the exit code tells the gateway, which says so to the client.
            os._exit(OOM_EXIT_CODE)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            self._send(sock, {"op": "error", "id": meta["id"], "message": message}, None)
            return
        elapsed = time.perf_counter() - started
        self._send(sock, {"op": "result", "id": meta["id"], "compute_s": elapsed}, outputs)


def _rows_are(outputs: Any, rows: int) -> bool:
    """Whether every output is an array with one row per input row (so it can be split)."""
    return isinstance(outputs, dict) and all(
        isinstance(v, np.ndarray) and v.ndim > 0 and len(v) == rows for v in outputs.values()
    )


def _mergeable(work: list[Work]) -> bool:
    """Batches can be concatenated when their inputs agree in names, dtypes and row shapes."""
    first = work[0][2]
    if not first or any(a.ndim == 0 for a in first.values()):
        return False
    for _, _, arrays in work[1:]:
        if arrays.keys() != first.keys():
            return False
        for name, arr in arrays.items():
            ref = first[name]
            if arr.ndim == 0 or arr.dtype != ref.dtype or arr.shape[1:] != ref.shape[1:]:
                return False
    rows = {len(a) for a in first.values()}
    return len(rows) == 1
