"""The rollout manager over a real SQLite registry, with a recording ``apply`` and
outcomes fed to the recorder as the data plane would."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from zeroserve.control.rollout import RolloutPlan
from zeroserve.control.rollout_manager import RolloutManager
from zeroserve.control.rollout_stats import OutcomeRecorder
from zeroserve.errors import Conflict, NotFound
from zeroserve.registry.registry import Registry
from zeroserve.types import EndpointSpec, Signature, Stage, TensorSpec, VariantSpec

SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float32", shape=[-1, 3])],
    outputs=[TensorSpec(name="prediction", dtype="float32", shape=[-1])],
)
PLAN = RolloutPlan(steps=(10, 50, 100), bake_s=5, min_requests=20)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry.open(f"sqlite:///{tmp_path / 'registry.db'}", (tmp_path / "artifacts").as_uri())
    for content in ("one", "two"):
        d = tmp_path / f"art-{content}"
        d.mkdir()
        (d / "model.onnx").write_text(content)
        reg.register_version("fraud", d, flavor="onnx", signature=SIG)
    reg.put_endpoint(
        EndpointSpec(name="e", variants=[VariantSpec(name="v1", model="fraud", version=1)])
    )
    yield reg
    reg.engine.dispose()


def make(registry: Registry, clock: Clock) -> tuple[RolloutManager, list[EndpointSpec]]:
    applied: list[EndpointSpec] = []

    async def apply(spec: EndpointSpec) -> None:
        applied.append(spec)

    return RolloutManager(registry, apply, OutcomeRecorder(), clock=clock), applied


def traffic(mgr: RolloutManager, rng: np.random.Generator, n: int, canary_error: float) -> None:
    baseline, canary = mgr.canaries["e"]
    weight = {v.name: v.weight for v in mgr.registry.get_endpoint("e").variants}
    for _ in range(n):
        on_canary = rng.random() * 100 < weight[canary]
        variant = canary if on_canary else baseline
        failed = on_canary and rng.random() < canary_error
        status = 500 if failed else 200
        outputs = None if failed else {"prediction": rng.normal(size=1)}
        mgr.recorder.observe("e", variant, status, float(rng.lognormal(0, 0.3)), outputs)


def weights(registry: Registry) -> dict[str, float]:
    return {v.name: v.weight for v in registry.get_endpoint("e").variants}


def test_start_puts_the_canary_last_at_the_first_step_and_refuses_a_second(
    registry: Registry,
) -> None:
    async def main() -> None:
        mgr, applied = make(registry, Clock())
        info = await mgr.start("e", "fraud", "2", PLAN)
        assert (info["baseline"], info["canary"], info["state"]) == ("v1", "v2", "running")
        assert [v.name for v in registry.get_endpoint("e").variants] == ["v1", "v2"]
        assert weights(registry) == {"v1": 90.0, "v2": 10.0}
        assert applied[-1] == registry.get_endpoint("e")
        with pytest.raises(Conflict, match="already has a rollout"):
            await mgr.start("e", "fraud", "2", PLAN)
        aborted = await mgr.abort("e")
        assert aborted["state"] == "aborted"
        assert weights(registry) == {"v1": 100.0, "v2": 0.0}
        with pytest.raises(NotFound):
            await mgr.abort("e")

    asyncio.run(main())


def test_broken_canary_is_rolled_back_with_the_guard_named(registry: Registry) -> None:
    async def main() -> None:
        clock = Clock()
        mgr, _ = make(registry, clock)
        await mgr.start("e", "fraud", "2", PLAN)
        rng = np.random.default_rng(1)
        for _ in range(20):
            traffic(mgr, rng, 100, canary_error=0.3)
            clock.now += 0.25
            await mgr.tick()
            if mgr.status("e")["state"] != "running":
                break
        status = mgr.status("e")
        assert (status["state"], status["fired"]) == ("rolled_back", "error_rate")
        assert "error rate" in status["reason"]
        assert weights(registry) == {"v1": 100.0, "v2": 0.0}
        assert status["decisions"][-1]["action"] == "rollback"
        assert registry.get_version("fraud", 2).stage == Stage.NONE

    asyncio.run(main())


def test_good_canary_is_promoted_through_every_step(registry: Registry) -> None:
    async def main() -> None:
        clock = Clock()
        mgr, _ = make(registry, clock)
        await mgr.start("e", "fraud", "2", PLAN)
        rng = np.random.default_rng(2)
        seen = []
        for _ in range(200):
            traffic(mgr, rng, 50, canary_error=0.0)
            clock.now += 0.5
            await mgr.tick()
            status = mgr.status("e")
            seen.append(status["canary_weight"])
            if status["state"] != "running":
                break
        assert status["state"] == "promoted"
        assert sorted(set(seen)) == [10.0, 50.0, 100.0]
        assert weights(registry) == {"v1": 0.0, "v2": 100.0}
        assert registry.get_version("fraud", 2).stage == Stage.PRODUCTION

    asyncio.run(main())


def test_a_new_manager_resumes_a_running_rollout(registry: Registry) -> None:
    async def main() -> None:
        clock = Clock()
        mgr, _ = make(registry, clock)
        await mgr.start("e", "fraud", "2", PLAN)
        rng = np.random.default_rng(3)
        traffic(mgr, rng, 600, canary_error=0.0)
        clock.now += 6
        await mgr.tick()
        before = mgr.status("e")
        assert before["step"] == 1 and before["requests"]["canary"] > 0

        again, _ = make(registry, clock)  # a restarted server: new recorder, same database
        await again.tick()
        after = again.status("e")
        assert (after["state"], after["step"]) == ("running", 1)
        assert after["requests"] == before["requests"]
        assert again.canaries["e"] == ("v1", "v2")
        traffic(again, rng, 200, canary_error=0.3)
        clock.now += 0.5
        await again.tick()
        assert again.status("e")["requests"]["canary"] > before["requests"]["canary"]

    asyncio.run(main())
