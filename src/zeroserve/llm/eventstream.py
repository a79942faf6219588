"""The AWS event-stream binary framing (Bedrock ConverseStream), both ways.

A message: total length, headers length, prelude CRC32, headers, payload, message CRC32,
all big-endian. Header values here are strings (type 7), which is all Bedrock sends.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

PRELUDE = struct.Struct(">II")
MAX_MESSAGE = 24 * 1024 * 1024 + 128 * 1024 + 16


class EventStreamError(ValueError):
    pass


def encode_message(headers: dict[str, str], payload: bytes) -> bytes:
    head = b"".join(
        bytes([len(k.encode())])
        + k.encode()
        + b"\x07"
        + struct.pack(">H", len(v.encode()))
        + v.encode()
        for k, v in headers.items()
    )
    total = 16 + len(head) + len(payload)
    prelude = PRELUDE.pack(total, len(head))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    body = prelude + head + payload
    return body + struct.pack(">I", zlib.crc32(body))


def event(event_type: str, payload: bytes) -> bytes:
    return encode_message(
        {
            ":message-type": "event",
            ":event-type": event_type,
            ":content-type": "application/json",
        },
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    return encode_message(
        {
            ":message-type": "exception",
            ":exception-type": exception_type,
            ":content-type": "application/json",
        },
        payload,
    )


class EventStreamDecoder:
    """Feed bytes in, get (headers, payload) messages out; CRCs are checked."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[dict[str, str], bytes]]:
        self.buffer += data
        while len(self.buffer) >= 12:
            total, head_len = PRELUDE.unpack_from(self.buffer)
            (prelude_crc,) = struct.unpack_from(">I", self.buffer, 8)
            if zlib.crc32(bytes(self.buffer[:8])) != prelude_crc:
                raise EventStreamError("event-stream prelude CRC mismatch")
            if total > MAX_MESSAGE or total < 16 + head_len:
                raise EventStreamError(f"event-stream message of {total} bytes is malformed")
            if len(self.buffer) < total:
                return
            message = bytes(self.buffer[:total])
            del self.buffer[:total]
            (crc,) = struct.unpack_from(">I", message, total - 4)
            if zlib.crc32(message[:-4]) != crc:
                raise EventStreamError("event-stream message CRC mismatch")
            yield _headers(message[12 : 12 + head_len]), message[12 + head_len : total - 4]

    @property
    def pending(self) -> int:
        return len(self.buffer)


def _headers(raw: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    i = 0
    while i < len(raw):
        n = raw[i]
        name = raw[i + 1 : i + 1 + n].decode()
        i += 1 + n
        kind = raw[i]
        i += 1
        if kind in {7, 6}:  # string or bytes
            (length,) = struct.unpack_from(">H", raw, i)
            value = raw[i + 2 : i + 2 + length]
            headers[name] = value.decode("utf-8", "replace")
            i += 2 + length
        elif kind in (0, 1):  # bool true / false
            headers[name] = "true" if kind == 0 else "false"
        else:
            size = {2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}.get(kind)
            if size is None:
                raise EventStreamError(f"event-stream header type {kind} is unknown")
            headers[name] = raw[i : i + size].hex()
            i += size
    return headers
