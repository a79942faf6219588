"""Monitoring with two gateway processes: the secondary's requests are logged and
count towards rollouts."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Api
from tests.integration.test_rollouts import MODEL, drive, finished
from zeroserve.process import ServerProcess


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    env = {"ZEROSERVE_GATEWAY_PROCESSES": "2"}
    with ServerProcess(tmp_path_factory.mktemp("two"), env=env) as server:
        api = Api(server.url)
        root = tmp_path_factory.mktemp("models")
        sample = np.random.default_rng(0).normal(size=(200, 3))
        sample[:, 0] = np.sign(sample[:, 0]) * (np.floor(np.abs(sample[:, 0]) * 100) / 100 + 0.0055)
        np.save(root / "sample.npy", sample.astype(np.float32))
        for i, fail in enumerate((0.0, 0.3), start=1):
            (root / f"m{i}.py").write_text(MODEL.format(shift=0.0, fail=fail))
            api.register("m", root / f"m{i}.py", root / "sample.npy", trust=True)
        yield api


def test_every_process_logs_its_requests(api: Api) -> None:
    api.deploy("m", "1", endpoint="logged")
    api.check(api.http.put("/api/endpoints/logged/logging", json={"rate": 1.0}))
    before = [g["answered"] for g in api.check(api.http.get("/api/gateways"))]
    for i in range(60):
        with httpx.Client(base_url=api.url, timeout=30) as fresh:  # new connections spread
            r = fresh.post("/v1/endpoints/logged/invocations", json={"instances": [[i, 0, 0]]})
            assert r.status_code == 200
    after = [g["answered"] for g in api.check(api.http.get("/api/gateways"))]
    assert len(after) == 2 and all(a > b for a, b in zip(after, before, strict=True))
    sql = {"sql": "SELECT count(*) FROM predictions", "since": None}
    deadline = time.monotonic() + 30
    count = 0
    while time.monotonic() < deadline:
        count = api.check(api.http.post("/api/endpoints/logged/logs/query", json=sql))["rows"][0][0]
        if count == 60:
            break
        time.sleep(0.5)
    assert count == 60


def test_a_broken_canary_is_judged_on_both_processes(api: Api) -> None:
    api.deploy("m", "1", endpoint="broken")
    body = {"to": "m:2", "steps": [20, 50, 100], "bake_s": 2, "min_requests": 20}
    api.check(api.http.post("/api/endpoints/broken/rollout", json=body))
    answers = drive(api, "broken", finished(api, "broken"))
    status = api.check(api.http.get("/api/endpoints/broken/rollout"))
    assert (status["state"], status["fired"]) == ("rolled_back", "error_rate"), status["reason"]
    assert all(a.status_code == 200 for a in answers)
