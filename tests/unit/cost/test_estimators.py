"""Worked examples, each computed by hand from the catalog's prices (arithmetic in comments)."""

from __future__ import annotations

from typing import Any

import pytest

from zeroserve.cost.catalog import Catalog
from zeroserve.cost.estimators import Estimate, ImpossibleConfiguration
from zeroserve.cost.evaluate import estimate, estimate_all
from zeroserve.cost.profile import WorkloadProfile

from .conftest import TODAY


def run(catalog: Catalog, target: str, option: str | None = None, **fields: Any) -> Estimate:
    fields.setdefault("duration_s", 0.1)
    return estimate(catalog, WorkloadProfile(**fields), target, option, today=TODAY)


def items(e: Estimate) -> dict[str, float]:
    return {li.name: li.usd for li in e.line_items}


def test_sagemaker_serverless_issue_example(catalog: Catalog) -> None:
    # 2 GB, 10 M requests of 100 ms, no free tier, no data: 1,000,000 s x $0.00004 = $40.00
    e = run(catalog, "aws.sagemaker.serverless", requests_per_month=10_000_000, memory_mb=2048)
    assert e.monthly_usd == 40.00
    assert [li.formula for li in e.line_items] == ["10,000,000 req x 0.1 s x $0.00004/s = $40.00"]
    assert e.option == "2GB" and e.feasible


def test_sagemaker_serverless_free_tier_and_data(catalog: Catalog) -> None:
    # Free tier on: (1,000,000 s - 150,000 s free) x $0.00004 = $34.00
    e = run(
        catalog,
        "aws.sagemaker.serverless",
        requests_per_month=10_000_000,
        memory_mb=2048,
        free_tier=True,
    )
    assert e.monthly_usd == 34.00
    assert e.line_items[0].formula.startswith("(10,000,000 req x 0.1 s - 150,000 s free)")
    # 1.5 GB rounds up to the 2 GB size;
    # data: 10 M x 100 KiB = 953.67 GiB x $0.016 = $15.26 each way
    e = run(
        catalog,
        "aws.sagemaker.serverless",
        requests_per_month=10_000_000,
        memory_mb=1536,
        payload_in_bytes=102_400,
        payload_out_bytes=102_400,
    )
    assert items(e) == {"compute": 40.00, "data in": 15.26, "data out": 15.26}


def test_lambda_tiers(catalog: Catalog) -> None:
    # 7e9 req x 1 s x 1 GB = 7e9 GB-s: 6e9 x $0.0000166667 = $100,000.20, 1e9 x $0.000015 = $15,000
    # requests: 7e9 x $0.20/1M = $1,400.00; total $116,400.20
    e = run(
        catalog,
        "aws.lambda.x86",
        requests_per_month=7e9,
        duration_s=1.0,
        memory_mb=1024,
        cold_start_fraction=0.0,
    )
    assert items(e) == {"requests": 1400.00, "compute": 115000.20}
    assert e.monthly_usd == 116400.20
    assert e.line_items[1].formula == (
        "7,000,000,000 req x 1 s x 1 GB = 7,000,000,000 GB-s: "
        "6,000,000,000 GB-s x $0.0000166667/GB-s"
        " + 1,000,000,000 GB-s x $0.000015/GB-s = $115,000.20"
    )
    # Peak 2,664 concurrent is over the soft quota of 1,000: a warning, not a reason.
    assert e.feasible and any("soft quota" in w for w in e.warnings)


def test_lambda_arm64_first_tier_is_larger(catalog: Catalog) -> None:
    # arm64: 7e9 GB-s all in the first 7.5e9 tier: 7e9 x $0.0000133334 = $93,333.80
    e = run(
        catalog,
        "aws.lambda.arm64",
        requests_per_month=7e9,
        duration_s=1.0,
        memory_mb=1024,
        cold_start_fraction=0.0,
    )
    assert items(e)["compute"] == 93333.80


