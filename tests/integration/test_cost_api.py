"""The /api/cost router on a real SQLite file, driven through Starlette's TestClient."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.testclient import TestClient
from typer.testing import CliRunner

from zeroserve.cli import cost as cli_cost
from zeroserve.cost.api import router
from zeroserve.cost.meter import Meter
from zeroserve.db import create_all, make_engine, session_factory
from zeroserve.errors import ZeroserveError
from zeroserve.types import UsageRecord


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    engine = make_engine(f"sqlite:///{tmp_path}/zeroserve.db")
    create_all(engine)
    app = FastAPI()
    app.include_router(router, prefix="/api/cost")
    app.state.session_factory = session_factory(engine)
    app.state.meter = Meter()

    @app.exception_handler(ZeroserveError)
    async def _error(_: Request, exc: ZeroserveError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


PROFILE = {"name": "fraud", "requests_per_month": 10_000_000, "duration_s": 0.1, "memory_mb": 2048}


def test_estimate(client: TestClient) -> None:
    r = client.post(
        "/api/cost/estimate", json={"profile": PROFILE, "today": "2026-12-01", "curves": False}
    )
    assert r.status_code == 200, r.text
    data = r.json()
    by_id = {t["id"]: t for t in data["targets"]}
    assert by_id["aws.sagemaker.serverless"]["monthly_usd"] == 40.00
    assert by_id["aws.sagemaker.serverless"]["line_items"][0]["formula"] == (
        "10,000,000 req x 0.1 s x $0.00004/s = $40.00"
    )
    assert all(
        {"monthly_usd", "feasible", "reasons", "line_items"} <= t.keys() for t in data["targets"]
    )
    assert data["oldest_as_of"] == "2026-06-17"
    assert not any("older than" in w for w in data["warnings"])  # today's catalog is fresh


def test_estimate_with_override_and_pin(client: TestClient) -> None:
    body = {
        "profile": {**PROFILE, "instance_types": {"aws.sagemaker.realtime": "ml.t3.medium"}},
        "overrides": [{"target": "aws.fargate", "discount_pct": 50}],
        "curves": False,
    }
    data = client.post("/api/cost/estimate", json=body).json()
    by_id = {t["id"]: t for t in data["targets"]}
    refused = by_id["aws.sagemaker.realtime:ml.t3.medium"]
    assert not refused["feasible"] and "notebook instance type" in refused["reasons"][0]
    assert by_id["aws.fargate"]["line_items"][0]["confidence"] == "user"


def test_invalid_profile_is_422(client: TestClient) -> None:
    r = client.post("/api/cost/estimate", json={"profile": {"requests_per_month": -1}})
    assert r.status_code == 422


def test_estimate_html(client: TestClient) -> None:
    pytest.importorskip("matplotlib")
    r = client.post("/api/cost/estimate.html", json={"profile": PROFILE})
    assert r.status_code == 200 and "<svg" in r.text


def test_catalog(client: TestClient) -> None:
    data = client.get("/api/cost/catalog").json()
    assert any(t["id"] == "aws.lambda.x86" for t in data["targets"])


def test_report_from_metered_usage(app: FastAPI, client: TestClient) -> None:
    meter: Meter = app.state.meter
    for _ in range(3):
        meter.record(
            UsageRecord(
                "fraud",
                "blue",
                requests=100,
                rows=100,
                compute_s=10.0,
                bytes_in=100_000,
                bytes_out=20_000,
            )
        )
    meter.observe_concurrency("fraud", "blue", 4)
    meter.observe_memory("fraud", "blue", 900.0)
    r = client.get(
        "/api/cost/report", params={"endpoint": "fraud", "window": "7d", "curves": "false"}
    )
    assert r.status_code == 200, r.text
    (item,) = r.json()
    assert item["usage"]["requests"] == 300 and item["usage"]["peak_concurrency"] == 4
    assert item["profile"]["duration_s"] == pytest.approx(0.1)
    assert item["profile"]["memory_mb"] == 900
    assert item["advice"]["recommendation"]
    missing = client.get("/api/cost/report", params={"endpoint": "nope"})
    assert missing.status_code == 404 and "no usage metered" in missing.json()["error"]


def test_cli_report_over_http(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.state.meter.record(UsageRecord("fraud", "blue", 50, 50, 5.0, 1000, 1000))
    seen: dict[str, Any] = {}

    def fake_get(
        url: str, params: dict[str, Any], headers: dict[str, str], timeout: float
    ) -> httpx.Response:
        seen.update(url=url, headers=headers)
        return client.get(url.removeprefix("http://zs:9000"), params=params)

    monkeypatch.setattr(cli_cost.httpx, "get", fake_get)
    result = CliRunner().invoke(
        cli_cost.app,
        ["report", "--endpoint", "fraud", "--window", "1d"],
        env={"ZEROSERVE_URL": "http://zs:9000", "ZEROSERVE_API_KEY": "k1", "COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "fraud" in result.output and "50 requests" in result.output
    assert seen["url"] == "http://zs:9000/api/cost/report"
    assert seen["headers"] == {"Authorization": "Bearer k1"}


def test_report_warns_on_a_short_window_and_says_what_it_assumed(
    app: FastAPI, client: TestClient
) -> None:
    # Traffic that started a minute ago: extrapolating it to 730 h deserves a warning.
    app.state.meter.record(UsageRecord("fraud", "blue", 60, 60, 6.0, 1000, 1000))
    r = client.get("/api/cost/report", params={"endpoint": "fraud", "curves": "false"})
    assert r.status_code == 200, r.text
    (item,) = r.json()
    assert item["warnings"] and item["warnings"][0].startswith("measured only 0.0 h of traffic")
    assert "without the daily and weekly cycles" in item["warnings"][0]
    # No replica memory was observed: the report says it assumed 1,024 MB.
    assert item["assumptions"][0] == "memory: 1,024 MB assumed (no replica memory observed)"
    assert item["profile"]["memory_mb"] == 1024


def test_report_leaves_internal_batch_endpoints_out(app: FastAPI, client: TestClient) -> None:
    meter: Meter = app.state.meter
    meter.record(UsageRecord("fraud", "blue", 60, 60, 6.0, 1000, 1000))
    meter.record(UsageRecord("batch-7f3a", "v1", 5000, 5000, 50.0, 10, 10))
    r = client.get("/api/cost/report", params={"curves": "false"})
    assert r.status_code == 200, r.text
    by_name = {i["endpoint"]: i for i in r.json()}
    assert by_name["batch-7f3a"]["internal"] and by_name["batch-7f3a"]["advice"] is None
    assert not by_name["fraud"]["internal"] and by_name["fraud"]["advice"]["recommendation"]
    r = client.get("/api/cost/report", params={"curves": "false", "include_internal": "true"})
    by_name = {i["endpoint"]: i for i in r.json()}
    assert by_name["batch-7f3a"]["advice"]["recommendation"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"instance_types": {"aws.ec2.ondemand": "x9.huge"}}, "instance_types.aws.ec2.ondemand"),
        ({"commitments": {"aws.fargate": "5yr"}}, "commitments.aws.fargate"),
        ({"cached_input_share": 1.5}, "cached_input_share"),
        ({"output_tokens_per_request": 10, "self_host_tokens_per_s": 0}, "self_host_tokens_per_s"),
    ],
)
def test_bad_profile_is_a_4xx_naming_the_field(
    client: TestClient, change: dict[str, Any], field: str
) -> None:
    r = client.post("/api/cost/estimate", json={"profile": {**PROFILE, **change}, "curves": False})
    assert 400 <= r.status_code < 500, r.text
    assert field in r.text


def test_discount_over_100_percent_is_a_4xx(client: TestClient) -> None:
    body = {
        "profile": PROFILE,
        "overrides": [{"target": "aws.fargate", "discount_pct": 150}],
        "curves": False,
    }
    r = client.post("/api/cost/estimate", json=body)
    assert r.status_code == 422 and "discount_pct" in r.text
