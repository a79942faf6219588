"""The provider interface and the upstream error every adapter raises.

The gateway speaks one canonical shape inside: OpenAI chat-completion requests,
responses and stream chunks (as dicts). An adapter translates that shape to its
upstream's wire format and back, and reports usage in the normalised ``Usage``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import aiohttp
import orjson
from yarl import URL

from zeroserve.llm.config import Deployment
from zeroserve.llm.credentials import Credentials
from zeroserve.llm.usage import Usage

ErrorKind = Literal[
    "rate_limit", "server", "timeout", "connect", "context_window", "client", "protocol"
]
RETRYABLE: frozenset[str] = frozenset({"rate_limit", "server", "timeout", "connect", "protocol"})
JSON = dict[str, Any]


class UpstreamError(Exception):
    """An upstream failed; ``kind`` decides whether to retry, fall back, or pass it on."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        status: int = 502,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE


@dataclass(slots=True)
class Completion:
    body: JSON
    """OpenAI-shaped response (chat completion or embedding list)."""
    usage: Usage
    upstream_s: float = 0.0


@dataclass(slots=True)
class StreamState:
    """What a stream reported so far; the gateway settles on it whatever happens."""

    usage: Usage | None = None
    delivered_chars: int = 0
    finish_reason: str | None = None
    extra: JSON = field(default_factory=dict)


class Provider:
    """Base adapter: subclasses implement what their upstream supports."""

    kind = "base"

    def __init__(self, session: aiohttp.ClientSession, credentials: Credentials) -> None:
        self.session = session
        self.credentials = credentials

    async def complete(self, body: JSON, dep: Deployment) -> Completion:
        raise UpstreamError("client", f"{self.kind} deployments do not serve chat", 400)

    def stream(self, body: JSON, dep: Deployment, state: StreamState) -> AsyncIterator[JSON]:
        """Yield OpenAI chunk dicts (without usage); put usage into ``state``."""
        raise UpstreamError("client", f"{self.kind} deployments do not stream", 400)

    async def embed(self, body: JSON, dep: Deployment) -> Completion:
        raise UpstreamError("client", f"{self.kind} deployments do not serve embeddings", 400)

    async def health(self, dep: Deployment) -> bool:
        """A check that bills nothing (a model list, or a TCP connect)."""
        return True

    # helpers shared by HTTP adapters
    def timeout(self, dep: Deployment) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(
            total=dep.timeout_s, sock_connect=min(5.0, dep.timeout_s), sock_read=dep.timeout_s
        )

    async def post(
        self, url: str | URL, payload: bytes, headers: dict[str, str], dep: Deployment
    ) -> aiohttp.ClientResponse:
        """POST and return the open response (status < 400), or raise ``UpstreamError``."""
        try:
            response = await self.session.post(
                url, data=payload, headers=headers, timeout=self.timeout(dep)
            )
        except TimeoutError:
            raise UpstreamError(
                "timeout", f"{dep.name} did not answer in {dep.timeout_s} s", 504
            ) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError(
                "connect", f"cannot reach {dep.name}: {type(exc).__name__}", 502
            ) from None
        if response.status >= 400:
            try:
                text = (await response.read()).decode("utf-8", "replace")
            except (aiohttp.ClientError, TimeoutError):
                text = ""
            finally:
                response.release()
            raise self.error_from(response.status, text, response.headers, dep)
        return response

    def error_from(self, status: int, text: str, headers: Any, dep: Deployment) -> UpstreamError:
        message = self.credentials.scrub(_error_message(text))[:500]
        retry_after = _retry_after(headers.get("retry-after") if headers else None)
        lowered = message.lower()
        if status == 429:
            kind: ErrorKind = "rate_limit"
        elif status >= 500 or status == 408:
            kind = "server"
        elif ("context" in lowered and ("length" in lowered or "window" in lowered)) or (
            "too long" in lowered or "too many tokens" in lowered
        ):
            kind = "context_window"
        else:
            kind = "client"
        return UpstreamError(
            kind, f"upstream {dep.name} answered {status}: {message}", status, retry_after
        )


async def read_json(response: aiohttp.ClientResponse, dep: Deployment) -> JSON:
    try:
        raw = await response.read()
    except TimeoutError:
        raise UpstreamError(
            "timeout", f"{dep.name} did not finish in {dep.timeout_s} s", 504
        ) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError("connect", f"{dep.name} broke off: {type(exc).__name__}") from None
    finally:
        response.release()
    ctype = response.headers.get("content-type", "")
    if "json" not in ctype:
        raise UpstreamError(
            "protocol", f"{dep.name} answered {ctype or 'no content type'}, not JSON"
        )
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("protocol", f"{dep.name} answered malformed JSON") from None
    if not isinstance(data, dict):
        raise UpstreamError("protocol", f"{dep.name} answered JSON that is not an object")
    return data


async def sse_events(
    response: aiohttp.ClientResponse, dep: Deployment
) -> AsyncIterator[tuple[str, bytes]]:
    """Server-sent events as (event name, data) pairs; multi-line data is joined."""
    ctype = response.headers.get("content-type", "")
    if "text/event-stream" not in ctype:
        response.release()
        raise UpstreamError(
            "protocol", f"{dep.name} streamed {ctype or 'no content type'}, not SSE"
        )
    event = ""
    data: list[bytes] = []
    finished = False
    try:
        async for raw in response.content:
            line = raw.rstrip(b"\r\n")
            if not line:
                if data:
                    yield event, b"\n".join(data)
                event, data = "", []
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" "))
            elif line.startswith(b"event:"):
                event = line[6:].strip().decode()
        finished = True
        if data:
            yield event, b"\n".join(data)
    except TimeoutError:
        raise UpstreamError("timeout", f"{dep.name} stalled mid-stream", 504) from None
    except aiohttp.ClientError as exc:
        raise UpstreamError(
            "connect", f"{dep.name} broke off mid-stream: {type(exc).__name__}"
        ) from None
    finally:
        # An unfinished stream (the client left, or we stopped at [DONE] early) must not
        # go back to the pool half-read: close the connection, which stops the upstream.
        if finished:
            response.release()
        else:
            response.close()


def _error_message(text: str) -> str:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip() or "no body"
    if isinstance(data, dict):
        err = data.get("error", data.get("message", data))
        if isinstance(err, dict):
            return str(err.get("message") or err)
        return str(err)
    return text.strip()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def cancel_quietly(task: asyncio.Task[Any]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