def test_lambda_free_tier_on_and_off(catalog: Catalog) -> None:
    common = {"requests_per_month": 10_000_000, "memory_mb": 2048, "cold_start_fraction": 0.0}
    # Off: 10M x 0.1 s x 2 GB = 2,000,000 GB-s x $0.0000166667 = $33.33; requests $2.00
    assert run(catalog, "aws.lambda.x86", **common).monthly_usd == 35.33
    # On: (2,000,000 - 400,000) x $0.0000166667 = $26.67; (10M - 1M) x $0.20/1M = $1.80
    e = run(catalog, "aws.lambda.x86", free_tier=True, **common)
    assert items(e) == {"requests": 1.80, "compute": 26.67}


def test_lambda_bills_init_on_cold_starts(catalog: Catalog) -> None:
    # 1% of 1M requests cold = 10,000 x 0.5 s INIT (p50) x 1 GB = 5,000 GB-s on top of 100,000:
    # 105,000 GB-s x $0.0000166667 = $1.75; requests $0.20
    e = run(
        catalog,
        "aws.lambda.x86",
        requests_per_month=1_000_000,
        memory_mb=1024,
        cold_start_fraction=0.01,
    )
    assert items(e) == {"requests": 0.20, "compute": 1.75}
    assert "10,000 cold starts x 0.5 s init" in e.line_items[1].formula


def test_lambda_bills_whole_milliseconds(catalog: Catalog) -> None:
    # 0.1234 s is billed as 0.124 s: 1M x 0.124 s x 1 GB = 124,000 GB-s x $0.0000166667 = $2.07
    e = run(
        catalog,
        "aws.lambda.x86",
        requests_per_month=1_000_000,
        duration_s=0.1234,
        memory_mb=1024,
        cold_start_fraction=0.0,
    )
    assert items(e)["compute"] == 2.07


@pytest.mark.parametrize(("hours", "usd"), [(730, 167.90), (720, 165.60)])
def test_realtime_endpoint_730_versus_720_hours(catalog: Catalog, hours: float, usd: float) -> None:
    # 1 x ml.m5.xlarge x 730 h x $0.23 = $167.90; x 720 h = $165.60
    e = run(
        catalog,
        "aws.sagemaker.realtime",
        "ml.m5.xlarge",
        requests_per_month=1000,
        hours_per_month=hours,
    )
    assert e.monthly_usd == usd


def test_realtime_free_tier_hours(catalog: Catalog) -> None:
    # (730 - 125 free) h x $0.23 = $139.15; the allowance is for ml.m5.xlarge only
    e = run(
        catalog, "aws.sagemaker.realtime", "ml.m5.xlarge", requests_per_month=1000, free_tier=True
    )
    assert e.monthly_usd == 139.15
    e = run(
        catalog, "aws.sagemaker.realtime", "ml.m5.2xlarge", requests_per_month=1000, free_tier=True
    )
    assert e.monthly_usd == 336.53  # 730 x $0.461


def test_always_on_sized_from_peak_and_replica_capacity(catalog: Catalog) -> None:
    # ml.m5.xlarge holds min(4 vCPU / 1, 16,384 MB / 2,048) = 4 replicas x 2 concurrent = 8;
    # peak 10 needs ceil(10 / 8) = 2 instances: 2 x 730 h x $0.23 = $335.80
    e = run(
        catalog,
        "aws.sagemaker.realtime",
        "ml.m5.xlarge",
        requests_per_month=1e6,
        memory_mb=2048,
        peak_concurrency=10,
        replica_concurrency=2,
    )
    assert e.monthly_usd == 335.80 and e.sizing.startswith("2 x ml.m5.xlarge")


def test_fargate_line_items(catalog: Catalog) -> None:
    # 1 req/s (2,628,000 a month), 1 task of 1 vCPU / 2 GB:
    # vCPU 730 x $0.04048 = 29.55; memory 2 x 730 x $0.004445 = 6.49; ALB 730 x $0.0225 = 16.43;
    # LCU 1/25 x 730 = 29.2 x $0.008 = 0.23; IPv4 (1 task + 2 ALB) x 730 x $0.005 = 10.95;
    # logs 2,628,000 x 256 B / 2^30 = 0.6266 GB x $0.50 = 0.31; artifact 1 GB x $0.023 = 0.02
    e = run(
        catalog, "aws.fargate", requests_per_month=2_628_000, memory_mb=2048, peak_concurrency=1
    )
    assert items(e) == {
        "vCPU": 29.55,
        "memory": 6.49,
        "load balancer": 16.43,
        "load balancer capacity": 0.23,
        "public IPv4": 10.95,
        "logs": 0.31,
        "artifact storage": 0.02,
    }
    assert e.monthly_usd == 63.98
    # infracost golden: 2 vCPU x 730 h x $0.04048 = $59.10
    e = run(
        catalog, "aws.fargate", requests_per_month=1, vcpus=2, memory_mb=4096, peak_concurrency=1
    )
    assert items(e)["vCPU"] == 59.10 and e.option == "2 vCPU / 4 GB"


