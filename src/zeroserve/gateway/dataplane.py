"""The request path: a bare ASGI app over a table of protocols.

Each request is matched against the table (``gateway/protocol.py``); the
first protocol whose method and path match answers it, as a chain of small
steps: authorize -> read body -> choose variant -> decode -> submit to the
pool -> encode -> send, then count the outcome. Everything else falls through
to the FastAPI app. The routing table is the controller's in-memory snapshot;
nothing here touches the database.

Every answer carries ``X-Request-Id`` (the client's, when it sent a sane one)
and, once a variant was chosen, ``X-Zeroserve-Variant``.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

import orjson

from zeroserve.errors import (
    Conflict,
    EndpointNotFound,
    Forbidden,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    ZeroserveError,
)
from zeroserve.gateway.inference import JsonProtocol, V2Protocol
from zeroserve.gateway.offload import off_loop
from zeroserve.gateway.protocol import (
    Answer,
    ASGIApp,
    AsgiProtocol,
    Call,
    Headers,
    InferenceProtocol,
    Params,
    Protocol,
    send_answer,
)
from zeroserve.outcomes import Outcomes, OutcomeSeries
from zeroserve.protocols.validation import rows_of
from zeroserve.types import Mode

if TYPE_CHECKING:
    from zeroserve.control.routes import Route, RouteTable, VariantRoute
    from zeroserve.metrics import Metrics
    from zeroserve.serving.pool import Result
    from zeroserve.settings import Settings
    from zeroserve.types import Arrays

log = logging.getLogger("zeroserve.gateway")

INTERNAL_ERROR = b'{"error":"internal error; see the server log","code":"internal_error"}'
JSON_CONTENT = (b"content-type", b"application/json")
MAX_SHADOW_IN_FLIGHT = 256
"""Shadow copies in flight per process; beyond it copies are dropped and counted."""
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
BASE_HEADERS = frozenset(
    {b"content-length", b"content-type", b"authorization", b"x-api-key", b"x-request-id"}
)


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class DataPlane:
    """The inference routes of one gateway process, answered from a protocol table."""

    def __init__(
        self,
        controller: RouteTable,
        settings: Settings,
        metrics: Metrics,
        fallback: ASGIApp,
        outcomes: Outcomes,
        protocols: list[Protocol] | None = None,
    ) -> None:
        self.controller = controller
        self.settings = settings
        self.metrics = metrics
        self.fallback = fallback
        self.outcomes = outcomes
        self.max_body = settings.max_payload_bytes
        self.decode_in_thread = int(settings.decode_in_thread_kb * 1024)
        self.keys = {key_digest(k) for k in [*settings.api_keys, *settings.admin_api_keys]}
        self.protocols: list[Protocol] = []
        self._wanted: set[bytes] = set(BASE_HEADERS)
        for protocol in protocols if protocols is not None else [JsonProtocol(), V2Protocol()]:
            self.add_protocol(protocol)
        self._background: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex() + "-"
        self.answered = 0
        """Inference requests this process has answered (shown per gateway process)."""
        self.shadow_dropped = 0

    def add_protocol(self, protocol: Protocol, first: bool = False) -> None:
        """Add an entry to the table (first: before the others, e.g. a more specific path)."""
        if first:
            self.protocols.insert(0, protocol)
        else:
            self.protocols.append(protocol)
        self._wanted.update(protocol.wanted_headers)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            method: str = scope["method"]
            for protocol in self.protocols:
                if protocol.method not in (method, "*"):
                    continue
                params = protocol.match(path)
                if params is None:
                    continue
                if isinstance(protocol, AsgiProtocol):
                    await protocol.app(scope, receive, send)
                else:
                    await self._serve(protocol, params, scope, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def _serve(
        self, protocol: Protocol, params: Params, scope: dict[str, Any], receive: Any, send: Any
    ) -> None:
        started = time.perf_counter()
        headers = {k: v for k, v in scope["headers"] if k in self._wanted}
        request_id = self._request_id(headers)
        call = Call(scope, receive, headers, params, lambda: self._read_body(receive, headers))
        variant: VariantRoute | None = None
        try:
            if self.keys:
                self._authorize(headers)
            if isinstance(protocol, InferenceProtocol):
                answer = await self._infer(protocol, call)
            else:
                answer = await protocol.serve(call)
            variant = answer.variant
        except Exception as exc:
            variant = getattr(exc, "variant", None)
            answer = _error_answer(exc, str(params.get("name", "")))
        extra: Headers = [(b"x-request-id", request_id)]
        if variant is not None:
            extra.append((b"x-zeroserve-variant", variant.spec.name.encode()))
        await send_answer(send, answer, extra)
        self.answered += 1
        if isinstance(protocol, InferenceProtocol):
            self._count(str(params.get("name", "")), variant, answer, time.perf_counter() - started)

    def _count(
        self, name: str, variant: VariantRoute | None, answer: Answer, elapsed_s: float
    ) -> None:
        status = answer.status
        if variant is not None and status == 200:
            variant.metrics.ok.inc()
            variant.metrics.latency.observe(elapsed_s)
            self._series(name, variant).record(200, None, elapsed_s, time.time())
            return
        known = name in self.controller.routes
        label = name if known else "unknown"
        variant_name = variant.spec.name if variant is not None else ""
        cause = answer.cause or "unknown"
        self.metrics.requests.labels(label, variant_name, str(status)).inc()
        self.metrics.errors.labels(label, variant_name, str(status), cause).inc()
        if variant is not None:
            variant.metrics.latency.observe(elapsed_s)
            self._series(name, variant).record(status, cause, elapsed_s, time.time())

    def _series(self, name: str, variant: VariantRoute, role: str = "primary") -> OutcomeSeries:
        series = variant.outcomes
        if series is None:
            series = variant.outcomes = self.outcomes.for_variant(name, variant.spec.name, role)
        return series

    def _request_id(self, headers: dict[bytes, bytes]) -> bytes:
        given = headers.get(b"x-request-id")
        if given is not None and _REQUEST_ID.match(given):
            return given
        return f"{self._id_prefix}{next(self._ids):x}".encode()

    def _authorize(self, headers: dict[bytes, bytes]) -> None:
        auth = headers.get(b"authorization", b"")
        key = auth[7:] if auth[:7].lower() == b"bearer " else headers.get(b"x-api-key")
        if not key:
            raise Unauthorized(
                "this server requires an API key: send 'Authorization: Bearer "
                "<key>' or 'X-API-Key: <key>'"
            )
        if hashlib.sha256(key).digest() not in self.keys:
            raise Forbidden("the API key is not valid")

    async def _read_body(self, receive: Any, headers: dict[bytes, bytes]) -> bytes:
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise self._too_large(int(declared))
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body
        chunks = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise self._too_large(size)
            chunks.append(chunk)
        return b"".join(chunks)

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"request body is {size:,} bytes, over the {self.max_body:,}-byte limit; send large "
            "inputs to the async endpoint (POST /v1/endpoints/{name}/async) or raise "
            "ZEROSERVE_MAX_PAYLOAD_MB"
        )

    def _route(self, name: str) -> Route:
        route = self.controller.routes.get(name)
        if route is None:
            known = ", ".join(sorted(self.controller.routes)) or "none deployed"
            raise EndpointNotFound(
                f"no endpoint named {name!r} (endpoints: {known}); "
                "deploy one with `zeroserve deploy MODEL`"
            )
        return route

    # the inference chain
    async def _infer(self, protocol: InferenceProtocol, call: Call) -> Answer:
        route = self._route(protocol.endpoint(call.params))
        if route.spec.mode is Mode.ASYNC:
            raise Conflict(
                f"endpoint {route.spec.name!r} is an async endpoint: submit jobs with "
                f"POST /v1/endpoints/{route.spec.name}/async, or redeploy it in realtime or "
                "serverless mode"
            )
        body = await call.read_body()
        variant = protocol.select(route, call.params, call.headers)
        try:
            arrays, context = await off_loop(  # a large body is decoded in a thread
                self.decode_in_thread, body, protocol.decode, body, call.headers, variant.signature
            )
            result = await self._predict(route, variant, arrays)
            payload, headers = protocol.encode(call.params, variant, result, context)
        except Exception as exc:
            exc.variant = variant  # type: ignore[attr-defined] # the outcome is this variant's
            raise
        return Answer(200, payload, self._answer_headers(variant, result, headers), variant)

    async def _predict(self, route: Route, variant: VariantRoute, arrays: Arrays) -> Result:
        limit = route.spec.max_concurrency
        if limit is not None and route.in_flight >= limit:
            raise TooManyRequests(
                f"endpoint {route.spec.name} is at its max_concurrency of {limit}; retry shortly",
                retry_after_s=1.0,
            )
        route.in_flight += 1
        try:
            result = await variant.pool.submit(
                arrays, rows_of(arrays), route.spec.request_timeout_s
            )
        finally:
            route.in_flight -= 1
        if route.shadow is not None:
            self._shadow(route, route.shadow, arrays)
        return result

    def _shadow(self, route: Route, shadow: VariantRoute, arrays: Arrays) -> None:
        """Copy the request to the shadow variant, off the request path; only counted."""
        if len(self._background) >= MAX_SHADOW_IN_FLIGHT:
            self.shadow_dropped += 1
            self.metrics.shadow_dropped.labels(route.spec.name, shadow.spec.name).inc()
            return
        series = self._series(route.spec.name, shadow, "shadow")

        async def fire() -> None:
            started = time.perf_counter()
            try:
                await shadow.pool.submit(arrays, rows_of(arrays), route.spec.request_timeout_s)
            except ZeroserveError as exc:
                series.record(exc.status_code, exc.code, time.perf_counter() - started, time.time())
                self.metrics.requests.labels(
                    route.spec.name, shadow.spec.name, str(exc.status_code)
                ).inc()
                return
            except Exception:
                log.exception("shadow copy failed", extra={"endpoint": route.spec.name})
                return
            elapsed = time.perf_counter() - started
            series.record(200, None, elapsed, time.time())
            shadow.metrics.ok.inc()
            shadow.metrics.latency.observe(elapsed)

        task = asyncio.get_running_loop().create_task(fire())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _answer_headers(variant: VariantRoute, result: Result, base: Headers) -> Headers:
        headers = [
            *base,
            (b"x-zeroserve-model-version", f"{variant.spec.model}:{variant.spec.version}".encode()),
        ]
        if result.cold:
            headers.append((b"x-zeroserve-cold-start", b"true"))
        return headers


def _error_answer(exc: Exception, endpoint: str) -> Answer:
    """The one mapping from an exception to a response: ours carry their status and advice;
    anything else is a 500 without a trace (the trace goes to the log)."""
    if isinstance(exc, ZeroserveError):
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
        body = orjson.dumps(exc.to_dict())
        return Answer(exc.status_code, body, [JSON_CONTENT, *extra], cause=exc.code)
    log.exception("unexpected error serving a request", extra={"endpoint": endpoint}, exc_info=exc)
    return Answer(500, INTERNAL_ERROR, [JSON_CONTENT], cause="internal_error")
