"""Worked examples for the second-pass billing models, each computed by hand to the cent.

S = 730 h x 3600 = 2,628,000 s a month. Container lifetime: busy + S (1 - e^-rT) idle within
keep-warm (r = requests / S, T = keep-warm) + wake-ups x start, at most max(S, busy).
"""

from __future__ import annotations

from typing import Any

import pytest

from zeroserve.cost.catalog import Catalog
from zeroserve.cost.estimators import Estimate
from zeroserve.cost.evaluate import estimate
from zeroserve.cost.profile import WorkloadProfile
from zeroserve.errors import BadRequest

from .conftest import TODAY

MODAL_CPU_RATE = 0.5 * 0.0000131 + 1 * 0.00000222  # 0.5 core + 1 GiB, per second alive


def run(catalog: Catalog, target: str, option: str | None = None, **fields: Any) -> Estimate:
    fields.setdefault("duration_s", 0.1)
    return estimate(catalog, WorkloadProfile(**fields), target, option, today=TODAY)


def items(e: Estimate) -> dict[str, float]:
    return {li.name: li.usd for li in e.line_items}


# -- container lifetime at three traffic levels (Modal cpu: keep-warm 60 s, start 1 s) --------
# Container j is woken at rate r_j = r x P(in flight >= j - 1), in flight ~ Poisson(r x d), and
# lives min(S, busy_j + S (1 - e^(-r_j T)) + S r_j e^(-r_j T) x start).
def test_lifetime_rare_traffic(catalog: Catalog) -> None:
    # 1,000 req x 0.1 s = 100 s busy. First container: r_1 T = 1,000 x 60 / S = 0.022831;
    # idle = S x (1 - e^-0.022831) = 59,320.25 s; wake-ups = 1,000 x e^-0.022831 = 977.43, x 1 s;
    # 60,397.68 s. Second: r_2 = r x P(>= 1) = r x 0.0000381: idle 2.28 + starts 0.04 = 2.32 s.
    # Alive 60,400.00 s. CPU x 0.5 x $0.0000131 = $0.3956 -> 0.40; memory x $0.00000222 -> 0.13
    e = run(catalog, "modal", "cpu", requests_per_month=1_000)
    assert items(e) == {"CPU": 0.40, "memory": 0.13} and e.monthly_usd == 0.53
    assert e.line_items[0].formula.startswith(
        "(alive 60,400.0002 s: busy 100 s, idle within keep-warm 59,322.5345 s, starts 977.4657 s)"
    )


def test_lifetime_moderate_traffic(catalog: Catalog) -> None:
    # The case: 50,000 req of 1 ms, one every 52.6 s against a 60 s keep-warm.
    # First container: r_1 T = 1.141553; busy 50 s; idle S x (1 - e^-1.141553) = 1,788,819.46 s;
    # wake-ups 50,000 x e^-1.141553 = 15,966.14 x 1 s; 1,804,835.60 s. Second: 58.03 s.
    # Alive 1,804,893.63 s: CPU x $0.00000655 = $11.8220 -> 11.82; memory x $0.00000222 -> 4.01;
    # $15.83 (the first pass billed $7.46, leaving out idle gaps shorter than the keep-warm)
    e = run(catalog, "modal", "cpu", requests_per_month=50_000, duration_s=0.001)
    assert items(e) == {"CPU": 11.82, "memory": 4.01} and e.monthly_usd == 15.83
    assert e.alive_s == pytest.approx(1_804_893.632, abs=0.01)


def test_lifetime_continuous_traffic(catalog: Catalog) -> None:
    # 1,000,000 req of 1 ms, one every 2.6 s: the first container never scales down (r_1 T =
    # 22.83): S = 2,628,000 s (the first pass billed $0.01). A second one wakes when a request
    # arrives while another is in flight, r_2 = r x 0.000380: x = 0.008686, idle 22,727.86 s,
    # 377.15 wake-ups x 1 s, busy 0.19 s: 23,105.20 s; a third 4.42 s. Alive 2,651,109.62 s:
    # CPU x $0.00000655 = $17.3648 -> 17.36; memory x $0.00000222 = $5.8855 -> 5.89; $23.25
    e = run(catalog, "modal", "cpu", requests_per_month=1_000_000, duration_s=0.001)
    assert items(e) == {"CPU": 17.36, "memory": 5.89} and e.monthly_usd == 23.25
    assert e.alive_s == pytest.approx(2_651_109.618, abs=0.01) and e.busy_s == 1_000
    assert e.line_items[0].formula.startswith(
        "(alive 2,651,109.6182 s: busy 1,000 s, idle within keep-warm 2,649,732.3908 s, "
        "starts 377.2274 s)"
    )
    # Busier: 10 M req x 0.5 s, 1.9 in flight on average, keeps about 7.7 containers alive.
    e = run(catalog, "modal", "cpu", requests_per_month=10_000_000, duration_s=0.5)
    assert e.busy_s == 5_000_000 and e.alive_s == pytest.approx(20_308_897.36, abs=0.01)
    assert e.monthly_usd == pytest.approx(20_308_897.36 * MODAL_CPU_RATE, abs=0.01)