def test_eks_control_plane_plus_nodes(catalog: Catalog) -> None:
    # control plane 730 x $0.10 = $73.00; t3.medium 730 x $0.0416 = $30.37;
    # IPv4 730 x $0.005 = $3.65
    e = run(catalog, "aws.eks", "t3.medium", requests_per_month=1000, memory_mb=1024)
    assert items(e) == {"control plane": 73.00, "instances": 30.37, "public IPv4": 3.65}


def test_ec2_spot_gpu(catalog: Catalog) -> None:
    # g5.xlarge spot fallback 730 x $0.40 = $292.00, plus IPv4 $3.65
    e = run(catalog, "aws.ec2.spot", "g5.xlarge", requests_per_month=1000, gpu="A10G")
    assert e.monthly_usd == 295.65 and e.feasible
    assert e.line_items[0].confidence == "volatile"
    assert any("two minutes" in w for w in e.warnings)


def test_cloud_run_request_billing_and_free_tier(catalog: Catalog) -> None:
    base = {"requests_per_month": 10_000_000, "memory_mb": 512, "cold_start_fraction": 0.0}
    # vCPU 10M x 0.1 s = 1,000,000 x $0.000024 = 24.00; memory x 0.5 GiB x $0.0000025 = 1.25;
    # requests 10M x $0.40/1M = 4.00
    assert items(run(catalog, "gcp.cloudrun", **base)) == {
        "vCPU": 24.00,
        "memory": 1.25,
        "requests": 4.00,
    }
    # free: (1,000,000 - 180,000) x $0.000024 = 19.68; (500,000 - 360,000) x $0.0000025 = 0.35;
    # (10M - 2M) x $0.40/1M = 3.20
    e = run(catalog, "gcp.cloudrun", free_tier=True, **base)
    assert e.monthly_usd == 23.23
    # Billed in 100 ms steps: 0.13 s -> 0.2 s: 10M x 0.2 x $0.000024 = $48.00
    assert items(run(catalog, "gcp.cloudrun", duration_s=0.13, **base))["vCPU"] == 48.00


def test_cloud_run_gpu_instance_billing(catalog: Catalog) -> None:
    # 10,000 req x 1 s, keep-warm 900 s, S = 2,628,000 s; r = 10,000 / S; in flight: Poisson
    # with mean r x 1 s = 0.003805. First container: rT = 3.424658, busy S x (1 - e^-0.003805)
    # = 9,981.00, idle S x (1 - e^-3.424658) = 2,542,431.19, 10 wake-ups (0.1% given) x 5 s
    # = 50: 2,552,462.19 s.
    # Second (woken at r x P(>= 1 in flight) = r x 0.003798): busy 18.98, idle 33,960.17,
    # starts 187.44: 34,166.59 s; third 65.38 s. Alive 2,586,694.24 s: GPU x $0.0001867 = 482.94;
    # vCPU (min 4) x 4 x $0.000018 = 186.24; memory (min 16 GiB) x 16 x $0.000002 = 82.77
    e = run(
        catalog,
        "gcp.cloudrun.gpu",
        "L4",
        requests_per_month=10_000,
        duration_s=1.0,
        gpu="L4",
        cold_start_fraction=0.001,
    )
    assert items(e) == {"GPU": 482.94, "vCPU": 186.24, "memory": 82.77}
    assert e.line_items[0].formula.startswith(
        "(alive 2,586,694.2366 s: busy 10,000 s, idle within keep-warm 2,576,456.4318 s, "
        "starts 237.8048 s)"
    )


