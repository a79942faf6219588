"""Frames between the gateway and its replicas over a Unix socket.

A frame is a fixed header, a small JSON document (the metadata) and the raw
bytes of each numeric array, in order:

    <u32 meta length> <u32 buffer count> <u64 length of each buffer...>
    <meta: orjson>    <buffer 0> <buffer 1> ...

Arrays travel as their own memory, with dtype and shape in the metadata; no
pickle crosses the channel, so a compromised replica cannot run code in the
gateway. Arrays of strings or objects (rare: string class labels) travel as
JSON lists.
"""

from __future__ import annotations

import io
import socket
import struct
from typing import Any

import numpy as np
import orjson

from zeroserve.types import Arrays

HEAD = struct.Struct("<II")
MAX_META = 64 * 1024 * 1024

Frame = tuple[dict[str, Any], Arrays]


def encode(meta: dict[str, Any], arrays: Arrays | None = None) -> list[bytes | memoryview]:
    """The frame's parts, ready for ``sendmsg``/``writelines`` without joining."""
    specs: list[dict[str, Any]] = []
    buffers: list[memoryview] = []
    for name, arr in (arrays or {}).items():
        if arr.dtype.kind in "OUSV":
            specs.append({"name": name, "json": arr.tolist()})
            continue
        flat = np.ascontiguousarray(arr)
        specs.append({"name": name, "dtype": flat.dtype.str, "shape": flat.shape})
        buffers.append(flat.data.cast("B") if flat.nbytes else memoryview(b""))
    if specs:
        meta = {**meta, "arrays": specs}
    payload = orjson.dumps(meta)
    lengths = struct.pack(f"<{len(buffers)}Q", *(b.nbytes for b in buffers))
    return [HEAD.pack(len(payload), len(buffers)) + lengths + payload, *buffers]


def decode(payload: bytes, buffers: list[bytearray]) -> Frame:
    meta: dict[str, Any] = orjson.loads(payload)
    arrays: Arrays = {}
    it = iter(buffers)
    for spec in meta.pop("arrays", ()):
        if "json" in spec:
            arrays[spec["name"]] = np.asarray(spec["json"])
        else:
            data = next(it)
            arrays[spec["name"]] = np.frombuffer(data, dtype=np.dtype(spec["dtype"])).reshape(
                spec["shape"]
            )
    return meta, arrays


class FrameError(Exception):
    """The peer closed the channel or sent a malformed frame."""


class FrameParser:
    """Cuts frames out of bytes as they arrive (for a replica serving several channels)."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames = []
        while (frame := self._next()) is not None:
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self._buf
        if len(buf) < HEAD.size:
            return None
        meta_len, nbuf = HEAD.unpack_from(buf)
        if meta_len > MAX_META:
            raise FrameError(f"frame metadata of {meta_len} bytes is too large")
        start = HEAD.size + 8 * nbuf
        if len(buf) < start:
            return None
        lengths = struct.unpack_from(f"<{nbuf}Q", buf, HEAD.size) if nbuf else ()
        end = start + meta_len + sum(lengths)
        if len(buf) < end:
            return None
        payload = bytes(buf[start : start + meta_len])
        pos = start + meta_len
        buffers = []
        for n in lengths:
            buffers.append(buf[pos : pos + n])
            pos += n
        del buf[:end]
        return decode(payload, buffers)


# Blocking side (replicas and the zygote).


def _recv_exact(stream: io.BufferedReader, size: int) -> bytearray:
    buf = bytearray(size)
    view = memoryview(buf)
    got = 0
    while got < size:
        n = stream.readinto(view[got:])
        if not n:
            raise FrameError("channel closed")
        got += n
    return buf


def reader(sock: socket.socket) -> io.BufferedReader:
    """A buffered reader: a small frame arrives in one recv instead of four."""
    return io.BufferedReader(socket.SocketIO(sock, "rb"), buffer_size=256 * 1024)


def recv_frame(stream: io.BufferedReader) -> Frame:
    meta_len, nbuf = HEAD.unpack(_recv_exact(stream, HEAD.size))
    if meta_len > MAX_META:
        raise FrameError(f"frame metadata of {meta_len} bytes is too large")
    lengths = struct.unpack(f"<{nbuf}Q", _recv_exact(stream, 8 * nbuf)) if nbuf else ()
    payload = _recv_exact(stream, meta_len)
    return decode(bytes(payload), [_recv_exact(stream, n) for n in lengths])


def send_frame(sock: socket.socket, meta: dict[str, Any], arrays: Arrays | None = None) -> None:
    parts = encode(meta, arrays)
    total = sum(memoryview(p).nbytes for p in parts)
    sent = sock.sendmsg(parts)
    if sent < total:  # a short write: send the rest in order
        flat = b"".join(parts)
        sock.sendall(memoryview(flat)[sent:])
