"""The docs page of checked rules of thumb is what the advisor computes today."""

from __future__ import annotations

from pathlib import Path

from zeroserve.cost.catalog import Catalog
from zeroserve.cost.rules_of_thumb import markdown, serverless_crossover

DOC = Path(__file__).parents[3] / "docs" / "rules-of-thumb.md"


def test_doc_matches_the_advisor(catalog: Catalog) -> None:
    assert DOC.read_text() == markdown(catalog), (
        "docs/rules-of-thumb.md is out of date: "
        "python -m zeroserve.cost.rules_of_thumb > docs/rules-of-thumb.md"
    )


def test_serverless_crossover_by_hand(catalog: Catalog) -> None:
    # ml.m5.xlarge 730 h x $0.23 = $167.90; Serverless 1 GB x 1 s = $0.00002 a request:
    # equal at 167.90 / 0.00002 = 8,395,000 requests, not the 800,000 the guides say.
    check = serverless_crossover(catalog)
    assert check.found[-1] == "crossover: 8,395,000 requests a month"
    assert check.verdict == "does not hold"


def test_readme_example_is_what_the_advisor_says(catalog: Catalog) -> None:
    from datetime import date

    from zeroserve.cost.advisor import advise
    from zeroserve.cost.profile import WorkloadProfile

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    profile = WorkloadProfile(requests_per_month=10_000_000, duration_s=0.1, memory_mb=2048)
    advice = advise(catalog, profile, today=date(2026, 12, 1))
    usd = {e.id: e.monthly_usd for e in advice.targets}
    assert advice.recommendation == "aws.ec2.spot:t3.medium" and usd[advice.recommendation] == 12.78
    assert usd["aws.ec2.ondemand:t3.small"] == 18.83 and usd["aws.lambda.arm64"] == 28.67
    assert usd["modal:cpu"] == 114.13
    (below,) = [c for c in advice.changes if c.direction == "below"]
    assert below.winner == "aws.lambda.arm64" and 4.35e6 < below.requests_per_month < 4.45e6
    for text in (
        "EC2 spot t3.medium at $12.78",
        "t3.small at $18.83",
        "$28.67",
        "$114.13",
        "4.4 M",
    ):
        assert text in readme
