import numpy as np
import pytest

from zeroserve.control.assignment import choose, key_point, request_key, retry_on_baseline
from zeroserve.control.policy import cumulative
from zeroserve.control.rollout_stats import OutcomeRecorder
from zeroserve.control.traffic import parse_weight_args, set_traffic
from zeroserve.errors import BadRequest, VersionNotFound
from zeroserve.types import EndpointSpec, VariantSpec


def test_a_key_keeps_its_variant_as_the_canary_weight_rises() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    on_canary: dict[int, set[str]] = {}
    for weight in (5, 10, 25, 50, 100):
        cum = cumulative([100 - weight, weight])
        on_canary[weight] = {k for k in keys if choose("fraud", cum, k, 0.0) == 1}
    assert on_canary[5] <= on_canary[10] <= on_canary[25] <= on_canary[50] <= on_canary[100]
    assert len(on_canary[100]) == 5000
    # Shares follow the weights within a binomial tolerance (4 sigma).
    for weight in (5, 10, 25, 50):
        p = weight / 100
        assert abs(len(on_canary[weight]) - 5000 * p) < 4 * np.sqrt(5000 * p * (1 - p))


def test_points_are_stable_and_differ_by_endpoint() -> None:
    assert key_point("a", "k") == key_point("a", "k")
    assert key_point("a", "k") != key_point("b", "k")
    assert 0 <= key_point("a", "k") < 1
    assert choose("a", [0.5, 1.0], None, 0.7) == 1  # no key: the draw decides


def test_request_key_from_header_or_field() -> None:
    assert request_key({b"x-zeroserve-key": b"u1"}) == "u1"
    assert request_key({}, {"customer": 42}, "customer") == "42"
    assert request_key({}, {"customer": [1]}, "customer") is None
    assert request_key({}) is None


def test_retry_only_canary_5xx_during_a_rollout() -> None:
    assert retry_on_baseline(503, "v2", "v2", True)
    assert not retry_on_baseline(422, "v2", "v2", True)  # bad input fails everywhere
    assert not retry_on_baseline(500, "v1", "v2", True)  # already the baseline
    assert not retry_on_baseline(500, "v2", None, True)  # no rollout
    assert not retry_on_baseline(500, "v2", "v2", False)  # not repeatable


def test_set_traffic_adds_versions_and_validates() -> None:
    spec = EndpointSpec(
        name="e", variants=[VariantSpec(name="v3", model="fraud", version=3, max_batch_size=8)]
    )

    def resolve(model: str, ref: str) -> int:
        if ref not in ("3", "4"):
            raise VersionNotFound(f"model {model!r} has no version {ref!r}")
        return int(ref)

    out = set_traffic(spec, parse_weight_args(["fraud:3=90", "fraud:4=10"]), resolve)
    assert [(v.name, v.version, v.weight, v.max_batch_size) for v in out.variants] == [
        ("v3", 3, 90.0, 8),
        ("v4", 4, 10.0, 8),
    ]
    with pytest.raises(BadRequest, match="sum to 0"):
        set_traffic(spec, {"fraud:3": 0}, resolve)
    with pytest.raises(BadRequest, match=">= 0"):
        set_traffic(spec, {"fraud:3": -1}, resolve)
    with pytest.raises(VersionNotFound):
        set_traffic(spec, {"fraud:9": 1}, resolve)
    with pytest.raises(BadRequest, match="MODEL:VERSION=WEIGHT"):
        parse_weight_args(["fraud:3"])
    with pytest.raises(BadRequest, match="neither a variant"):
        set_traffic(spec, {"nope": 1}, resolve)


def test_recorder_folds_outcomes_and_merges_other_processes() -> None:
    here, there = OutcomeRecorder(), OutcomeRecorder()
    for r in (here, there):
        r.track("e")
    here.observe("other", "v1", 200, 1.0, None)  # not tracked: ignored
    here.observe("e", "v1", 200, 1.0, {"probabilities": np.array([[0.2, 0.8]])})
    here.observe("e", "v2", 503, 9.0, None)
    there.observe("e", "v2", 200, 2.0, {"probabilities": np.array([[0.6, 0.4]])})
    here.add_snapshot(there.snapshot())
    arms = here.take("e")
    assert (arms["v1"].requests, arms["v1"].errors) == (1, 0)
    assert (arms["v2"].requests, arms["v2"].errors) == (2, 1)
    assert arms["v2"].labels.counts == {"0": 1}
    assert here.take("e") == {}
