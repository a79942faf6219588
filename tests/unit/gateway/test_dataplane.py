"""The data plane as an ASGI app over in-process pools: protocols, headers, outcomes, shadow."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import numpy as np
import orjson

from tests.unit.control.test_controller import SIGNATURE, FakeRegistry
from tests.unit.fakes import FakeReplica, doubling
from zeroserve.control.policy import cumulative
from zeroserve.control.routes import Route, VariantRoute
from zeroserve.gateway.dataplane import DataPlane
from zeroserve.gateway.inference import JsonProtocol, V2Protocol
from zeroserve.gateway.protocol import SSE_HEADERS, Answer, Call, Params, Protocol, sse
from zeroserve.metrics import Metrics
from zeroserve.outcomes import Outcomes
from zeroserve.serving.pool import Pool
from zeroserve.settings import Settings
from zeroserve.types import Arrays, EndpointSpec, VariantSpec

Sent = list[dict[str, Any]]


class Table:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}


def variant_route(metrics: Metrics, name: str, version: int, model: Any) -> VariantRoute:
    spec = VariantSpec(name=name, model="m", version=version)
    pool = Pool("fraud", spec, metrics.for_variant("fraud", name))
    pool.add_replica(FakeReplica(model))
    info = FakeRegistry().get_version("m", version)
    return VariantRoute(spec, info, pool, pool.metrics, SIGNATURE)


def build(shadow_model: Any = None, protocols: list[Protocol] | None = None) -> DataPlane:
    metrics = Metrics()
    primary = variant_route(metrics, "v1", 1, doubling)
    shadow = variant_route(metrics, "s", 2, shadow_model) if shadow_model else None
    spec = EndpointSpec(
        name="fraud", variants=[primary.spec], shadow=shadow.spec if shadow else None
    )
    table = Table()
    table.routes["fraud"] = Route(spec, [primary], cumulative([1.0]), shadow)

    async def fallback(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"fallback"})

    return DataPlane(
        table,
        Settings(),
        metrics,
        fallback,
        Outcomes(),
        protocols if protocols is not None else [JsonProtocol(), V2Protocol()],
    )


async def call(
    app: DataPlane, path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, bytes], bytes, Sent]:
    sent: Sent = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}
    await app(scope, receive, send)
    start = sent[0]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), payload, sent


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


INSTANCES = orjson.dumps({"instances": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]})


def test_json_route_answers_with_request_id_and_variant() -> None:
    async def scenario() -> None:
        app = build()
        status, headers, body, _ = await call(app, "/v1/endpoints/fraud/invocations", INSTANCES)
        assert status == 200
        assert orjson.loads(body) == {"predictions": [[2.0, 4.0, 6.0], [8.0, 10.0, 12.0]]}
        assert headers[b"x-zeroserve-variant"] == b"v1"
        assert headers[b"x-request-id"]
        own = [(b"x-request-id", b"client-42")]
        _, headers2, _, _ = await call(app, "/v1/endpoints/fraud/invocations", INSTANCES, own)
        assert headers2[b"x-request-id"] == b"client-42"
        _, headers3, _, _ = await call(app, "/v1/endpoints/fraud/invocations", INSTANCES)
        assert headers3[b"x-request-id"] != headers[b"x-request-id"]

    run(scenario)


def test_errors_are_json_counted_per_variant_with_their_cause() -> None:
    async def scenario() -> None:
        app = build()
        bad = orjson.dumps({"instances": [[1.0, 2.0]]})  # two features where three are expected
        status, headers, body, _ = await call(app, "/v1/endpoints/fraud/invocations", bad)
        assert status == 422 and headers[b"content-type"] == b"application/json"
        assert orjson.loads(body)["code"] == "invalid_input"
        assert headers[b"x-zeroserve-variant"] == b"v1"
        status, _, body, _ = await call(app, "/v1/endpoints/nope/invocations", INSTANCES)
        assert status == 404 and b"no endpoint named 'nope'" in body
        await call(app, "/v1/endpoints/fraud/invocations", INSTANCES)
        stats = {s.variant: s for s in app.outcomes.stats("fraud")}
        window = stats["v1"].windows["1m"]
        assert window.requests == 2 and window.client_errors == 1 and window.errors == 0
        assert window.by_cause == {"invalid_input": 1}
        assert window.p50_ms is not None

    run(scenario)


def test_unmatched_paths_fall_through_and_v2_is_an_entry_like_json() -> None:
    async def scenario() -> None:
        app = build()
        status, _, body, _ = await call(app, "/api/models", b"")
        assert (status, body) == (404, b"fallback")
        v2 = orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
        )
        status, _, body, _ = await call(app, "/v2/models/fraud/versions/1/infer", v2)
        assert status == 200 and orjson.loads(body)["outputs"][0]["data"] == [2.0, 4.0, 6.0]
        status, _, body, _ = await call(app, "/v2/models/fraud/versions/7/infer", v2)
        assert status == 404 and b"does not serve version 7" in body

    run(scenario)


def test_the_shadow_gets_a_copy_but_never_answers_and_never_fails_the_primary() -> None:
    seen: list[Arrays] = []

    def failing_shadow(arrays: Arrays) -> Arrays:
        seen.append(arrays)
        raise RuntimeError("the shadow is broken")

    async def scenario() -> None:
        app = build(shadow_model=failing_shadow)
        for _ in range(5):
            status, headers, body, _ = await call(app, "/v1/endpoints/fraud/invocations", INSTANCES)
            assert status == 200 and headers[b"x-zeroserve-variant"] == b"v1"
            assert orjson.loads(body)["predictions"][0] == [2.0, 4.0, 6.0]
        for _ in range(50):
            if len(seen) == 5:
                break
            await asyncio.sleep(0.01)
        assert len(seen) == 5
        np.testing.assert_array_equal(seen[0]["x"], [[1, 2, 3], [4, 5, 6]])
        stats = {s.variant: s for s in app.outcomes.stats("fraud")}
        assert stats["s"].role == "shadow" and stats["s"].windows["1m"].errors == 5
        assert stats["v1"].windows["1m"].errors == 0

    run(scenario)


class Ticker(Protocol):
    """A protocol that streams server-sent events (as an OpenAI-style route would)."""

    name = "ticker"
    method = "POST"

    def match(self, path: str) -> Params | None:
        return {} if path == "/v1/ticks" else None

    async def serve(self, call: Call) -> Answer:
        count = int(orjson.loads(await call.read_body())["n"])

        async def events() -> AsyncIterator[bytes]:
            for i in range(count):
                yield sse({"tick": i})
            yield sse(b"[DONE]")

        return Answer(200, events(), list(SSE_HEADERS))


def test_any_protocol_can_stream_its_answer() -> None:
    async def scenario() -> None:
        app = build(protocols=[JsonProtocol(), Ticker()])
        status, headers, body, sent = await call(app, "/v1/ticks", b'{"n": 3}')
        assert status == 200 and headers[b"content-type"] == b"text/event-stream"
        assert b"content-length" not in headers
        chunks = [m for m in sent[1:] if m.get("more_body")]
        assert len(chunks) == 4 and sent[-1] == {"type": "http.response.body", "body": b""}
        assert body.split(b"\n\n")[:4] == [
            b'data: {"tick":0}',
            b'data: {"tick":1}',
            b'data: {"tick":2}',
            b"data: [DONE]",
        ]

    run(scenario)
