"""The gateway's handles on a zygote and on the replicas it forks."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from zeroserve.errors import NoReplicaAvailable, ReplicaCrashed
from zeroserve.serving.messages import HEAD, decode, encode
from zeroserve.serving.zygote import CONTROL_MAX, SINGLE_THREAD_ENV
from zeroserve.types import Arrays

_ids = itertools.count(1)
SMALL_FRAME = 256 * 1024


def describe_exit(status: dict[str, Any] | None) -> str:
    if not status or not status.get("known"):
        return "exited"
    if status.get("signal"):
        try:
            name = signal.Signals(status["signal"]).name
        except ValueError:
            name = f"signal {status['signal']}"
        return f"was killed by {name}"
    return f"exited with code {status.get('code')}"


class ZygoteHandle:
    """A running zygote process and its control channel (request/reply)."""

    def __init__(self, artifact_dir: Path, name: str) -> None:
        self.artifact_dir = artifact_dir
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.ctrl: socket.socket | None = None
        self.load_s = 0.0
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawn the zygote; call from the event loop thread (see PR_SET_PDEATHSIG)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, **SINGLE_THREAD_ENV}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeroserve.serving.zygote",
                str(self.artifact_dir),
                str(theirs.fileno()),
            ],
            pass_fds=[theirs.fileno()],
            env=env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.ctrl = ours

    async def wait_ready(self, timeout_s: float) -> None:
        reply = await asyncio.to_thread(self._recv, timeout_s)
        if reply.get("op") != "ready":
            self.stop()
            raise NoReplicaAvailable(
                f"model {self.name} failed to load in its zygote: {reply.get('error', reply)}"
            )
        self.load_s = float(reply.get("load_s", 0.0))

    def _recv(self, timeout_s: float) -> dict[str, Any]:
        assert self.ctrl is not None
        self.ctrl.settimeout(timeout_s)
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctrl, CONTROL_MAX, 1)
        except (TimeoutError, OSError) as exc:
            return {"op": "failed", "error": f"zygote did not answer ({exc})"}
        if not data:
            return {"op": "failed", "error": "zygote exited"}
        message: dict[str, Any] = orjson.loads(data)
        if fds:
            message["fd"] = fds[0]
        return message

    def _call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            if self.ctrl is None or not self.alive:
                return {"op": "failed", "error": "zygote is not running"}
            try:
                self.ctrl.send(orjson.dumps(message))
            except OSError as exc:
                return {"op": "failed", "error": f"zygote channel broken ({exc})"}
            return self._recv(timeout_s)

    async def fork(self, timeout_s: float = 10.0) -> tuple[int, int]:
        """Fork a replica; returns (pid, fd of the gateway's end of its socket)."""
        reply = await asyncio.to_thread(self._call, {"op": "fork"}, timeout_s)
        if reply.get("op") != "forked" or "fd" not in reply:
            raise NoReplicaAvailable(
                f"could not fork a replica of {self.name}: {reply.get('error')}"
            )
        return int(reply["pid"]), int(reply["fd"])

    async def exit_status(self, pid: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
        reply = await asyncio.to_thread(
            self._call, {"op": "wait", "pid": pid, "timeout_s": timeout_s}, timeout_s + 1
        )
        return reply if reply.get("op") == "status" else None

    def stop(self) -> None:
        if self.ctrl is not None:
            with contextlib.suppress(OSError):
                self.ctrl.send(orjson.dumps({"op": "stop"}))
            self.ctrl.close()
            self.ctrl = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=2)


class Replica:
    """One worker process: send a batch, await its outputs."""

    def __init__(
        self,
        pid: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_exit: Callable[[Replica], None],
    ) -> None:
        self.id = next(_ids)
        self.pid = pid
        self.reader = reader
        self.writer = writer
        self.started_at = time.monotonic()
        self.last_used = self.started_at
        self.busy = False
        self.closing = False
        self.retired = False
        self.kill_reason: str | None = None
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], Arrays]]] = {}
        self._seq = itertools.count(1)
        self._on_exit = on_exit
        self._reader_task: asyncio.Task[None] | None = None
        self.address = ""
        """Where other gateway processes connect to this replica (abstract Unix socket)."""

    @classmethod
    async def connect(
        cls, pid: int, fd: int, on_exit: Callable[[Replica], None], timeout_s: float
    ) -> Replica:
        """Take over the owner channel of a replica just forked by the zygote."""
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**24)
        return await cls(pid, reader, writer, on_exit)._handshake(timeout_s)

    @classmethod
    async def dial(
        cls, pid: int, address: str, on_exit: Callable[[Replica], None], timeout_s: float
    ) -> Replica:
        """Open a channel of our own to a running replica (from a secondary gateway process)."""
        # Connected here, not by the event loop: uvloop cannot name an abstract socket,
        # and a Unix connect to a listening socket does not wait.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(timeout_s, 1.0))  # blocks only if its backlog is full
            sock.connect(address)
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=2**24)
        except OSError as exc:
            sock.close()
            raise NoReplicaAvailable(f"cannot reach replica {pid}: {exc}") from exc
        return await cls(pid, reader, writer, on_exit)._handshake(timeout_s)

    async def _handshake(self, timeout_s: float) -> Replica:
        try:
            meta, _ = await asyncio.wait_for(self._read_frame(), timeout_s)
        except (asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
            self.writer.close()
            raise NoReplicaAvailable(f"replica {self.pid} did not start: {exc!r}") from exc
        if meta.get("op") != "ready":
            self.writer.close()
            raise NoReplicaAvailable(f"replica {self.pid} did not start: {meta}")
        self.address = str(meta.get("address", ""))
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())
        return self

    async def _read_frame(self) -> tuple[dict[str, Any], Arrays]:
        head = await self.reader.readexactly(HEAD.size)
        meta_len, nbuf = HEAD.unpack(head)
        lengths = (
            struct.unpack(f"<{nbuf}Q", await self.reader.readexactly(8 * nbuf)) if nbuf else ()
        )
        payload = await self.reader.readexactly(meta_len)
        buffers = [bytearray(await self.reader.readexactly(n)) for n in lengths]
        return decode(payload, buffers)

    async def _read_loop(self) -> None:
        try:
            while True:
                meta, arrays = await self._read_frame()
                fut = self._pending.pop(meta.get("id", -1), None)
                if fut is not None and not fut.done():
                    fut.set_result((meta, arrays))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self.closing = True
            self._on_exit(self)

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def fail_pending(self, exc: Exception) -> None:
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(exc)
        self._pending.clear()

    async def predict(self, arrays: Arrays) -> tuple[dict[str, Any], Arrays]:
        if self.closing:
            raise ReplicaCrashed(f"replica {self.pid} is shutting down")
        request_id = next(self._seq)
        fut: asyncio.Future[tuple[dict[str, Any], Arrays]] = (
            asyncio.get_running_loop().create_future()
        )
        self._pending[request_id] = fut
        parts = encode({"op": "predict", "id": request_id}, arrays)
        if len(parts) > 1 and sum(memoryview(p).nbytes for p in parts) <= SMALL_FRAME:
            self.writer.write(b"".join(parts))  # one syscall for the common small batch
        else:
            self.writer.writelines(parts)
        return await fut

    def retire(self) -> None:
        """Take no more work; the pool's loop closes the channel after the current batch."""
        self.retired = True
        self.closing = True

    def close(self) -> None:
        """Ask the replica to exit: it leaves its loop when the channel closes."""
        self.closing = True
        with contextlib.suppress(Exception):
            self.writer.close()

    def kill(self, reason: str) -> None:
        self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
