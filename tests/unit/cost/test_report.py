from __future__ import annotations

import builtins
import json
from typing import Any

import pytest

from zeroserve.cost.advisor import Advice, advise
from zeroserve.cost.catalog import Catalog
from zeroserve.cost.profile import WorkloadProfile
from zeroserve.cost.report import chart_svg, charted_crossovers, render_html, to_json
from zeroserve.errors import MissingExtra

from .conftest import TODAY


@pytest.fixture(scope="module")
def advice(catalog: Catalog) -> Advice:
    profile = WorkloadProfile(
        name="fraud",
        requests_per_month=3_000_000,
        duration_s=0.1,
        memory_mb=2048,
        peak_to_average=3,
    )
    return advise(catalog, profile, today=TODAY)


def test_json_lists_every_target(advice: Advice) -> None:
    data = json.loads(json.dumps(to_json(advice)))
    for t in data["targets"]:
        assert {"id", "monthly_usd", "feasible", "reasons", "line_items"} <= t.keys()
    assert data["recommendation"] == advice.recommendation


def test_html_has_chart_and_crossovers(advice: Advice) -> None:
    pytest.importorskip("matplotlib")
    page = render_html(advice)
    assert page.count("<svg") == 1 and "requests per month" in page
    assert "this workload" in page and "crossover" in page
    assert charted_crossovers(advice)
    assert "<a href='https://aws.amazon.com/lambda/pricing/'>" in page


def test_missing_matplotlib_names_the_extra(
    advice: Advice, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = builtins.__import__

    def fake(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(MissingExtra, match=r"pip install 'zeroserve\[report\]'"):
        chart_svg(advice)
