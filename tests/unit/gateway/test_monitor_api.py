"""The monitoring routes in-process: a FastAPI app with the real registry (SQLite),
the real prediction log and a recording stand-in for ``controller.apply``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from zeroserve.errors import ZeroserveError
from zeroserve.gateway import monitor_api
from zeroserve.gateway.monitor_service import MonitorService
from zeroserve.registry.registry import Registry
from zeroserve.types import EndpointSpec, Signature, TensorSpec, VariantSpec

pytest.importorskip("duckdb")
SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 3])],
    outputs=[TensorSpec(name="probabilities", dtype="float64", shape=[-1, 2])],
)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, MonitorService]]:
    registry = Registry.open(f"sqlite:///{tmp_path / 'r.db'}", (tmp_path / "art").as_uri())
    applied: list[EndpointSpec] = []

    async def apply(spec: EndpointSpec) -> None:
        applied.append(spec)

    svc = MonitorService(registry, apply)
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        d = tmp_path / name
        d.mkdir()
        (d / "model.onnx").write_text(name)
        np.save(d / "reference.npy", rng.normal(size=(2000, 3)))
        registry.register_version("fraud", d, flavor="onnx", signature=SIG)
    registry.put_endpoint(
        EndpointSpec(name="e", variants=[VariantSpec(name="v1", model="fraud", version=1)])
    )
    app = FastAPI()

    async def on_error(_req: Request, exc: Exception) -> Response:
        # The server maps errors the same way (gateway/app.py, install_error_handlers).
        assert isinstance(exc, ZeroserveError)
        return JSONResponse(exc.to_dict(), status_code=exc.status_code)

    app.add_exception_handler(ZeroserveError, on_error)
    app.state.monitor = svc
    app.include_router(monitor_api.admin_router, prefix="/api")
    app.include_router(monitor_api.data_router)
    with TestClient(app) as c:
        yield c, svc
    registry.engine.dispose()


def answer(svc: MonitorService, request_id: str, variant: str, x: np.ndarray, p1: float) -> None:
    spec = svc.registry.get_endpoint("e")
    outputs = {"probabilities": np.tile([1 - p1, p1], (len(x), 1))}
    svc.after_answer(spec, variant, 1, SIG, request_id, {"input": x}, outputs, 200, 1.0)


def test_traffic_split_and_its_errors(client: tuple[TestClient, MonitorService]) -> None:
    c, svc = client
    r = c.put("/api/endpoints/e/traffic", json={"weights": {"fraud:1": 90, "fraud:2": 10}})
    assert r.status_code == 200, r.text
    assert r.json()["weights"] == {"v1": 90.0, "v2": 10.0}
    assert [v.name for v in svc.registry.get_endpoint("e").variants] == ["v1", "v2"]
    r = c.put("/api/endpoints/e/traffic", json={"weights": {"fraud:1": 0}})
    assert r.status_code == 400 and "sum to 0" in r.json()["error"]
    r = c.put("/api/endpoints/e/traffic", json={"weights": {"fraud:7": 1}})
    assert r.status_code == 404 and "no version" in r.json()["error"]


def test_rollout_lifecycle_over_http(client: tuple[TestClient, MonitorService]) -> None:
    c, _ = client
    r = c.post(
        "/api/endpoints/e/rollout", json={"to": "fraud:2", "steps": [5, 50, 100], "bake_s": 1}
    )
    assert r.status_code == 201, r.text
    assert (r.json()["canary"], r.json()["canary_weight"]) == ("v2", 5)
    again = c.post("/api/endpoints/e/rollout", json={"to": "fraud:2"})
    assert again.status_code == 409 and "already has a rollout" in again.json()["error"]
    busy = c.put("/api/endpoints/e/traffic", json={"weights": {"fraud:1": 1}})
    assert busy.status_code == 409
    assert c.get("/api/endpoints/e/rollout").json()["state"] == "running"
    assert c.delete("/api/endpoints/e/rollout").json()["state"] == "aborted"
    assert [x["state"] for x in c.get("/api/rollouts").json()] == ["aborted"]
    bad = c.post("/api/endpoints/e/rollout", json={"to": "fraud:2", "steps": [50, 5]})
    assert bad.status_code == 400 and "increase" in bad.json()["error"]
    assert c.post("/api/endpoints/e/rollout", json={"to": "fraud"}).status_code == 400
    assert c.get("/api/endpoints/nope/rollout").status_code == 404


def test_logging_query_feedback_and_ab(client: tuple[TestClient, MonitorService]) -> None:
    c, svc = client
    assert c.put("/api/endpoints/e/logging", json={"rate": 1.0}).status_code == 200
    assert c.put("/api/endpoints/e/logging", json={"rate": 2}).status_code == 422
    rng = np.random.default_rng(1)
    for i in range(40):
        answer(svc, f"r{i}", "v1", rng.normal(size=(1, 3)), 0.8 if i % 2 else 0.2)
    r = c.post("/api/endpoints/e/logs/query", json={"sql": "SELECT count(*) AS n FROM predictions"})
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [[40]]
    refused = c.post("/api/endpoints/e/logs/query", json={"sql": "DROP VIEW predictions"})
    assert refused.status_code == 400 and "only SELECT" in refused.json()["error"]

    for i in range(40):
        ok = c.post("/v1/endpoints/e/feedback", json={"request_id": f"r{i}", "outcome": i % 2})
        assert ok.status_code == 200, ok.text
    unknown = c.post("/v1/endpoints/e/feedback", json={"request_id": "nope", "outcome": 1})
    assert unknown.status_code == 404 and "unknown or expired" in unknown.json()["error"]
    empty = c.post("/v1/endpoints/e/feedback", json={"request_id": "r1"})
    assert empty.status_code == 400

    report = c.get("/api/endpoints/e/ab").json()
    assert report["joined_rows"] == 40
    assert report["variants"]["v1"]["accuracy"]["value"] == 1.0


def test_drift_report_json_and_html(client: tuple[TestClient, MonitorService]) -> None:
    c, svc = client
    c.put("/api/endpoints/e/logging", json={"rate": 1.0})
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5000, 3))
    x[:, 1] += 1.0
    answer(svc, "big", "v1", x, 0.5)
    report = c.get("/api/endpoints/e/drift", params={"window": "1h"}).json()
    (variant,) = report["variants"]
    assert variant["drifted"] == ["input_1"]
    page = c.get("/api/endpoints/e/drift", params={"format": "html"})
    assert page.headers["content-type"].startswith("text/html")
    assert "<svg" in page.text
    assert c.get("/api/endpoints/e/drift", params={"window": "soon"}).status_code == 400
