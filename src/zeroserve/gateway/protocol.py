"""The data plane's protocol table: what a protocol is, and what it answers.

A protocol matches a path and answers the request. Inference protocols (the
JSON route, Open Inference Protocol v2) only translate: ``decode`` turns a
body into arrays for the chosen variant and ``encode`` turns outputs into a
body; the data plane does the rest (auth, limits, routing, the pool,
outcomes, shadow copies). Other protocols (async submission, an LLM gateway)
``serve`` the whole call themselves. Every answer is an ``Answer``, whose body
is bytes or an async iterator of chunks (streamed with ASGI ``more_body``;
``sse`` formats server-sent events).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from zeroserve.control.routes import Route, VariantRoute
    from zeroserve.serving.pool import Result
    from zeroserve.types import Arrays, Signature

Headers = list[tuple[bytes, bytes]]
Params = dict[str, Any]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
JSON_HEADERS: Headers = [(b"content-type", b"application/json")]


@dataclass(slots=True)
class Answer:
    """A response: status, body (bytes, or chunks to stream), headers, who answered."""

    status: int
    body: bytes | AsyncIterator[bytes]
    headers: Headers = field(default_factory=list)
    variant: VariantRoute | None = None
    cause: str | None = None
    """For an error: its code (``model_error``, ``replica_crashed``), counted per variant."""


@dataclass(slots=True)
class Call:
    """One request as a protocol sees it."""

    scope: dict[str, Any]
    receive: Any
    headers: dict[bytes, bytes]
    """Lower-case names; only the ones some protocol declared in ``wanted_headers``."""
    params: Params
    read_body: Callable[[], Awaitable[bytes]]
    """The whole body, within the server's size limit (a 413 otherwise)."""


class Protocol:
    """An entry in the table. Subclasses set ``method`` and implement ``match``."""

    name = "protocol"
    method = "POST"
    wanted_headers: tuple[bytes, ...] = ()
    """Request headers this protocol reads (the data plane keeps only declared ones)."""

    def match(self, path: str) -> Params | None:
        raise NotImplementedError

    async def serve(self, call: Call) -> Answer:
        raise NotImplementedError


class InferenceProtocol(Protocol):
    """A protocol that only translates: the data plane predicts between decode and encode."""

    def endpoint(self, params: Params) -> str:
        return str(params["name"])

    def select(self, route: Route, params: Params, headers: dict[bytes, bytes]) -> VariantRoute:
        """The variant that serves this request (weighted by default)."""
        return route.choose()

    def decode(
        self, body: bytes, headers: dict[bytes, bytes], signature: Signature
    ) -> tuple[Arrays, Any]:
        """Arrays for the model, and whatever ``encode`` needs to shape the answer."""
        raise NotImplementedError

    def encode(
        self, params: Params, variant: VariantRoute, result: Result, context: Any
    ) -> tuple[bytes, Headers]:
        raise NotImplementedError


class AsgiProtocol(Protocol):
    """An ASGI app as an entry: it receives the raw call (for protocols with their own I/O)."""

    def __init__(self, app: ASGIApp, matches: Callable[[str], bool], name: str) -> None:
        self.app = app
        self._matches = matches
        self.name = name
        self.method = "*"

    def match(self, path: str) -> Params | None:
        return {} if self._matches(path) else None


def json_answer(status: int, body: Any, headers: Headers | None = None) -> Answer:
    return Answer(status, orjson.dumps(body), [*JSON_HEADERS, *(headers or [])])


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event; ``data`` that is not bytes or str is sent as JSON."""
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode()
    else:
        payload = orjson.dumps(data)
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + payload + b"\n\n"


SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def send_answer(send: Any, answer: Answer, extra: Headers) -> None:
    """Write ``answer``: one body message, or its chunks as they come (``more_body``)."""
    body = answer.body
    if isinstance(body, bytes):
        headers = [*answer.headers, *extra, (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await send(
        {"type": "http.response.start", "status": answer.status, "headers": answer.headers + extra}
    )
    try:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        aclose = getattr(body, "aclose", None)
        if aclose is not None:
            await aclose()
    await send({"type": "http.response.body", "body": b""})
