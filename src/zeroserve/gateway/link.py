"""Messages between the control process and its secondary gateway processes.

One JSON document per line over a Unix socket pair. The control process sends
``hello`` (the settings), ``state`` (routes and live replicas, versioned) and
``died`` (how a replica died). A secondary answers ``hello`` (its pid), then
``ready`` once it has the first state and serves; it acknowledges each state
(``ack``) and sends ``stats`` (what its pools hold, for the autoscaler),
``wake`` (a cold request is waiting) and ``metrics`` (its Prometheus samples
and usage, for the meter).
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

MAX_LINE = 1 << 26


def encode_line(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


async def read_lines(reader: asyncio.StreamReader) -> AsyncIterator[dict[str, Any]]:
    while line := await reader.readline():
        message: dict[str, Any] = orjson.loads(line)
        yield message


def read_first_line(sock: socket.socket) -> dict[str, Any]:
    """Read one line without consuming what follows it (the event loop reads the rest)."""
    while True:
        peeked = sock.recv(MAX_LINE, socket.MSG_PEEK)
        if not peeked:
            raise ConnectionError("the control process closed the channel")
        end = peeked.find(b"\n")
        if end >= 0:
            message: dict[str, Any] = orjson.loads(sock.recv(end + 1))
            return message
        time.sleep(0.001)  # the rest of the line is on its way