def test_modal_gpu_and_credit(catalog: Catalog) -> None:
    # 100,000 req x 1 s; mean in flight 0.038052. First container: rT = 2.283105, busy
    # S x (1 - e^-0.038052) = 98,121.32, idle S x (1 - e^-2.283105) = 2,360,030.45, no starts
    # (0% cold given): 2,458,151.77 s. Second: woken at r x 0.037337, x = 0.085244: busy 1,855.00,
    # idle 214,738.66, starts 3,428.60: 220,022.27 s; third 4,325.69 s; fourth 55.2 s.
    # Alive 2,682,554.90 s: CPU 0.5 core x $0.0000131 = 17.57; memory 1 GiB x $0.00000222 = 5.96;
    # A10G x $0.000306 = 820.86; total 844.39
    common = {
        "requests_per_month": 100_000,
        "duration_s": 1.0,
        "gpu": "A10G",
        "cold_start_fraction": 0.0,
    }
    e = run(catalog, "modal", "A10G", **common)
    assert items(e) == {"CPU": 17.57, "memory": 5.96, "GPU": 820.86}
    assert e.busy_s == 100_000 and e.alive_s == pytest.approx(2_682_554.904, abs=0.01)
    # Starter credit: $844.39 - $30.00 = $814.39
    e = run(catalog, "modal", "A10G", free_tier=True, **common)
    assert e.monthly_usd == 814.39 and items(e)["free credit"] == -30.00


def test_runpod_bills_start_and_idle(catalog: Catalog) -> None:
    # 10,000 x 2 s; keep-warm 5 s. First worker: busy S x (1 - e^-0.007610) = 19,924.09,
    # idle S x (1 - e^-0.019026) = 49,527.36, 1,000 wake-ups (10% given) x 2 s = 2,000: 71,451.44 s;
    # second 606.37 s, third 2.21 s: alive 72,060.03 s x $0.00019 = $13.69
    e = run(
        catalog,
        "runpod.serverless",
        "24GB",
        requests_per_month=10_000,
        duration_s=2.0,
        gpu="L4",
        cold_start_fraction=0.1,
    )
    assert e.monthly_usd == 13.69


def test_per_token_api(catalog: Catalog) -> None:
    # 1M req x 500 in = 5e8 x $0.15/1M = 75.00; x 200 out = 2e8 x $0.60/1M = 120.00
    e = run(
        catalog,
        "llm.openai.gpt-4o-mini",
        requests_per_month=1_000_000,
        input_tokens_per_request=500,
        output_tokens_per_request=200,
    )
    assert items(e) == {"input tokens": 75.00, "output tokens": 120.00} and e.feasible
    e = run(catalog, "llm.openai.gpt-4o-mini", requests_per_month=1000)
    assert not e.feasible and "no tokens" in e.reasons[0]


def test_sagemaker_async_scales_to_zero(catalog: Catalog) -> None:
    # Rare: 1,000 x 2 s on 4 replicas per instance (500 busy instance-s); cool-down 600 s. The
    # instance is up whenever a request is in flight: S x (1 - e^-0.000761) = 1,999.24 s; idle
    # S x (1 - e^-0.228311) = 536,434.98 s; 1 wake-up (0.1% given) x 240 s; a second instance
    # (needed with 4 in flight, P = 1.4e-14) adds nothing: 538,674.22 s = 149.6317 h x $0.23
    # = $34.42
    e = run(
        catalog,
        "aws.sagemaker.async",
        "ml.m5.xlarge",
        requests_per_month=1_000,
        duration_s=2.0,
        allow_async=True,
        cold_start_fraction=0.001,
    )
    assert e.monthly_usd == 34.42 and e.feasible
    # One request every 26 s never lets a 600 s cool-down expire: the first instance lives all
    # month (730 h = $167.90) and a second wakes now and then: 110.53 s more = $167.91.
    e = run(
        catalog,
        "aws.sagemaker.async",
        "ml.m5.xlarge",
        requests_per_month=100_000,
        duration_s=2.0,
        allow_async=True,
        cold_start_fraction=0.001,
    )
    assert e.monthly_usd == 167.91 and e.alive_s == pytest.approx(2_628_110.529, abs=0.01)


