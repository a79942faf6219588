"""The controller over a fake backend and registry: failed deploys, locks, managers, demand."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.fakes import FakeBackend, rows
from zeroserve.control.controller import Controller
from zeroserve.errors import NoReplicaAvailable
from zeroserve.metrics import Metrics
from zeroserve.settings import Settings
from zeroserve.types import (
    EndpointSpec,
    Flavor,
    ModelVersionInfo,
    Signature,
    Stage,
    TensorSpec,
    VariantSpec,
)

SIGNATURE = Signature(
    inputs=[TensorSpec(name="x", dtype="float32", shape=[-1, 3])],
    outputs=[TensorSpec(name="y", dtype="float32", shape=[-1, 3])],
)


class FakeRegistry:
    def __init__(self) -> None:
        self.endpoints: list[EndpointSpec] = []
        self.sessions = None

    def list_endpoints(self) -> list[EndpointSpec]:
        return list(self.endpoints)

    def get_version(self, model: str, version: int) -> ModelVersionInfo:
        return ModelVersionInfo(
            model=model,
            version=version,
            flavor=Flavor.ONNX,
            signature=SIGNATURE,
            stage=Stage.NONE,
            artifact_uri="file:///nowhere",
            created_at=0.0,
        )

    def artifact_dir(self, version: ModelVersionInfo) -> Path:
        return Path("/nowhere")


def endpoint(name: str, *weights: float, shadow: bool = False) -> EndpointSpec:
    variants = [
        VariantSpec(name=f"v{i + 1}", model="m", version=i + 1, weight=w)
        for i, w in enumerate(weights or (1.0,))
    ]
    return EndpointSpec(
        name=name,
        variants=variants,
        shadow=VariantSpec(name="s", model="m", version=9) if shadow else None,
    )


def controller(
    tmp_path: Path, backend: FakeBackend | None = None, **settings: Any
) -> tuple[Controller, FakeRegistry, FakeBackend]:
    registry = FakeRegistry()
    backend = backend or FakeBackend()
    ctl = Controller(
        registry,  # type: ignore[arg-type]
        Settings(data_dir=tmp_path, **settings),
        Metrics(),
        backend,
    )
    return ctl, registry, backend


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def test_a_failed_deploy_is_visible_and_retried_with_backoff(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctl, registry, backend = controller(tmp_path, reconcile_interval_s=0.05)
        backend.prepare_error["bad"] = NoReplicaAvailable("model bad failed to load: boom")
        registry.endpoints = [endpoint("bad"), endpoint("good")]
        await ctl.start()
        await asyncio.wait_for(ctl.loaded.wait(), 5)
        assert "good" in ctl.routes and "bad" not in ctl.routes
        status = ctl.describe("bad")
        assert status["state"] == "failed" and "boom" in status["error"]
        assert ctl.readiness() == {
            "status": "ready",
            "endpoints": ["bad", "good"],
            "ready": ["good"],
            "loading": [],
            "failed": ["bad"],
        }
        first = ctl.endpoints["bad"].attempts
        del backend.prepare_error["bad"]  # the cause goes away: a retry brings it up
        deadline = time.monotonic() + 10
        while "bad" not in ctl.routes and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert "bad" in ctl.routes and first >= 1
        assert ctl.describe("bad")["state"] == "ready"
        await ctl.stop()

    run(scenario)


def test_a_slow_model_load_does_not_block_another_deploy(tmp_path: Path) -> None:
    async def scenario() -> None:
        ctl, _, backend = controller(tmp_path)
        backend.prepare_gate["slow"] = asyncio.Event()
        slow = asyncio.ensure_future(ctl.apply(endpoint("slow")))
        await asyncio.sleep(0.05)
        route = await asyncio.wait_for(ctl.apply(endpoint("fast")), 2)
        result = await route.variants[0].pool.submit(rows(1), 1, timeout_s=2)
        np.testing.assert_array_equal(result.outputs["y"], rows(1)["x"] * 2)
        assert not slow.done() and ctl.readiness()["loading"] == ["slow"]
        backend.prepare_gate["slow"].set()
        await asyncio.wait_for(slow, 2)
        assert set(ctl.routes) == {"slow", "fast"}
        await ctl.stop()

    run(scenario)


def test_a_slow_manager_never_delays_the_autoscaler_or_the_memory_check(tmp_path: Path) -> None:
    ticks: dict[str, list[float]] = {"autoscaler": [], "memory": []}

    async def slow_webhooks() -> None:
        await asyncio.sleep(5.0)  # a receiver that takes 5 s per call

    async def scenario() -> None:
        ctl, _, _ = controller(tmp_path, autoscale_interval_s=0.1, memory_check_interval_s=0.1)
        real_autoscale, real_memory = ctl.autoscale, ctl._check_memory

        async def autoscale() -> None:
            ticks["autoscaler"].append(time.monotonic())
            await real_autoscale()

        async def memory() -> None:
            ticks["memory"].append(time.monotonic())
            await real_memory()

        ctl.autoscale = autoscale  # type: ignore[method-assign]
        ctl._check_memory = memory  # type: ignore[method-assign]
        ctl.managers.append(("webhooks", 0.1, slow_webhooks))
        await ctl.start()
        await asyncio.sleep(1.0)
        await ctl.stop()
        for name, times in ticks.items():
            gaps = np.diff(times)
            assert len(times) >= 8, name
            assert gaps.max() < 0.2, f"{name} waited {gaps.max():.2f} s between ticks"

    run(scenario)


def test_queued_jobs_are_demand_for_variants_by_weight_and_never_the_shadow(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        ctl, _, _ = controller(tmp_path)
        ctl.queued_jobs = lambda name: 100 if name == "ab" else 0
        route = await ctl.apply(endpoint("ab", 3.0, 1.0, shadow=True))
        demand = {v.spec.name: ctl.queued_jobs_for(v.pool) for v in route.all_variants()}  # type: ignore[arg-type]
        assert demand == {"v1": 75, "v2": 25, "s": 0}
        await ctl.stop()

    run(scenario)


def test_realtime_endpoints_must_keep_a_replica() -> None:
    with pytest.raises(ValueError, match="min_replicas 0; use mode serverless"):
        EndpointSpec(
            name="r",
            variants=[
                VariantSpec(name="v1", model="m", version=1, scaling={"min_replicas": 0})  # type: ignore[arg-type]
            ],
        )
    with pytest.raises(ValueError, match="min_replicas \\(3\\) is above max_replicas \\(2\\)"):
        VariantSpec(name="v1", model="m", version=1, scaling={"min_replicas": 3})  # type: ignore[arg-type]
