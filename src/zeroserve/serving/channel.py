"""A framed request/reply channel from a gateway process to one replica.

Frames are ``serving/messages.py``'s: a fixed header, a small JSON document
and raw array buffers, never pickle. A channel works over any stream socket;
backends add how the replica was started and how it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import time
from typing import Any

from zeroserve.errors import NoReplicaAvailable
from zeroserve.serving.handle import NotSent, OnExit, ReplyMeta
from zeroserve.serving.messages import HEAD, decode, encode
from zeroserve.types import Arrays

SMALL_FRAME = 256 * 1024
STREAM_LIMIT = 2**24


class ReplicaChannel:
    """Send a batch to a replica, await its outputs (a ``ReplicaHandle`` without a process)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_exit: OnExit,
        label: str,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.label = label
        """Names the replica in messages ("replica 4242")."""
        self.started_at = time.monotonic()
        self.last_used = self.started_at
        self.busy = False
        self.closing = False
        self.retired = False
        self.kill_reason: str | None = None
        self.address = ""
        self._pending: dict[int, asyncio.Future[tuple[ReplyMeta, Arrays]]] = {}
        self._seq = itertools.count(1)
        self._on_exit = on_exit
        self._reader_task: asyncio.Task[None] | None = None

    async def handshake(self, timeout_s: float) -> None:
        """Wait for the replica's ``ready`` frame, then start reading replies."""
        try:
            meta, _ = await asyncio.wait_for(self._read_frame(), timeout_s)
        except (asyncio.IncompleteReadError, OSError, TimeoutError) as exc:
            self.writer.close()
            raise NoReplicaAvailable(f"{self.label} did not start: {exc!r}") from exc
        if meta.get("op") != "ready":
            self.writer.close()
            raise NoReplicaAvailable(f"{self.label} did not start: {meta}")
        self.address = str(meta.get("address", ""))
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

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
        except asyncio.CancelledError:
            raise
        except Exception:
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

    async def predict(self, arrays: Arrays) -> tuple[ReplyMeta, Arrays]:
        if self.closing:
            raise NotSent(f"{self.label} is shutting down")
        request_id = next(self._seq)
        fut: asyncio.Future[tuple[ReplyMeta, Arrays]] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = fut
        parts = encode({"op": "predict", "id": request_id}, arrays)
        if len(parts) > 1 and sum(memoryview(p).nbytes for p in parts) <= SMALL_FRAME:
            self.writer.write(b"".join(parts))  # one syscall for the common small batch
        else:
            self.writer.writelines(parts)
        return await fut

    def retire(self) -> None:
        self.retired = True
        self.closing = True

    def close(self) -> None:
        """Close the channel; a replica leaves its loop when its channels close."""
        self.closing = True
        with contextlib.suppress(Exception):
            self.writer.close()

    def kill(self, reason: str) -> None:
        """A channel cannot kill a process it does not own: it closes and keeps the reason."""
        self.kill_reason = reason
        self.close()

    async def exit_reason(self) -> str:
        return self.kill_reason or "stopped"

    def memory_mb(self) -> float:
        return 0.0

    def info(self) -> dict[str, Any]:
        return {}