# -- ruled out, refused -------------------------------------------------------------------
def reasons(catalog: Catalog, target: str, option: str | None = None, **fields: Any) -> str:
    return " | ".join(run(catalog, target, option, **fields).reasons)


def test_infeasibility_reasons(catalog: Catalog) -> None:
    assert "needs a GPU (any); AWS Lambda (x86_64) has none" in reasons(
        catalog, "aws.lambda.x86", requests_per_month=1000, gpu="any"
    )
    assert "needs a A10G GPU; g4dn.xlarge has T4" in reasons(
        catalog, "aws.ec2.ondemand", "g4dn.xlarge", requests_per_month=1000, gpu="A10G"
    )
    assert "payload of 5.0 MB is over the 4.0 MB limit" in reasons(
        catalog, "aws.sagemaker.serverless", requests_per_month=1000, payload_in_bytes=5_000_000
    )
    assert (
        reasons(catalog, "aws.lambda.x86", requests_per_month=1000, payload_in_bytes=5_000_000)
        == ""
    )
    assert "offers at most 6,144 MB" in reasons(
        catalog, "aws.sagemaker.serverless", requests_per_month=1000, memory_mb=8192
    )
    assert "times out at 60 s" in reasons(
        catalog, "aws.sagemaker.realtime", "ml.m5.xlarge", requests_per_month=1000, duration_s=120
    )
    assert "allow_async" in reasons(
        catalog, "aws.sagemaker.async", "ml.m5.xlarge", requests_per_month=1000
    )
    assert "over the limit of 200" in reasons(
        catalog, "aws.sagemaker.serverless", requests_per_month=1e6, peak_concurrency=300
    )


def test_cold_starts_against_the_sla(catalog: Catalog) -> None:
    # 1,000 req a month: a request every 43.8 min, far past the 300 s keep-warm, so nearly
    # every request is cold and p95 = 0.1 s + 20 s cold start p95.
    why = reasons(catalog, "aws.sagemaker.serverless", requests_per_month=1000, latency_sla_p95_s=2)
    assert "p95 with cold starts is about 20.1 s" in why and "over the 2 s SLA" in why
    # Busy enough to stay warm: feasible.
    assert (
        reasons(catalog, "aws.sagemaker.serverless", requests_per_month=1e7, latency_sla_p95_s=2)
        == ""
    )


def test_impossible_configurations_are_refused(catalog: Catalog) -> None:
    with pytest.raises(ImpossibleConfiguration, match="notebook instance type, not a hosting type"):
        run(catalog, "aws.sagemaker.realtime", "ml.t3.medium", requests_per_month=1000)
    with pytest.raises(ImpossibleConfiguration, match="2,500 MB is not one of them"):
        run(
            catalog,
            "aws.sagemaker.serverless",
            requests_per_month=1000,
            memory_mb_by_target={"aws.sagemaker.serverless": 2500},
        )
    with pytest.raises(ImpossibleConfiguration, match="12,000 MB is not one of them"):
        run(
            catalog,
            "aws.lambda.x86",
            requests_per_month=1000,
            memory_mb_by_target={"aws.lambda.x86": 12000},
        )
    profile = WorkloadProfile(
        requests_per_month=1000,
        duration_s=0.1,
        instance_types={"aws.sagemaker.realtime": "ml.t3.medium"},
    )
    (refused,) = [
        e
        for e in estimate_all(catalog, profile, today=TODAY)
        if e.target == "aws.sagemaker.realtime"
    ]
    assert not refused.feasible and refused.monthly_usd is None
    assert refused.reasons[0].startswith("refused: ml.t3.medium is a SageMaker notebook")


def test_per_target_duration(catalog: Catalog) -> None:
    # 1M x 0.5 s on ml.g5.xlarge-class GPU vs 0.1 s elsewhere: prefix keys work
    p = WorkloadProfile(
        requests_per_month=1e6, duration_s=0.1, duration_s_by_target={"aws.lambda": 0.5}
    )
    assert p.duration_for("aws.lambda.arm64") == 0.5 and p.duration_for("gcp.cloudrun") == 0.1
