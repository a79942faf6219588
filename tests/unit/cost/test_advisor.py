from __future__ import annotations

from datetime import date

import pytest

from zeroserve.cost.advisor import Advice, advise
from zeroserve.cost.catalog import Catalog
from zeroserve.cost.evaluate import estimate
from zeroserve.cost.profile import WorkloadProfile

from .conftest import TODAY

CPU = WorkloadProfile(
    name="cpu", requests_per_month=1_000_000, duration_s=0.1, memory_mb=2048, peak_to_average=3
)


@pytest.fixture(scope="module")
def cpu_advice(catalog: Catalog) -> Advice:
    return advise(catalog, CPU, today=TODAY)


def cost(catalog: Catalog, profile: WorkloadProfile, cid: str, n: float) -> float:
    target, _, option = cid.partition(":")
    e = estimate(catalog, profile.scaled(n), target, option or None, today=TODAY, explain=False)
    assert e.monthly_usd_unrounded is not None
    return e.monthly_usd_unrounded


def test_ranking(cpu_advice: Advice) -> None:
    feasible = [e for e in cpu_advice.targets if e.feasible]
    usd = [e.monthly_usd or 0 for e in feasible]
    assert usd == sorted(usd)
    assert cpu_advice.recommendation == feasible[0].id
    first_out = next(i for i, e in enumerate(cpu_advice.targets) if not e.feasible)
    assert all(not e.feasible for e in cpu_advice.targets[first_out:])
    assert cpu_advice.summary.startswith(
        f"cheapest feasible for 1,000,000 requests a month: {feasible[0].name}"
    )


def test_crossovers_cost_the_same_on_both_sides(catalog: Catalog, cpu_advice: Advice) -> None:
    assert len(cpu_advice.crossovers) >= 10
    for x in cpu_advice.crossovers:
        a = cost(catalog, CPU, x.scale_to_zero, x.requests_per_month)
        b = cost(catalog, CPU, x.always_on, x.requests_per_month)
        assert abs(a - b) < 0.01, x.text
        # Just below, the scale-to-zero target is still the cheaper one.
        below = x.requests_per_month * (1 - 1e-6)
        assert cost(catalog, CPU, x.scale_to_zero, below) < cost(catalog, CPU, x.always_on, below)


def test_crossover_by_hand(catalog: Catalog, cpu_advice: Advice) -> None:
    # Serverless 2 GB costs N x 0.1 s x $0.00004 = $0.000004 N. One ml.m5.xlarge (4 replicas)
    # costs 730 x $0.23 = $167.90. At peak = 3 x average it takes a new instance every
    # 35,040,000 requests ($4.79 per million), dearer than serverless: no crossover.
    assert not [
        x
        for x in cpu_advice.crossovers
        if x.scale_to_zero == "aws.sagemaker.serverless"
        and x.always_on == "aws.sagemaker.realtime:ml.m5.xlarge"
    ]
    # With flat traffic one instance holds while N x 0.1 / 2,628,000 <= 4, i.e. to 105,120,000:
    # equal at N = 167.90 / 0.000004 = 41,975,000 requests (1,166 busy hours).
    flat = advise(catalog, CPU.model_copy(update={"peak_to_average": 1.0}), today=TODAY)
    (x,) = [
        x
        for x in flat.crossovers
        if x.scale_to_zero == "aws.sagemaker.serverless"
        and x.always_on == "aws.sagemaker.realtime:ml.m5.xlarge"
    ]
    assert x.requests_per_month == pytest.approx(41_975_000, rel=1e-9)
    assert x.busy_hours_per_month == pytest.approx(41_975_000 * 0.1 / 3600, rel=1e-9)
    assert x.text.startswith("above 41,975,000 requests a month (1,166 busy hours)")


