"""A secondary gateway's mirror of the routing state (no processes: no replicas listed)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from zeroserve.backends.local import LocalBackend
from zeroserve.errors import NoReplicaAvailable
from zeroserve.gateway.mirror import Mirror, UsageBuffer, usage_records
from zeroserve.metrics import Metrics
from zeroserve.types import UsageRecord

SIGNATURE = {"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3]}], "outputs": []}


def variant(name: str, version: int, weight: float) -> dict[str, Any]:
    return {
        "key": f"fraud\x1f{name}\x1fforest\x1f{version}",
        "spec": {"name": name, "model": "forest", "version": version, "weight": weight},
        "version": {
            "model": "forest",
            "version": version,
            "flavor": "onnx",
            "signature": SIGNATURE,
            "stage": "production",
            "artifact_uri": "file:///nowhere",
            "created_at": 0.0,
        },
        "last_error": None,
        "replicas": [],
    }


def state(*routes: dict[str, Any]) -> dict[str, Any]:
    return {"op": "state", "version": 1, "routes": list(routes)}


FRAUD = {
    "spec": {
        "name": "fraud",
        "variants": [
            {"name": "a", "model": "forest", "version": 1, "weight": 3.0},
            {"name": "b", "model": "forest", "version": 2, "weight": 1.0},
        ],
    },
    "variants": [variant("a", 1, 3.0), variant("b", 2, 1.0)],
    "shadow": None,
}


def test_routes_follow_the_state_and_cold_requests_ask_for_a_replica() -> None:
    sent: list[dict[str, Any]] = []

    async def scenario() -> None:
        mirror = Mirror(Metrics(), sent.append, LocalBackend())
        mirror.apply(state(FRAUD))
        route = mirror.routes["fraud"]
        assert [v.spec.name for v in route.variants] == ["a", "b"]
        assert route.choose(0.7).spec.name == "a" and route.choose(0.8).spec.name == "b"
        assert route.variants[1].signature.inputs[0].shape == [-1, 3]

        mirror.apply(state(FRAUD))
        assert mirror.routes["fraud"] is route  # unchanged endpoint: same route, same counts

        pool = route.variants[0].pool
        waiting = asyncio.ensure_future(
            pool.submit({"input": np.zeros((1, 3), np.float32)}, 1, timeout_s=5)
        )
        await asyncio.sleep(0)
        assert sent == [{"op": "wake", "key": "fraud\x1fa\x1fforest\x1f1"}]
        assert mirror.report()["fraud\x1fa\x1fforest\x1f1"][:2] == [1, 1]  # in flight, queued

        mirror.apply(state())  # the endpoint was deleted
        assert mirror.routes == {}
        with pytest.raises(NoReplicaAvailable, match="was removed"):
            await waiting

    asyncio.run(scenario())


def test_usage_is_summed_per_variant_and_survives_the_trip() -> None:
    buffer = UsageBuffer()
    for cold in (1, 0, 0):
        buffer.record(UsageRecord("fraud", "a", 2, 2, 0.5, 100, 10, cold))
    buffer.record(UsageRecord("fraud", "b", 1, 4, 0.25, 40, 4, 0))
    records = {r.variant: r for r in usage_records(buffer.drain())}
    assert records["a"] == UsageRecord("fraud", "a", 6, 6, 1.5, 300, 30, 1)
    assert records["b"] == UsageRecord("fraud", "b", 1, 4, 0.25, 40, 4, 0)
    assert buffer.drain() == []
