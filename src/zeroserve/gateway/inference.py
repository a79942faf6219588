"""The inference protocols in the data plane's table: the JSON route, OIP v2, async jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from zeroserve.errors import VersionNotFound
from zeroserve.gateway.protocol import (
    JSON_HEADERS,
    Answer,
    Call,
    Headers,
    InferenceProtocol,
    Params,
    Protocol,
)
from zeroserve.protocols import jsonproto, v2

if TYPE_CHECKING:
    from zeroserve.control.routes import Route, VariantRoute
    from zeroserve.serving.pool import Result
    from zeroserve.types import Arrays, Signature

_V2_LENGTH = v2.HEADER_LENGTH.encode()


def _between(path: str, prefix: str, suffix: str) -> str | None:
    if path.startswith(prefix) and path.endswith(suffix) and len(path) > len(prefix) + len(suffix):
        name = path[len(prefix) : -len(suffix)]
        return name if "/" not in name else None
    return None


def _is_version(text: str) -> bool:
    return text.isascii() and text.isdigit() and len(text) <= 9


class JsonProtocol(InferenceProtocol):
    """``POST /v1/endpoints/{name}/invocations``: ``instances`` (rows) or ``inputs`` (columns)."""

    name = "json"

    def match(self, path: str) -> Params | None:
        name = _between(path, "/v1/endpoints/", "/invocations")
        return {"name": name} if name is not None else None

    def decode(
        self, body: bytes, headers: dict[bytes, bytes], signature: Signature
    ) -> tuple[Arrays, Any]:
        return jsonproto.decode(jsonproto.load_json(body), signature)

    def encode(
        self, params: Params, variant: VariantRoute, result: Result, context: Any
    ) -> tuple[bytes, Headers]:
        return jsonproto.encode(result.outputs, bool(context), variant.signature), JSON_HEADERS


class V2Protocol(InferenceProtocol):
    """``POST /v2/models/{name}[/versions/{v}]/infer``: Open Inference Protocol v2."""

    name = "v2"
    wanted_headers = (_V2_LENGTH,)

    def match(self, path: str) -> Params | None:
        if not (path.startswith("/v2/models/") and path.endswith("/infer")):
            return None
        rest = path[len("/v2/models/") : -len("/infer")]
        name, _, version = rest.partition("/versions/")
        if not name or "/" in name or (version and not _is_version(version)):
            return None
        return {"name": name, "version": int(version) if version else None}

    def select(self, route: Route, params: Params, headers: dict[bytes, bytes]) -> VariantRoute:
        version = params["version"]
        if version is None:
            return route.choose()
        found = route.for_version(version)
        if found is None:
            served = ", ".join(str(v.spec.version) for v in route.variants)
            raise VersionNotFound(
                f"endpoint {params['name']!r} does not serve version {version} "
                f"(it serves: {served})"
            )
        return found

    def decode(
        self, body: bytes, headers: dict[bytes, bytes], signature: Signature
    ) -> tuple[Arrays, Any]:
        request, tail = v2.parse_request(body, v2.header_length(headers.get(_V2_LENGTH)))
        arrays = v2.decode_inputs(request, tail, signature)
        names, binary = v2.requested_outputs(request, signature)
        return arrays, (request.get("id"), names, binary)

    def encode(
        self, params: Params, variant: VariantRoute, result: Result, context: Any
    ) -> tuple[bytes, Headers]:
        request_id, names, binary = context
        payload, out_headers = v2.encode_response(
            params["name"],
            variant.spec.version,
            request_id,
            result.outputs,
            names,
            binary,
            variant.signature,
        )
        return payload, [(k.encode(), v.encode()) for k, v in out_headers.items()]


class AsyncProtocol(Protocol):
    """``POST /v1/endpoints/{name}/async``: the body streams to the store; 202 and a job id."""

    name = "async"
    wanted_headers = (b"idempotency-key", b"x-callback-url")

    def __init__(self, service: Any) -> None:
        self.service = service

    def match(self, path: str) -> Params | None:
        name = _between(path, "/v1/endpoints/", "/async")
        return {"name": name} if name is not None else None

    async def serve(self, call: Call) -> Answer:
        status, body = await self.service.submit(
            call.params["name"], call.scope, call.receive, call.headers
        )
        return Answer(status, orjson.dumps(body), list(JSON_HEADERS))