def test_modal_crossover_is_where_its_lifetime_costs_one_spot_instance(
    catalog: Catalog, cpu_advice: Advice
) -> None:
    # Spot t3.medium: 730 x $0.0125 + 730 x $0.005 = $12.775 a month. Modal cpu (2 GiB) costs
    # 0.5 x $0.0000131 + 2 x $0.00000222 = $0.00001099 per second alive, so they cost the same
    # when Modal's container is alive 12.775 / 0.00001099 = 1,162,420.38 s: well below the
    # month, so the crossover sits at a volume where the container still scales down.
    (x,) = [
        x
        for x in cpu_advice.crossovers
        if x.scale_to_zero == "modal:cpu" and x.always_on == "aws.ec2.spot:t3.medium"
    ]
    e = estimate(catalog, CPU.scaled(x.requests_per_month), "modal", "cpu", today=TODAY)
    assert e.alive_s == pytest.approx(12.775 / 0.00001099, rel=1e-6)
    assert e.alive_s is not None and e.alive_s < 2_628_000


def test_recommendation_changes(cpu_advice: Advice) -> None:
    above = [c for c in cpu_advice.changes if c.direction == "above"]
    assert above and above[0].requests_per_month > CPU.requests_per_month
    assert above[0].text.startswith("above ") and "would be cheaper" in above[0].text
    assert above[0].text in cpu_advice.summary
    assert len(cpu_advice.grid) == len(cpu_advice.curves[0].monthly_usd)


def test_stale_price_warning_names_oldest_date(catalog: Catalog) -> None:
    quick = CPU.model_copy(update={"requests_per_month": 1000})
    # The oldest price is m7g.large's, read 2026-06-17: 186 days before 2026-12-20.
    warned = advise(catalog, quick, today=date(2026, 12, 20), with_curves=False)
    assert warned.oldest_as_of == "2026-06-17"
    assert any("oldest as-of date is 2026-06-17" in w for w in warned.warnings)
    assert any("2026-06-17" in w for w in warned.target("aws.ec2.ondemand:m7g.large").warnings)
    # Today's catalog (2026-12-01) warns about nothing.
    fresh = advise(catalog, quick, today=date(2026, 12, 1), with_curves=False)
    assert not any("older than" in w for w in fresh.warnings)


def test_nothing_feasible(catalog: Catalog) -> None:
    impossible = WorkloadProfile(
        requests_per_month=1000, duration_s=1.0, gpu="any", gpu_memory_gb=500
    )
    advice = advise(catalog, impossible, today=TODAY, with_curves=False)
    assert advice.recommendation is None and "no target is feasible" in advice.summary


def test_llm_break_even(catalog: Catalog) -> None:
    # gpt-4o-mini: 500 in x $0.15/1M + 200 out x $0.60/1M = $0.000195 a request.
    # Spot g5.xlarge at 400 tokens/s: 200 / 400 = 0.5 GPU-s a request; one instance
    # (730 x $0.40 + 730 x $0.005 = $295.65) holds while N x 0.5 / 2,628,000 <= 1.
    # Break-even N = 295.65 / 0.000195 = 1,516,153.8 requests a month,
    # tokens a day = N x 700 / (730 / 24) = 34,892,...
    llm = WorkloadProfile(
        name="chat",
        requests_per_month=100_000,
        input_tokens_per_request=500,
        output_tokens_per_request=200,
        self_host_tokens_per_s=400,
        gpu="A10G",
        latency_sla_p95_s=30,
    )
    advice = advise(catalog, llm, today=TODAY)
    (b,) = [
        b
        for b in advice.llm_break_even
        if b.api == "llm.openai.gpt-4o-mini" and b.self_host == "aws.ec2.spot:g5.xlarge"
    ]
    n = 295.65 / 0.000195
    assert b.requests_per_month == pytest.approx(n, rel=1e-6)
    assert b.tokens_per_day == pytest.approx(n * 700 / (730 / 24), rel=1e-6)
    assert b.api_usd_per_1m_tokens == pytest.approx(0.000195 / 700 * 1e6)
    # Fully loaded: $295.65 / (400 tok/s x 2,628,000 s) x 1e6 = $0.28 per 1M output tokens
    assert b.self_host_usd_per_1m_output_tokens_full_load == pytest.approx(
        295.65 / (400 * 2_628_000) * 1e6
    )
    assert advice.target("aws.lambda.x86").reasons[0].startswith("needs a GPU (A10G)")
