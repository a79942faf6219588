import asyncio

import pytest

from zeroserve.control import lifecycle
from zeroserve.errors import BadRequest
from zeroserve.types import EndpointSpec, ScalingSpec, VariantSpec


def spec(version: int, follow: str | None = None, max_replicas: int = 2) -> EndpointSpec:
    return EndpointSpec(
        name="fraud",
        variants=[
            VariantSpec(
                name=f"v{version}",
                model="fraud",
                version=version,
                follow=follow,
                scaling=ScalingSpec(max_replicas=max_replicas),
            )
        ],
    )


def test_a_version_switch_is_detected_and_described() -> None:
    assert lifecycle.switches_version(spec(1), spec(2))
    assert not lifecycle.switches_version(spec(1), spec(1, max_replicas=4))
    assert lifecycle.changes(spec(1), spec(2, "@production", 4)) == [
        "serves fraud version 1 -> fraud version 2",
        "pinned -> follows fraud@production",
        "max_replicas 2 -> 4",
    ]
    assert lifecycle.changes(spec(1), spec(1)) == []


def test_only_aliases_and_stages_can_be_followed() -> None:
    assert lifecycle.check_followable("fraud", "@production") == "@production"
    assert lifecycle.check_followable("fraud", "champion") == "champion"
    for ref in (None, "3", "latest"):
        with pytest.raises(BadRequest, match="--follow needs an alias or a stage"):
            lifecycle.check_followable("fraud", ref)


def test_retarget_moves_one_variant_to_a_new_pool_name() -> None:
    moved = lifecycle.retarget(spec(1, "@production"), "v1", 2)
    assert [(v.name, v.version, v.follow) for v in moved.variants] == [("v2", 2, "@production")]
    others = EndpointSpec(name="other", variants=[VariantSpec(name="v1", model="x", version=1)])
    assert lifecycle.following([spec(1, "@production"), spec(1), others], "fraud") == [
        spec(1, "@production")
    ]


class FakePool:
    def __init__(self) -> None:
        self.in_flight = 2


def test_drain_waits_for_requests_in_flight() -> None:
    async def scenario() -> tuple[bool, bool]:
        pool = FakePool()

        async def finish() -> None:
            await asyncio.sleep(0.05)
            pool.in_flight = 0

        task = asyncio.create_task(finish())
        drained = await lifecycle.drain(pool, timeout_s=5)
        await task
        pool.in_flight = 1
        stuck = await lifecycle.drain(pool, timeout_s=0.05)
        return drained, stuck

    assert asyncio.run(scenario()) == (True, False)
