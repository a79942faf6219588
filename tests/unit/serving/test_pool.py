"""The dispatch pool with in-process replicas: every failure fails its batch only."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.unit.fakes import FakeBackend, FakeReplica, doubling, rows
from zeroserve.errors import BadModelOutput, ModelError, ReplicaHung, ZeroserveError
from zeroserve.metrics import Metrics
from zeroserve.serving.handle import VariantDeployment
from zeroserve.serving.pool import Pool
from zeroserve.serving.scaling_pool import ScalingPool
from zeroserve.types import Arrays, ScalingSpec, VariantSpec

SPEC = VariantSpec(name="a", model="m", version=1, max_batch_size=64)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())  # type: ignore[arg-type]


def pool_with(model: Any, **kwargs: Any) -> tuple[Pool, FakeReplica]:
    pool = Pool("e", SPEC, Metrics().for_variant("e", "a"), **kwargs)
    replica = FakeReplica(model)
    pool.add_replica(replica)
    return pool, replica


async def many(pool: Pool, inputs: list[Arrays]) -> list[Any]:
    return await asyncio.gather(
        *(pool.submit(a, len(a["x"]), timeout_s=5) for a in inputs), return_exceptions=True
    )


def test_merged_batches_give_every_client_its_own_rows() -> None:
    async def scenario() -> None:
        pool, replica = pool_with(doubling)
        inputs = [rows(1 + i % 3, start=100.0 * i) for i in range(60)]
        results = await many(pool, inputs)
        for arrays, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs["y"], arrays["x"] * 2)
        assert max(replica.batches) > 1  # they really were batched together

    run(scenario)


def test_a_model_that_drops_a_row_of_a_merged_batch_is_retried_alone() -> None:
    def drops_one(arrays: Arrays) -> Arrays:
        x = arrays["x"]
        return {"y": (x * 2)[: len(x) - 1] if len(x) > 1 else x * 2}

    async def scenario() -> None:
        pool, replica = pool_with(drops_one)
        inputs = [rows(1, start=float(i)) for i in range(60)]
        results = await many(pool, inputs)
        for arrays, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs["y"], arrays["x"] * 2)
        assert max(replica.batches) > 1

    run(scenario)


def test_a_scalar_or_short_answer_is_a_502_naming_the_model_never_a_200() -> None:
    async def scenario() -> None:
        pool, _ = pool_with(lambda a: {"y": np.float32(1.0)})
        with pytest.raises(BadModelOutput, match=r"model m v1 returned a scalar for output 'y'"):
            await pool.submit(rows(3), 3, timeout_s=5)
        pool2, _ = pool_with(lambda a: {"y": a["x"][:1]})
        with pytest.raises(BadModelOutput, match=r"1 row\(s\) of output 'y' for 3 input row"):
            await pool2.submit(rows(3), 3, timeout_s=5)
        assert BadModelOutput.status_code == 502

    run(scenario)


def test_requests_whose_free_dimensions_differ_are_batched_separately() -> None:
    seen: list[tuple[int, ...]] = []

    def model(arrays: Arrays) -> Arrays:
        seen.append(arrays["x"].shape)
        return {"y": arrays["x"].sum(axis=1)}

    async def scenario() -> None:
        pool, _ = pool_with(model)
        inputs = [rows(1, width=3 if i % 2 else 4, start=float(i)) for i in range(20)]
        results = await many(pool, inputs)
        for arrays, result in zip(inputs, results, strict=True):
            np.testing.assert_allclose(result.outputs["y"], arrays["x"].sum(axis=1))
        assert {shape[1] for shape in seen} == {3, 4}
        assert all(n >= 1 for n, _ in seen)

    run(scenario)


def test_an_exception_in_the_replica_call_fails_that_batch_and_the_loop_goes_on() -> None:
    calls = {"n": 0}

    def flaky(arrays: Arrays) -> Arrays:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("channel broke while sending")
        return doubling(arrays)

    async def scenario() -> None:
        pool, _ = pool_with(flaky)
        with pytest.raises(ZeroserveError, match="could not serve this batch"):
            await pool.submit(rows(2), 2, timeout_s=5)
        result = await pool.submit(rows(2, start=5.0), 2, timeout_s=5)  # same replica, still up
        np.testing.assert_array_equal(result.outputs["y"], rows(2, start=5.0)["x"] * 2)

    run(scenario)


def test_a_model_error_fails_only_the_bad_request_of_a_batch() -> None:
    def picky(arrays: Arrays) -> Arrays | str:
        if (arrays["x"] < 0).any():
            return "ValueError: negative input"
        return doubling(arrays)

    async def scenario() -> None:
        pool, _ = pool_with(picky)
        inputs = [rows(1, start=-50.0 if i == 7 else float(i)) for i in range(20)]
        results = await many(pool, inputs)
        for i, result in enumerate(results):
            if i == 7:
                assert isinstance(result, ModelError)
                assert "negative input" in result.message
            else:
                np.testing.assert_array_equal(result.outputs["y"], inputs[i]["x"] * 2)

    run(scenario)


def test_a_hung_replica_is_killed_at_its_batch_deadline_with_a_503() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        pool, replica = pool_with(lambda a: loop.create_future(), batch_deadline_s=0.2)
        with pytest.raises(ReplicaHung, match=r"did not answer one batch within 0\.2 s"):
            await pool.submit(rows(1), 1, timeout_s=5)
        assert replica.killed is not None and "hung" in replica.killed

    run(scenario)


def test_a_dispatch_loop_that_ends_unexpectedly_is_replaced() -> None:
    async def scenario() -> None:
        backend = FakeBackend()
        deployment = VariantDeployment(
            "e", SPEC.model_copy(update={"scaling": ScalingSpec(min_replicas=1)}), Path()
        )
        pool = ScalingPool(deployment, backend, Metrics().for_variant("e", "a"))
        await pool.start()
        assert len(backend.started) == 1
        original_take = pool._take
        state = {"broken": True}

        def broken_take() -> Any:
            if state["broken"]:
                state["broken"] = False
                raise RuntimeError("bug in the batcher")
            return original_take()

        pool._take = broken_take  # type: ignore[method-assign]
        result = await pool.submit(rows(1, start=3.0), 1, timeout_s=5)
        np.testing.assert_array_equal(result.outputs["y"], rows(1, start=3.0)["x"] * 2)
        assert len(backend.started) == 2  # the first loop died; a new replica took over
        assert backend.started[0].closing and not backend.started[1].closing
        await pool.stop()

    run(scenario)


def test_shadow_pools_meter_compute_but_no_requests() -> None:
    recorded: list[Any] = []

    class Sink:
        def record(self, rec: Any) -> None:
            recorded.append(rec)

    async def scenario() -> None:
        pool, _ = pool_with(doubling, shadow=True)
        pool.meter = Sink()
        await pool.submit(rows(2), 2, timeout_s=5)
        assert recorded[0].requests == 0 and recorded[0].rows == 0
        assert recorded[0].compute_s > 0

    run(scenario)


def test_a_batch_taken_by_a_replica_retired_before_sending_goes_to_another() -> None:
    class RetiredMidway(FakeReplica):
        async def predict(self, arrays: Arrays) -> Any:
            self.retire()  # scale-down lands between taking the batch and sending it
            return await super().predict(arrays)

    async def scenario() -> None:
        pool = Pool("e", SPEC, Metrics().for_variant("e", "a"))
        leaving, staying = RetiredMidway(), FakeReplica()
        pool.add_replica(leaving)
        inputs = [rows(1, start=float(i)) for i in range(8)]
        pending = asyncio.ensure_future(many(pool, inputs))
        await asyncio.sleep(0)
        pool.add_replica(staying)
        results = await asyncio.wait_for(pending, 5)
        for arrays, result in zip(inputs, results, strict=True):
            np.testing.assert_array_equal(result.outputs["y"], arrays["x"] * 2)
        assert leaving.batches == [] and sum(staying.batches) == 8

    run(scenario)
