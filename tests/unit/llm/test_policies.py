"""Pure parts: routing order, breaker transitions, backoff, prices, usage normalisation."""

from __future__ import annotations

import random
from decimal import Decimal

from zeroserve.llm.config import Deployment, Prices, Resilience, parse_config
from zeroserve.llm.pricing import rates_for
from zeroserve.llm.router import DeploymentState, backoff_s, order
from zeroserve.llm.usage import Rates, Usage

RES = Resilience(breaker_failures=2, breaker_cooldown_s=5.0)


def _state(name: str, weight: float = 1.0, prices: tuple[str, str] = ("1", "1")) -> DeploymentState:
    dep = Deployment(
        name=name,
        provider="openai",
        model="m",
        weight=weight,
        prices=Prices(input=Decimal(prices[0]), output=Decimal(prices[1])),
    )
    return DeploymentState("m", dep, rates_for(dep))


def test_weighted_draw_picks_by_weight() -> None:
    a, b = _state("a", 3), _state("b", 1)
    assert order([a, b], "weighted", 0, 5, 0.5)[0] is a  # 0.5 * 4 = 2 < 3
    assert order([a, b], "weighted", 0, 5, 0.9)[0] is b
    assert order([a, b], "weighted", 0, 5, 0.9) == [b, a]


def test_latency_prefers_lower_ewma_and_cost_prefers_cheaper() -> None:
    slow, fast = _state("slow", prices=("0.1", "0.1")), _state("fast", prices=("5", "5"))
    slow.ttft_ewma_s, slow.total_ewma_s = 0.3, 0.3
    fast.ttft_ewma_s, fast.total_ewma_s = 0.01, 0.02
    assert [s.name for s in order([slow, fast], "latency", 0, 5, 0.5)] == ["fast", "slow"]
    assert [s.name for s in order([slow, fast], "cost", 0, 5, 0.5)] == ["slow", "fast"]
    fast.in_flight = 3
    assert order([slow, fast], "least_busy", 0, 5, 0.5)[0] is slow


def test_breaker_opens_half_opens_and_closes() -> None:
    s = _state("x")
    for t in (1.0, 2.0):
        s.begin(t, 5)
        s.failed(t, RES)
    assert s.breaker == "open" and not s.available(3.0, 5)
    assert order([s], "weighted", 3.0, 5, 0.1) == []
    assert s.available(7.5, 5)
    s.begin(7.5, 5)
    assert s.breaker == "half_open" and not s.available(7.6, 5)  # one trial at a time
    s.failed(8.0, RES)
    assert s.breaker == "open" and s.opened_at == 8.0
    s.begin(13.5, 5)
    s.succeeded(0.01, 0.02, 0.3)
    assert s.breaker == "closed" and s.failures == 0


def test_backoff_grows_and_honours_retry_after() -> None:
    rng = random.Random(1)
    res = Resilience(backoff_base_s=0.1, backoff_max_s=2.0)
    assert backoff_s(0, res, None, rng) <= 0.1
    assert 0.4 <= backoff_s(3, res, None, rng) <= 0.8
    assert backoff_s(0, res, 1.5, rng) == 1.5
    assert backoff_s(0, res, 30, rng) == 2.0  # capped


def test_costs_are_exact_integer_micros() -> None:
    rates = Rates(input=3_000_000, output=15_000_000, cache_read=300_000, cache_write=3_750_000)
    usage = Usage(input_tokens=11, output_tokens=6, cache_read_tokens=3, cache_write_tokens=2)
    assert rates.cost(usage) == 132  # 131.4 rounded up
    assert rates.worst_case(100, 1000) == 100 * 3.75 + 1000 * 15
    assert (
        Rates(compute_per_hour=3_600_000).cost(Usage(compute_us=1_000_000)) == 1000
    )  # $3.6/h for 1 s


def test_usage_normalisation_never_double_counts_cache() -> None:
    oa = Usage.from_openai(
        {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 80},
        }
    )
    assert oa is not None and (oa.input_tokens, oa.cache_read_tokens, oa.prompt_tokens) == (
        20,
        80,
        100,
    )
    an = Usage.from_anthropic(
        {"input_tokens": 20, "cache_read_input_tokens": 80, "output_tokens": 5}
    )
    assert an == Usage(input_tokens=20, output_tokens=5, cache_read_tokens=80)


def test_catalog_prices_and_config_errors() -> None:
    dep = Deployment(
        name="c", provider="openai", model="gpt-4o-mini", catalog="llm.openai.gpt-4o-mini"
    )
    # the catalog prices cache reads at half the input price; no cache-write price: input
    assert rates_for(dep) == Rates(150_000, 600_000, 75_000, 150_000)
    try:
        parse_config(
            {
                "models": [
                    {
                        "name": "a",
                        "deployments": [{"name": "d", "provider": "openai", "model": "x"}],
                        "fallbacks": ["zzz"],
                    }
                ]
            },
            "llm.yaml",
        )
    except Exception as exc:
        assert "unknown model 'zzz'" in str(exc)
    else:
        raise AssertionError("a fallback to an unknown model must be refused")
