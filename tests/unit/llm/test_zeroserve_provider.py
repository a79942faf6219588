"""A zeroserve endpoint as a provider: called through an injected data-plane callable,
priced from its measured compute time, never at zero."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import aiohttp

from zeroserve.llm.config import Deployment, Prices
from zeroserve.llm.credentials import Credentials
from zeroserve.llm.pricing import rates_for
from zeroserve.llm.providers.zeroserve import ZeroserveProvider


def test_embeddings_priced_from_compute_time() -> None:
    seen: list[tuple[str, Any]] = []

    async def invoke(endpoint: str, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        seen.append((endpoint, payload))
        return {"predictions": [[0.5, 0.25] for _ in payload["instances"]]}, 0.002  # 2 ms

    dep = Deployment(
        name="zs",
        provider="zeroserve",
        model="minilm",
        prices=Prices(compute_per_hour=Decimal("3.6")),
    )

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            provider = ZeroserveProvider(session, Credentials(), invoke)
            return await provider.embed({"model": "emb", "input": ["a b", "c"]}, dep)

    done = asyncio.run(run())
    assert seen == [("minilm", {"instances": ["a b", "c"]})]
    assert [d["embedding"] for d in done.body["data"]] == [[0.5, 0.25], [0.5, 0.25]]
    assert done.usage.compute_us == 2000
    # $3.60 an hour is 1 micro-dollar per millisecond: 2 ms cost 2 micro-dollars
    assert rates_for(dep).cost(done.usage) == 2
