"""The LLM routes as a bare ASGI app in front of the rest of the server.

``POST /v1/chat/completions``, ``POST /v1/embeddings``, ``GET /v1/models`` (OpenAI) and
``POST /v1/messages`` (Anthropic) are answered here, each failure in its caller's
protocol's error format. Streams go out chunk by chunk (ASGI ``more_body``); a client
that disconnects cancels the upstream call at once. Every answer names the deployment
that served it and the gateway's own time (total minus waiting on the upstream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from zeroserve.errors import PayloadTooLarge, TooManyRequests, ZeroserveError
from zeroserve.llm import anthropic_codec as ac
from zeroserve.llm import calls
from zeroserve.llm.anthropic_stream import AnthropicStreamEncoder
from zeroserve.llm.providers.base import UpstreamError
from zeroserve.llm.service import Caller, LLMService
from zeroserve.llm.usage import Usage
from zeroserve.llm.validate import InvalidRequest, check_chat, check_embeddings

log = logging.getLogger("zeroserve.llm")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
JSON = dict[str, Any]
ROUTES = {
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/embeddings"),
    ("GET", "/v1/models"),
    ("POST", "/v1/messages"),
}
SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_TYPE = (b"content-type", b"application/json")
DONE = b"data: [DONE]\n\n"


class LLMGateway:
    """The ASGI app; ``fallback`` answers every other route."""

    def __init__(self, service: LLMService, fallback: ASGIApp, max_body_bytes: int) -> None:
        self.service = service
        self.fallback = fallback
        self.max_body = max_body_bytes

    @staticmethod
    def matches(method: str, path: str) -> bool:
        return (method, path.rstrip("/")) in ROUTES

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.matches(scope["method"], scope["path"]):
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"].rstrip("/")
        headers = {k: v for k, v in scope["headers"] if k in _WANTED}
        anthropic = path == "/v1/messages"
        try:
            caller = await self.service.caller(_secret(headers))
            if path == "/v1/models":
                await self._models(send, b"anthropic-version" in headers)
                return
            body = await self._read(receive, headers)
            if anthropic:
                await self._messages(caller, body, headers, started, scope, receive, send)
            elif path == "/v1/embeddings":
                await self._embeddings(caller, body, started, send)
            else:
                await self._chat(caller, body, headers, started, scope, receive, send)
        except Exception as exc:
            await _send_error(send, exc, anthropic)

    # routes
    async def _models(self, send: Any, anthropic: bool) -> None:
        names = sorted(self.service.models)
        if anthropic:
            data: JSON = {
                "data": [
                    {
                        "id": n,
                        "type": "model",
                        "display_name": n,
                        "created_at": "2026-01-01T00:00:00Z",
                    }
                    for n in names
                ],
                "has_more": False,
                "first_id": names[0] if names else None,
                "last_id": names[-1] if names else None,
            }
        else:
            data = {
                "object": "list",
                "data": [
                    {"id": n, "object": "model", "created": 0, "owned_by": "zeroserve"}
                    for n in names
                ],
            }
        await _send_json(send, 200, orjson.dumps(data), [])

    async def _chat(
        self,
        caller: Caller,
        raw: bytes,
        headers: dict[bytes, bytes],
        started: float,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
    ) -> None:
        body = _load(raw)
        check_chat(body)
        await self._complete_or_stream(caller, body, headers, started, receive, send, None)

    async def _messages(
        self,
        caller: Caller,
        raw: bytes,
        headers: dict[bytes, bytes],
        started: float,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
    ) -> None:
        data = _load(raw)
        if not isinstance(data, dict) or not isinstance(data.get("model"), str):
            raise InvalidRequest(
                "model: required, the name of a model from GET /v1/models", "model"
            )
        body = ac.from_anthropic_request(data)
        check_chat(body)
        await self._complete_or_stream(caller, body, headers, started, receive, send, data["model"])

    async def _embeddings(self, caller: Caller, raw: bytes, started: float, send: Any) -> None:
        body = _load(raw)
        check_embeddings(body)
        call = await calls.prepare(self.service, caller, body, "embedding", started)
        try:
            outcome = await calls.complete(call)
        except BaseException:
            calls.release(call, "error")
            raise
        self._settle_outcome(outcome)
        await _send_json(send, 200, orjson.dumps(outcome.body), _answer_headers(call, started))

    async def _complete_or_stream(
        self,
        caller: Caller,
        body: JSON,
        headers: dict[bytes, bytes],
        started: float,
        receive: Any,
        send: Any,
        anthropic_model: str | None,
    ) -> None:
        svc = self.service
        stream = bool(body.get("stream"))
        call = await calls.prepare(svc, caller, body, "chat", started)
        if stream:
            await self._stream(call, receive, send, anthropic_model)
            return
        forced = headers.get(b"x-zeroserve-cache", b"").lower() in (b"on", b"true", b"1")
        cache_key = svc.cache.key(caller.key_id, body, forced)
        cached = svc.cache.get(cache_key) if cache_key is not None else None
        if cached is not None:
            calls.release(call, "cache_hit")
            svc.settle(
                caller,
                None,
                0,
                call.entry.spec.name,
                None,
                Usage(),
                0,
                call.request_id,
                cache_hit=True,
            )
            svc.metrics.cache_hits.labels(call.entry.spec.name).inc()
            out = (
                ac.to_anthropic_response(
                    cached, Usage.from_openai(cached.get("usage")) or Usage(), anthropic_model
                )
                if anthropic_model
                else cached
            )
            extra = [(b"x-zeroserve-cache", b"hit"), *_answer_headers(call, started)]
            await _send_json(send, 200, orjson.dumps(out), extra)
            return
        try:
            outcome = await calls.complete(call)
        except BaseException:
            calls.release(call, "error")
            raise
        self._settle_outcome(outcome)
        if cache_key is not None:
            svc.cache.put(cache_key, outcome.body)
        if anthropic_model is not None:
            payload = orjson.dumps(
                ac.to_anthropic_response(outcome.body, outcome.usage, anthropic_model)
            )
        else:
            payload = orjson.dumps(outcome.body)
        await _send_json(send, 200, payload, _answer_headers(call, started))

    def _settle_outcome(self, outcome: calls.Outcome) -> None:
        call = outcome.call
        state = call.state
        assert state is not None
        cost = state.rates.cost(outcome.usage)
        self.service.settle(
            call.caller,
            call.reservation,
            call.reserved,
            call.served_model,
            state,
            outcome.usage,
            cost,
            call.request_id,
        )
        state.metrics.ok.inc()
        state.metrics.latency.observe(time.perf_counter() - call.started)

    # streaming
    async def _stream(
        self, call: calls.Call, receive: Any, send: Any, anthropic_model: str | None
    ) -> None:
        try:
            live = await calls.open_stream(call)
        except BaseException:
            calls.release(call, "error")
            raise
        include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
        encoder = AnthropicStreamEncoder(anthropic_model) if anthropic_model else None
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*SSE_HEADERS, *_answer_headers(call, call.started)],
            }
        )

        async def pump() -> str | None:
            last: JSON = live.first
            try:
                await send(
                    {
                        "type": "http.response.body",
                        "body": self._encode(live.first, encoder, include_usage, live),
                        "more_body": True,
                    }
                )
                async for chunk in live.rest:
                    last = chunk
                    await send(
                        {
                            "type": "http.response.body",
                            "body": self._encode(chunk, encoder, include_usage, live),
                            "more_body": True,
                        }
                    )
            except UpstreamError as exc:
                message = self.service.credentials.scrub(exc.message)
                if encoder is not None:
                    tail = encoder.error(
                        "overloaded_error" if exc.status == 529 else "api_error", message
                    )
                else:
                    tail = (
                        b"data: "
                        + orjson.dumps(
                            {
                                "error": {
                                    "message": message,
                                    "type": "server_error",
                                    "code": exc.kind,
                                }
                            }
                        )
                        + b"\n\n"
                    )
                await send({"type": "http.response.body", "body": tail, "more_body": False})
                return exc.kind
            if encoder is not None:
                tail = encoder.end(live.state.usage)
            elif include_usage:
                usage = (live.state.usage or Usage()).to_openai()
                final: JSON = {
                    "id": last.get("id"),
                    "object": "chat.completion.chunk",
                    "created": last.get("created"),
                    "model": last.get("model"),
                    "choices": [],
                    "usage": usage,
                }
                tail = b"data: " + orjson.dumps(final) + b"\n\n" + DONE
            else:
                tail = DONE
            await send({"type": "http.response.body", "body": tail, "more_body": False})
            return None

        loop = asyncio.get_running_loop()
        pumping = loop.create_task(pump())
        watching = loop.create_task(_disconnected(receive))
        error: str | None
        try:
            await asyncio.wait((pumping, watching), return_when=asyncio.FIRST_COMPLETED)
            if pumping.done():
                error = pumping.result()
            else:
                pumping.cancel()  # the client left: stop reading the upstream now
                with contextlib.suppress(asyncio.CancelledError):
                    await pumping
                error = "client_disconnected"
        except BaseException:
            pumping.cancel()
            error = "cancelled"
            raise
        finally:
            watching.cancel()
            aclose = getattr(live.rest, "aclose", None)
            if aclose is not None and error is not None:
                with contextlib.suppress(Exception):
                    await aclose()
            calls.finish_stream(live, error)

    def _encode(
        self,
        chunk: JSON,
        encoder: AnthropicStreamEncoder | None,
        include_usage: bool,
        live: calls.LiveStream,
    ) -> bytes:
        if encoder is not None:
            return encoder.chunk(chunk, live.state.usage)
        if include_usage:
            chunk["usage"] = None
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def _read(self, receive: Any, headers: dict[bytes, bytes]) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise PayloadTooLarge(f"request body is over the {self.max_body:,}-byte limit")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise PayloadTooLarge(f"request body is over the {self.max_body:,}-byte limit")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)


async def _disconnected(receive: Any) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


def _secret(headers: dict[bytes, bytes]) -> str | None:
    auth = headers.get(b"authorization", b"")
    if auth[:7].lower() == b"bearer ":
        return auth[7:].decode("latin-1").strip() or None
    key = headers.get(b"x-api-key")
    return key.decode("latin-1").strip() if key else None


def _load(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def _answer_headers(call: calls.Call, started: float) -> list[tuple[bytes, bytes]]:
    overhead_us = max(0, round((time.perf_counter() - started - call.upstream_s) * 1e6))
    dep = call.state.name if call.state is not None else ""
    return [
        (b"x-zeroserve-deployment", dep.encode()),
        (b"x-zeroserve-overhead-us", str(overhead_us).encode()),
        (b"x-request-id", call.request_id.encode()),
    ]


async def _send_json(
    send: Any, status: int, payload: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [JSON_TYPE, (b"content-length", str(len(payload)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


async def _send_error(send: Any, exc: Exception, anthropic: bool) -> None:
    if isinstance(exc, ZeroserveError):
        status, message = exc.status_code, exc.message
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
    else:
        log.exception("unexpected error in the LLM gateway", exc_info=exc)
        status, message, extra = 500, "internal error; see the server log", []
    if anthropic:
        payload = ac.error_body(ac.anthropic_error_type(status), message)
    else:
        code = getattr(exc, "code", "internal_error")
        if isinstance(exc, TooManyRequests) and code == "too_many_requests":
            code = "rate_limit_exceeded"
        err: JSON = {
            "message": message,
            "type": OPENAI_TYPES.get(
                status, "server_error" if status >= 500 else "invalid_request_error"
            ),
            "param": getattr(exc, "param", None),
            "code": code,
        }
        payload = orjson.dumps({"error": err})
    await _send_json(send, status, payload, extra)


_WANTED = {
    b"content-length",
    b"authorization",
    b"x-api-key",
    b"anthropic-version",
    b"x-zeroserve-cache",
}
