import asyncio

import numpy as np
import pytest

from zeroserve.monitor.shadow import ShadowComparison, ShadowQueue
from zeroserve.types import Arrays


def classifier(p1: np.ndarray) -> Arrays:
    proba = np.stack([1 - p1, p1], axis=1)
    return {"label": (p1 > 0.5).astype(np.int64), "probabilities": proba}


def test_comparison_reports_known_disagreement_rate() -> None:
    rng = np.random.default_rng(1)
    cmp = ShadowComparison()
    flipped = 0
    total = 0
    for _ in range(200):
        p = rng.random(10)
        q = p.copy()
        flip = rng.random(10) < 0.1
        q[flip] = 1 - q[flip]  # label flips where p != 0.5
        flipped += int(flip.sum())
        total += 10
        cmp.observe(classifier(p), classifier(q))
    report = cmp.report()
    agreement = report["label_agreement"]
    assert agreement["rows"] == total
    assert agreement["rate"] == pytest.approx(1 - flipped / total)
    low, high = agreement["ci95"]
    assert low < agreement["rate"] < high
    assert report["score_difference"]["mean_abs"] > 0


def test_regressor_differences_are_a_distribution() -> None:
    cmp = ShadowComparison()
    base = np.linspace(0, 10, 1000)
    cmp.observe({"prediction": base}, {"prediction": base + 0.5})
    diff = cmp.report()["score_difference"]
    assert diff["mean_abs"] == pytest.approx(0.5)
    assert diff["quantiles"]["p50"] == pytest.approx(0.5, rel=0.02)
    assert "label_agreement" not in cmp.report()


def test_comparisons_merge_and_round_trip() -> None:
    a, b = ShadowComparison(), ShadowComparison()
    a.observe({"prediction": np.zeros(3)}, {"prediction": np.ones(3)})
    b.observe({"prediction": np.zeros(2)}, {"prediction": np.full(2, 3.0)})
    a.merge(ShadowComparison.from_dict(b.to_dict()))
    assert a.report()["score_difference"]["mean_abs"] == pytest.approx((3 + 6) / 5)


def test_queue_drops_when_full_and_a_failing_shadow_is_counted() -> None:
    async def main() -> None:
        release = asyncio.Event()
        calls = 0

        async def send(endpoint: str, shadow: str, inputs: Arrays) -> Arrays:
            nonlocal calls
            calls += 1
            await release.wait()
            if calls % 2:
                raise RuntimeError("shadow crashed")
            return {"prediction": inputs["x"] + 1}

        queue = ShadowQueue(send, max_queue=4, workers=1)
        queue.start()
        x = {"x": np.zeros(2)}
        primary = {"prediction": np.zeros(2)}
        offered = [queue.offer("e", "s", x, primary) for _ in range(10)]
        # One copy is taken by the worker at the first await; four wait; the rest drop.
        await asyncio.sleep(0)
        offered += [queue.offer("e", "s", x, primary) for _ in range(3)]
        assert sum(offered) == 5
        dropped = queue.dropped[("e", "s")]
        assert dropped == 8
        release.set()
        await asyncio.wait_for(queue.drain(), 10)
        report = queue.report("e")["s"]
        assert report["dropped"] == dropped
        assert report["shadow_errors"] + report["requests_compared"] == sum(offered)
        assert report["shadow_errors"] > 0
        await queue.stop()

    asyncio.run(main())


def test_rate_samples_copies() -> None:
    async def send(endpoint: str, shadow: str, inputs: Arrays) -> Arrays:
        return inputs

    async def main() -> None:
        draws = iter([0.1, 0.9, 0.2, 0.8])
        queue = ShadowQueue(send, draw=lambda: next(draws))
        queue.set_rate("e", "s", 0.5)
        got = [queue.offer("e", "s", {}, {}) for _ in range(4)]
        assert got == [True, False, True, False]
        with pytest.raises(ValueError):
            queue.set_rate("e", "s", 2.0)

    asyncio.run(main())
