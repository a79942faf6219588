"""Connection-level limits uvicorn does not have: a header-read timeout, a header
size cap, a minimum body upload rate and a connection cap.

They live in a subclass of uvicorn's httptools protocol, because they must act
before a request reaches the ASGI app (a client that never finishes its
headers never becomes a request). Without httptools, uvicorn's h11 protocol is
used with its own incomplete-event size cap.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson

from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.gateway")
LINGER_S = 2.0


@dataclass(frozen=True)
class HttpLimits:
    header_timeout_s: float = 10.0
    max_header_bytes: int = 64 * 1024
    body_min_bytes_per_s: float = 1024.0
    body_window_s: float = 10.0
    max_connections: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            max_header_bytes=int(settings.max_header_kb * 1024),
            body_min_bytes_per_s=settings.body_min_rate_kbps * 1024,
            body_window_s=settings.body_rate_window_s,
            max_connections=settings.max_connections,
        )


def protocol_class(settings: Settings) -> Any:
    """The ``http`` argument for ``uvicorn.Config``."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # uvicorn without httptools: h11 has its own head size cap
        return "h11"

    limits = HttpLimits.from_settings(settings)

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._in_head = True
            self._head_bytes = 0
            self._head_timer: asyncio.TimerHandle | None = None
            self._body_timer: asyncio.TimerHandle | None = None
            self._body_bytes = 0
            self._body_mark = 0
            self._discarding = False
            self._body_open = False

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            if len(self.connections) > limits.max_connections:
                log.warning(
                    "connection refused: at the connection cap",
                    extra={"max_connections": limits.max_connections},
                )
                transport.abort()
                return
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel(body=True)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._discarding:
                return  # after a 431: read and drop the rest, so closing sends no reset
            super().data_received(data)
            if self._in_head and not self.transport.is_closing():
                self._head_bytes += len(data)
                if self._head_bytes > limits.max_header_bytes:
                    self._close_with(
                        431,
                        f"the request head is over {limits.max_header_bytes:,} bytes; "
                        "send fewer or smaller headers",
                        linger=True,
                    )
                elif self._head_timer is None:
                    self._arm_head_timer()  # a head split over packets: time the rest
            elif self._body_open and self._body_timer is None and limits.body_min_bytes_per_s:
                # Timers only for what did not arrive whole: a request in one packet
                # (nearly every inference call) costs no timer at all.
                self._body_bytes = self._body_mark = 0
                self._body_timer = self.loop.call_later(limits.body_window_s, self._check_body)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._head_bytes = 0

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._cancel(body=False)
            super().on_headers_complete()
            self._body_open = True  # until on_message_complete

        def on_body(self, body: bytes) -> None:
            self._body_bytes += len(body)
            super().on_body(body)

        def on_message_complete(self) -> None:
            self._body_open = False
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            super().on_message_complete()

        def _arm_head_timer(self) -> None:
            self._head_timer = self.loop.call_later(limits.header_timeout_s, self._head_late)

        def _cancel(self, body: bool) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if body and self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None

        def _head_late(self) -> None:
            self._head_timer = None
            if self.transport.is_closing() or not self._in_head:
                return
            if self._head_bytes == 0:
                self.transport.close()  # an idle connection: nothing to answer
                return
            self._close_with(
                408, f"the request headers did not arrive within {limits.header_timeout_s:g} s"
            )

        def _check_body(self) -> None:
            self._body_timer = None
            if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
                return
            received = self._body_bytes - self._body_mark
            self._body_mark = self._body_bytes
            paused = self.flow is not None and self.flow.read_paused  # the app reads slowly
            if paused or received >= limits.body_min_bytes_per_s * limits.body_window_s:
                self._body_timer = self.loop.call_later(limits.body_window_s, self._check_body)
                return
            if self.cycle.response_started:
                self.transport.close()
            else:
                self._close_with(
                    408,
                    f"the request body arrived slower than {limits.body_min_bytes_per_s:g} "
                    f"bytes/s over {limits.body_window_s:g} s",
                )

        def _close_with(self, status: int, message: str, linger: bool = False) -> None:
            reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
            body = orjson.dumps({"error": message, "code": "http_limit"})
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%s" % (status, reason, len(body), body)
            )
            self._in_head = False
            self._cancel(body=True)
            if linger and self.transport.can_write_eof():
                # The client may still be sending: drop what arrives for a moment, so the
                # close does not reset the connection before it reads this answer.
                self._discarding = True
                self.transport.write_eof()
                self.loop.call_later(LINGER_S, self.transport.close)
            else:
                self.transport.close()

    return GuardedHttpToolsProtocol
