"""Published rules of thumb, checked by running the advisor on today's catalog.

``python -m zeroserve.cost.rules_of_thumb`` prints the Markdown that
``docs/rules-of-thumb.md`` holds (a test keeps the two the same). Each check
states the claim, what the advisor computes, whether the claim holds and why.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date

from zeroserve.cost.advisor import _Costs, crossover_volume, grid
from zeroserve.cost.catalog import Catalog, default_catalog
from zeroserve.cost.evaluate import estimate, estimate_all
from zeroserve.cost.profile import WorkloadProfile

AS_OF = date(2026, 12, 1)


@dataclass(slots=True)
class Check:
    claim: str
    source: str
    found: list[str]
    verdict: str  # holds / does not hold / holds in part
    why: str


def _usd(catalog: Catalog, profile: WorkloadProfile, target: str, option: str | None) -> float:
    e = estimate(catalog, profile, target, option, today=AS_OF)
    return e.monthly_usd or 0.0


def traffic_levels(catalog: Catalog) -> Check:
    """Low traffic on serverless, steady high traffic on always-on instances."""
    found, winners = [], []
    for n in (10_000, 100_000, 1_000_000, 10_000_000, 100_000_000):
        profile = WorkloadProfile(
            name="api", requests_per_month=n, duration_s=0.1, memory_mb=2048, peak_to_average=3
        )
        feasible = [e for e in estimate_all(catalog, profile, today=AS_OF) if e.feasible]
        on_demand = [
            e for e in feasible if "volatile" not in {li.confidence for li in e.line_items}
        ]
        best = min(on_demand, key=lambda e: e.monthly_usd or 0.0)
        winners.append(best.scales_to_zero)
        found.append(
            f"{n:,} requests: {best.name} at ${best.monthly_usd:,.2f}"
            + (" (scales to zero)" if best.scales_to_zero else " (always on)")
        )
    claimed = [True, True, True, False, False]  # serverless up to 1 M, always-on from 10 M
    holds = winners == claimed
    return Check(
        claim="Under about 1 M requests a month serverless is cheapest; above about 10 M "
        "steady requests an always-on instance is",
        source="the traffic-level table in the serverless-inference guides",
        found=found,
        verdict="holds" if holds else "does not hold",
        why=(
            "100 ms, 2 GB requests at 3x peak, spot prices left out as volatile: "
            + (
                "the cheapest target scales to zero up to 1 M requests and is always on from "
                "10 M, as the table says; where exactly it switches depends on duration, "
                "memory and peak, so run the advisor on your own numbers"
                if holds
                else "the winners above do not follow the table's split at 1 M and 10 M"
            )
        ),
    )


def serverless_crossover(catalog: Catalog) -> Check:
    profile = WorkloadProfile(name="sm", requests_per_month=1_000_000, duration_s=1.0)
    costs = _Costs(catalog, profile, AS_OF, estimate_all(catalog, profile, today=AS_OF))
    n = crossover_volume(
        costs, "aws.sagemaker.serverless", "aws.sagemaker.realtime:ml.m5.xlarge", grid(1e6)
    )
    instance = _usd(catalog, profile, "aws.sagemaker.realtime", "ml.m5.xlarge")
    at_claim = profile.scaled(800_000)
    serverless = _usd(catalog, at_claim, "aws.sagemaker.serverless", None)
    return Check(
        claim="An always-on ml.m5.xlarge beats SageMaker Serverless above about 800,000 "
        "requests a month",
        source="SageMaker cost guides (us-east-1, October 2025)",
        found=[
            f"ml.m5.xlarge all month: ${instance:,.2f}",
            f"Serverless 1 GB, 1 s requests at 800,000 a month: ${serverless:,.2f}",
            f"crossover: {n:,.0f} requests a month" if n else "no crossover",
        ],
        verdict="holds" if n and 400_000 <= n <= 1_600_000 else "does not hold",
        why=(
            "at 1 s and 1 GB a request costs $0.00002 on Serverless, so one $167.90 instance "
            f"pays off only above {n:,.0f} requests, ten times the claim; 800,000 is right "
            "only for requests of about 10 GB-seconds each (10 s at 1 GB, or 1.7 s at 6 GB)"
        ),
    )


def container_bills(catalog: Catalog) -> Check:
    """One small always-on model: Fargate, SageMaker real-time and EKS, free tier off and on."""
    found = []
    for free in (False, True):
        profile = WorkloadProfile(
            name="small", requests_per_month=1_000_000, duration_s=0.1, free_tier=free
        )
        bills = {
            "Fargate 1 vCPU / 2 GB + ALB": _usd(catalog, profile, "aws.fargate", None),
            "SageMaker ml.m5.xlarge": _usd(
                catalog, profile, "aws.sagemaker.realtime", "ml.m5.xlarge"
            ),
            "EKS + t3.medium": _usd(catalog, profile, "aws.eks", "t3.medium"),
        }
        found.append(
            ("free tier on: " if free else "free tier off: ")
            + ", ".join(f"{k} ${v:,.2f}" for k, v in bills.items())
        )
        order = sorted(bills, key=bills.__getitem__)
    claimed = ["Fargate 1 vCPU / 2 GB + ALB", "SageMaker ml.m5.xlarge", "EKS + t3.medium"]
    return Check(
        claim="For one small always-on model Fargate costs least, SageMaker more, and EKS the "
        "most because of its control plane",
        source="the Fargate-versus-SageMaker-versus-EKS comparisons",
        found=found,
        verdict="holds"
        if order == claimed
        else "holds in part"
        if order[0] == claimed[0]
        else "does not hold",
        why=(
            f"cheapest to dearest: {', '.join(order)}. EKS pays $73 a month for its control "
            "plane before the first node, yet a t3.medium node is cheap enough that the "
            "total stays under one ml.m5.xlarge; Fargate's load balancer and public IPv4 "
            "addresses (about $25) still leave it the cheapest; SageMaker's free tier "
            "(125 h of ml.m5.xlarge a month for two months) helps new accounts only"
        ),
    )


def llm_break_even(catalog: Catalog) -> Check:
    found: list[str] = []
    per_day: list[float] = []
    never = False
    days = float(catalog.hours_per_month()) / 24
    for api in ("llm.openai.gpt-4o-mini", "llm.anthropic.claude-haiku-4-5", "llm.groq.gpt-oss-20b"):
        for tps in (300, 1500):
            profile = WorkloadProfile(
                name="llm",
                requests_per_month=1_000_000,
                input_tokens_per_request=1000,
                output_tokens_per_request=200,
                self_host_tokens_per_s=tps,
            )
            costs = _Costs(catalog, profile, AS_OF, estimate_all(catalog, profile, today=AS_OF))
            n = crossover_volume(costs, api, "aws.ec2.ondemand:g5.xlarge", grid(1e6))
            name = catalog.target(api).name
            if n:
                per_day.append(n * 1200 / days)
            else:
                never = True
            found.append(
                f"{name} vs g5.xlarge at {tps:,} tokens/s: "
                + (f"{n * 1200 / days / 1e6:,.1f} M tokens a day" if n else "never")
            )
    low, high = min(per_day), max(per_day)
    if low >= 15e6 and high <= 60e6:
        verdict = "holds"
    elif low <= 30e6 <= high or never:
        verdict = "holds in part"
    else:
        verdict = "does not hold"
    return Check(
        claim="Self-hosting an LLM pays off above about 30 M tokens a day",
        source="LLM self-hosting guides",
        found=found,
        verdict=verdict,
        why=(
            f"against one on-demand g5.xlarge the break-even runs from {low / 1e6:,.1f} M to "
            f"{high / 1e6:,.1f} M tokens a day depending on the API's price"
            + (", and some APIs stay cheaper at any volume the GPU can serve" if never else "")
            + "; a faster GPU (more tokens a second) does not move it while one GPU still "
            "covers the break-even volume. Measure tokens a second on your model first"
        ),
    )


def checks(catalog: Catalog | None = None) -> list[Check]:
    catalog = catalog or default_catalog()
    return [
        traffic_levels(catalog),
        serverless_crossover(catalog),
        container_bills(catalog),
        llm_break_even(catalog),
    ]


def markdown(catalog: Catalog | None = None) -> str:
    lines = [
        "# Published rules of thumb, checked",
        "",
        f"Computed by `python -m zeroserve.cost.rules_of_thumb` on the packaged catalog, "
        f"{AS_OF.isoformat()}, {default_catalog().hours_per_month()} h a month, us-east-1 "
        "prices (see [the cost advisor](cost-advisor.md) for the model). Regenerate it "
        "after changing the catalog; a test fails when this page and the advisor disagree.",
        "",
    ]
    for c in checks(catalog):
        lines += [f"## {c.claim}", "", f"*Source: {c.source}.* **Verdict: {c.verdict}.**", ""]
        lines += [f"- {f}" for f in c.found]
        lines += ["", f"Why: {c.why}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown())
