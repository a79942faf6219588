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