# -- LLM tokens: cache reads and writes, batch ---------------------------------------------
def test_bedrock_tokens_with_cache_and_batch(catalog: Catalog) -> None:
    # 1M req x 1,000 in = 1e9 input tokens: 60% cached, 10% written, 30% plain; half batched.
    # cache read 6e8 x $0.10/1M = 60.00; cache write 1e8 x $1.25/1M = 125.00;
    # plain input 3e8 x 0.5 = 1.5e8 x $1.00/1M = 150.00, batch input 1.5e8 x $0.50/1M = 75.00;
    # output 2e8 x 0.5 = 1e8 x $5.00/1M = 500.00, batch output 1e8 x $2.50/1M = 250.00; $1,160.00
    e = run(
        catalog,
        "llm.bedrock.claude-haiku-4-5",
        requests_per_month=1_000_000,
        input_tokens_per_request=1000,
        output_tokens_per_request=200,
        cached_input_share=0.6,
        cache_write_share=0.1,
        batch_share=0.5,
    )
    assert items(e) == {
        "input tokens": 150.00,
        "output tokens": 500.00,
        "cached input tokens": 60.00,
        "cache writes": 125.00,
        "batch input tokens": 75.00,
        "batch output tokens": 250.00,
    }
    assert e.monthly_usd == 1160.00


def test_cache_share_ignored_where_there_is_no_cache_price(catalog: Catalog) -> None:
    # Llama on Bedrock has no cache price: all input at $0.72/1M; batch half at $0.36/1M.
    # 1e9 x 0.5 x 0.72 = 360.00 + 1e9 x 0.5 x 0.36 = 180.00; output 2e8: 72.00 + 36.00
    e = run(
        catalog,
        "llm.bedrock.llama-3-3-70b",
        requests_per_month=1_000_000,
        input_tokens_per_request=1000,
        output_tokens_per_request=200,
        cached_input_share=0.6,
        batch_share=0.5,
    )
    assert e.monthly_usd == 360.00 + 180.00 + 72.00 + 36.00


def test_cloudflare_neurons_with_daily_allowance(catalog: Catalog) -> None:
    # 100,000 req: 1e8 input tokens x 4,119/1M = 411,900 Neurons; 2e7 output x 34,868/1M = 697,360;
    # 1,109,260 Neurons x $0.011/1,000 = $12.2019 -> 12.20, + Workers Paid $5.00 = $17.20
    common = {
        "requests_per_month": 100_000,
        "input_tokens_per_request": 1000,
        "output_tokens_per_request": 200,
    }
    e = run(catalog, "llm.cloudflare.llama-3-1-8b-fp8-fast", **common)
    assert items(e) == {"Neurons": 12.20, "Workers Paid plan": 5.00}
    # 10,000 a day x 730/24 days = 304,167 free: 805,093 x $0.000011 = $8.856 -> 8.86; $13.86
    e = run(catalog, "llm.cloudflare.llama-3-1-8b-fp8-fast", free_tier=True, **common)
    assert e.monthly_usd == 13.86


def test_bedrock_provisioned_throughput_shows_its_term(catalog: Catalog) -> None:
    # 1 model unit x 730 h x $39.60 = $28,908.00 a month for a 1-month term
    e = run(
        catalog,
        "aws.bedrock.provisioned",
        "claude-instant-v1-1mo",
        requests_per_month=10_000,
        input_tokens_per_request=1000,
        output_tokens_per_request=200,
    )
    assert e.monthly_usd == 28_908.00 and e.feasible
    assert e.commitment == "a 1-month term: $28,908.00 a month for 1 months ($28,908.00 in all)"


