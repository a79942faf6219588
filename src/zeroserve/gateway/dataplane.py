"""The request path: a bare ASGI app for the inference routes.

``POST /v1/endpoints/{name}/invocations`` and ``POST /v2/models/{name}[/versions/{v}]/infer``
are matched by string tests and answered here, as a chain of small steps:
authorize -> read body -> decode and validate -> choose variant -> submit to
the pool -> encode. Everything else falls through to the FastAPI app. The
routing table is the controller's in-memory snapshot; nothing here touches
the database.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from zeroserve.errors import (
    EndpointNotFound,
    Forbidden,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    VersionNotFound,
    ZeroserveError,
)
from zeroserve.protocols import jsonproto, v2
from zeroserve.protocols.validation import rows_of

if TYPE_CHECKING:
    from zeroserve.control.routes import Route, RouteTable, VariantRoute
    from zeroserve.metrics import Metrics
    from zeroserve.serving.pool import Result
    from zeroserve.settings import Settings
    from zeroserve.types import Arrays

log = logging.getLogger("zeroserve.gateway")

ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]
Answer = tuple[int, bytes, list[tuple[bytes, bytes]], "VariantRoute | None"]

JSON_ROUTE = ("/v1/endpoints/", "/invocations")
ASYNC_ROUTE = ("/v1/endpoints/", "/async")
V2_ROUTE = ("/v2/models/", "/infer")
JSON_HEADERS = [(b"content-type", b"application/json")]
INTERNAL_ERROR = b'{"error":"internal error; see the server log","code":"internal_error"}'


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class DataPlane:
    def __init__(
        self, controller: RouteTable, settings: Settings, metrics: Metrics, fallback: ASGIApp
    ) -> None:
        self.controller = controller
        self.settings = settings
        self.metrics = metrics
        self.fallback = fallback
        self.max_body = settings.max_payload_bytes
        self.keys = {key_digest(k) for k in [*settings.api_keys, *settings.admin_api_keys]}
        self._background: set[asyncio.Task[Any]] = set()
        self.async_service: Any = None
        self.answered = 0
        """Inference requests this process has answered (shown per gateway process)."""

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(JSON_ROUTE[0]) and path.endswith(JSON_ROUTE[1]):
                name = path[len(JSON_ROUTE[0]) : -len(JSON_ROUTE[1])]
                if "/" not in name:
                    await self._serve(scope, receive, send, name, None, self._invoke_json)
                    return
            elif path.startswith(ASYNC_ROUTE[0]) and path.endswith(ASYNC_ROUTE[1]):
                name = path[len(ASYNC_ROUTE[0]) : -len(ASYNC_ROUTE[1])]
                if "/" not in name and self.async_service is not None:
                    await self._serve_async(scope, receive, send, name)
                    return
            elif path.startswith(V2_ROUTE[0]) and path.endswith(V2_ROUTE[1]):
                rest = path[len(V2_ROUTE[0]) : -len(V2_ROUTE[1])]
                name, _, version = rest.partition("/versions/")
                if "/" not in name and (not version or version.isdigit()):
                    await self._serve(
                        scope,
                        receive,
                        send,
                        name,
                        int(version) if version else None,
                        self._invoke_v2,
                    )
                    return
        await self.fallback(scope, receive, send)

    async def _serve(
        self,
        scope: dict[str, Any],
        receive: Any,
        send: Any,
        name: str,
        version: int | None,
        handler: Callable[..., Awaitable[Answer]],
    ) -> None:
        started = time.perf_counter()
        headers = _headers(scope["headers"])
        variant: VariantRoute | None = None
        try:
            if self.keys:
                self._authorize(headers)
            body = await self._read_body(receive, headers)
            status, payload, extra, variant = await handler(name, version, body, headers)
        except Exception as exc:
            status, payload, extra = _error_answer(exc, name)
        await _send_answer(send, status, payload, extra)
        self.answered += 1
        if variant is not None and status == 200:
            variant.metrics.ok.inc()
            variant.metrics.latency.observe(time.perf_counter() - started)
        else:
            label = name if name in self.controller.routes else "unknown"
            self.metrics.requests.labels(
                label, variant.spec.name if variant else "", str(status)
            ).inc()

    async def _serve_async(self, scope: dict[str, Any], receive: Any, send: Any, name: str) -> None:
        """Accept an async job: the body streams to the store, the answer is 202 and an id."""
        headers = _headers(scope["headers"])
        try:
            if self.keys:
                self._authorize(headers)
            status, body = await self.async_service.submit(name, scope, receive, headers)
            payload, extra = orjson.dumps(body), list(JSON_HEADERS)
        except Exception as exc:
            status, payload, extra = _error_answer(exc, name)
        await _send_answer(send, status, payload, extra)

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

    # protocols
    async def _invoke_json(
        self, name: str, _version: int | None, body: bytes, _headers: dict[bytes, bytes]
    ) -> Answer:
        route = self._route(name)
        request = jsonproto.load_json(body)
        variant = route.choose()
        arrays, as_rows = jsonproto.decode(request, variant.signature)
        result = await self._predict(route, variant, arrays)
        payload = jsonproto.encode(result.outputs, as_rows, variant.signature)
        return 200, payload, self._answer_headers(variant, result, JSON_HEADERS), variant

    async def _invoke_v2(
        self, name: str, version: int | None, body: bytes, headers: dict[bytes, bytes]
    ) -> Answer:
        route = self._route(name)
        if version is None:
            variant = route.choose()
        else:
            found = route.for_version(version)
            if found is None:
                served = ", ".join(str(v.spec.version) for v in route.variants)
                raise VersionNotFound(
                    f"endpoint {name!r} does not serve version {version} (it serves: {served})"
                )
            variant = found
        raw_length = headers.get(v2.HEADER_LENGTH.encode())
        header_length = int(raw_length) if raw_length and raw_length.isdigit() else None
        request, tail = v2.parse_request(body, header_length)
        arrays = v2.decode_inputs(request, tail, variant.signature)
        names, binary = v2.requested_outputs(request, variant.signature)
        result = await self._predict(route, variant, arrays)
        payload, out_headers = v2.encode_response(
            name,
            variant.spec.version,
            request.get("id"),
            result.outputs,
            names,
            binary,
            variant.signature,
        )
        base = [(k.encode(), v.encode()) for k, v in out_headers.items()]
        return 200, payload, self._answer_headers(variant, result, base), variant

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
            self._shadow(route, arrays)
        return result

    def _shadow(self, route: Route, arrays: Arrays) -> None:
        """Copy the request to the shadow variant; its answer and errors are only metered."""
        shadow = route.shadow
        assert shadow is not None

        async def fire() -> None:
            try:
                await shadow.pool.submit(arrays, rows_of(arrays), route.spec.request_timeout_s)
                shadow.metrics.ok.inc()
            except ZeroserveError as exc:
                self.metrics.requests.labels(
                    route.spec.name, shadow.spec.name, str(exc.status_code)
                ).inc()

        task = asyncio.get_running_loop().create_task(fire())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    def _answer_headers(
        variant: VariantRoute, result: Result, base: list[tuple[bytes, bytes]]
    ) -> list[tuple[bytes, bytes]]:
        headers = [
            *base,
            (b"x-zeroserve-variant", variant.spec.name.encode()),
            (b"x-zeroserve-model-version", f"{variant.spec.model}:{variant.spec.version}".encode()),
        ]
        if result.cold:
            headers.append((b"x-zeroserve-cold-start", b"true"))
        return headers


def _error_answer(exc: Exception, endpoint: str) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """The one mapping from an exception to a response: ours carry their status and advice;
    anything else is a 500 without a trace (the trace goes to the log)."""
    if isinstance(exc, ZeroserveError):
        extra = [(k.lower().encode(), v.encode()) for k, v in exc.headers().items()]
        return exc.status_code, orjson.dumps(exc.to_dict()), extra
    log.exception("unexpected error serving a request", extra={"endpoint": endpoint}, exc_info=exc)
    return 500, INTERNAL_ERROR, []


async def _send_answer(
    send: Any, status: int, payload: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    headers = [*extra, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    return {k: v for k, v in raw if k in _WANTED}


_WANTED = {
    b"idempotency-key",
    b"x-callback-url",
    b"content-length",
    b"authorization",
    b"x-api-key",
    v2.HEADER_LENGTH.encode(),
    b"content-type",
}