# -- provisioned concurrency ---------------------------------------------------------------
def test_lambda_provisioned_concurrency(catalog: Catalog) -> None:
    # Peak 2 in flight: 2 environments x 2,628,000 s x 1 GB = 5,256,000 GB-s x $0.0000041667
    # = $21.9002 -> 21.90; duration 1M x 0.1 s x 1 GB = 100,000 GB-s x $0.0000097222 = 0.97;
    # requests 1M x $0.20/1M = 0.20; total $23.07
    e = run(catalog, "aws.lambda.x86.provisioned", requests_per_month=1_000_000, peak_concurrency=2)
    assert items(e) == {"requests": 0.20, "provisioned concurrency": 21.90, "compute": 0.97}
    assert e.monthly_usd == 23.07 and e.cold_start_fraction is None


def test_sagemaker_serverless_provisioned_concurrency(catalog: Catalog) -> None:
    # 2 GB, 1 provisioned: 2,628,000 s x $0.00001 = 26.28; 100,000 s x $0.00002333 = 2.333 -> 2.33
    e = run(
        catalog,
        "aws.sagemaker.serverless.provisioned",
        requests_per_month=1_000_000,
        memory_mb=2048,
    )
    assert items(e) == {"provisioned concurrency": 26.28, "compute": 2.33}


# -- savings plans and batch ---------------------------------------------------------------
def test_savings_plan_discount_and_commitment(catalog: Catalog) -> None:
    # t3.medium: 730 h x $0.0416 = $30.368 -> 30.37; IPv4 $3.65 (not covered);
    # 28% off $30.368 = $8.5030 -> -8.50; total 25.52. Commits 30.368 - 8.503 = $21.86 a month,
    # x 12 = $262.38
    e = run(
        catalog,
        "aws.ec2.ondemand",
        "t3.medium",
        requests_per_month=1_000_000,
        commitments={"aws.ec2.ondemand": "1yr-no-upfront"},
    )
    assert items(e) == {"instances": 30.37, "public IPv4": 3.65, "1yr-no-upfront commitment": -8.50}
    assert e.monthly_usd == 25.52
    assert e.commitment == (
        "1-year Compute Savings Plan, no upfront: $21.86 a month for 12 months ($262.38 in all)"
    )


def test_term_a_target_does_not_offer_is_refused(catalog: Catalog) -> None:
    with pytest.raises(BadRequest, match=r"commitments\.aws\.ec2\.ondemand: .*no term '5yr'"):
        run(
            catalog,
            "aws.ec2.ondemand",
            "t3.medium",
            requests_per_month=1,
            commitments={"aws.ec2.ondemand": "5yr"},
        )


def test_aws_batch_on_spot_from_rows_per_second(catalog: Catalog) -> None:
    # 1M requests x 100 rows = 1e8 rows at a given 50 rows/s = 2,000,000 s, plus 31 daily jobs
    # (ceil(730 / 24)) x 120 s start = 3,720 s: 2,003,720 s = 556.5889 h x $0.0125 spot = $6.96
    common = {"requests_per_month": 1_000_000, "rows_per_request": 100, "allow_async": True}
    e = run(catalog, "aws.batch.spot", "t3.medium", rows_per_s=50, **common)
    assert e.monthly_usd == 6.96 and e.feasible
    # Without rows_per_s: 2 replicas (2 vCPU / 1) x 100 rows / 0.1 s = 2,000 rows/s: 50,000 s
    # + 3,720 s = 53,720 s = 14.9222 h x $0.0125 = $0.1865 -> $0.19
    e = run(catalog, "aws.batch.spot", "t3.medium", **common)
    assert e.monthly_usd == 0.19 and "2,000 rows/s" in e.sizing
    # Batch answers later: a synchronous workload rules it out.
    e = run(catalog, "aws.batch.spot", "t3.medium", requests_per_month=1_000_000)
    assert not e.feasible and "asynchronously" in e.reasons[0]


def test_inferentia_needs_to_be_asked_for(catalog: Catalog) -> None:
    llm = {
        "requests_per_month": 1000,
        "input_tokens_per_request": 100,
        "output_tokens_per_request": 100,
        "self_host_tokens_per_s": 200,
    }
    e = run(catalog, "aws.ec2.ondemand", "inf2.xlarge", **llm)
    assert not e.feasible and "Neuron-compiled" in e.reasons[0]
    e = run(catalog, "aws.ec2.ondemand", "inf2.xlarge", gpu="Inferentia2", **llm)
    assert e.feasible and e.monthly_usd == round(730 * 0.7582 + 730 * 0.005, 2)
