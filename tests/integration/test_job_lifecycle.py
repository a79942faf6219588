"""M7/M8 and H2-H4 against a real server with default egress: queue cap (429), queued jobs
of a deleted endpoint cancelled with a reason, retention purge, bounded list limits, and
SSRF targets refused at submit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess, free_port

ROW = [0.25] * 98
ENV = {
    "ZEROSERVE_MAX_QUEUED_JOBS": "3",
    "ZEROSERVE_JOB_RETENTION_S": "2",
    "ZEROSERVE_JOB_PURGE_INTERVAL_S": "0.5",
}


@pytest.fixture(scope="module")
def lifecycle(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[ServerProcess, Api]]:
    with ServerProcess(tmp_path_factory.mktemp("lifecycle"), env=ENV) as proc:
        api = Api(proc.url)
        api.register("echo", models_dir / "echo.py", models_dir / "sample.npy", trust=True)
        api.deploy("echo", mode="async", max_replicas=1, target_concurrency=1, max_batch_size=1)
        yield proc, api


def submit(api: Api, body: Any, **headers: str) -> Any:
    return api.http.post("/v1/endpoints/echo/async", json=body, headers=headers)


def status(api: Api, job_id: str) -> Any:
    return api.http.get(f"/v1/jobs/{job_id}")


def test_ssrf_targets_are_refused_at_submit(lifecycle: tuple[ServerProcess, Api]) -> None:
    server, api = lifecycle
    receiver = f"http://127.0.0.1:{free_port()}/hook"
    for url in (receiver, "http://169.254.169.254/latest/meta-data/", "http://[::1]/x"):
        refused = submit(api, {"instances": [ROW]}, **{"X-Callback-Url": url})
        assert refused.status_code == 403, refused.text
        assert "ZEROSERVE_EGRESS_PRIVATE_NETWORKS" in refused.json()["error"]
    for uri in (
        "http://127.0.0.1:8300/internal/admin?token=1",
        "simplecache::file:///etc/hostname",
        "blockcache::file:///etc/hostname",
        "memory://x",
    ):
        refused = submit(api, {"input_uri": uri})
        assert refused.status_code == 403, (uri, refused.text)
    assert submit(api, {"input_uri": "foo://bar"}).status_code == 403
    staged = server.data_dir / "staged.json"
    staged.write_text('{"instances": [[0.0]]}')
    bad_key = submit(api, {"input_uri": str(staged), "idempotency_key": {"a": 1}})
    assert bad_key.status_code == 400, bad_key.text


def test_list_limits_are_bounded(lifecycle: tuple[ServerProcess, Api]) -> None:
    _, api = lifecycle
    for limit in ("100000", "-1", "0"):
        response = api.http.get("/api/jobs", params={"limit": limit})
        assert response.status_code == 422, response.text
        assert "limit" in response.text
    assert api.http.get("/api/jobs", params={"limit": "1000"}).status_code == 200
    assert api.http.get("/api/jobs/dead-letters", params={"limit": "5000"}).status_code == 422


def test_queue_cap_delete_cancels_and_purge(lifecycle: tuple[ServerProcess, Api]) -> None:
    server, api = lifecycle
    first = submit(api, {"instances": [[-111.0, 4.0, *ROW[2:]]]}).json()["job_id"]
    deadline = time.monotonic() + 30
    while status(api, first).json()["status"] != "running":
        assert time.monotonic() < deadline, "the first job never started"
        time.sleep(0.05)
    queued = []
    for _ in range(3):  # capacity 1 is busy: these wait
        response = submit(api, {"instances": [ROW]})
        assert response.status_code == 202, response.text
        queued.append(response.json()["job_id"])
    over = submit(api, {"instances": [ROW]})
    assert over.status_code == 429, over.text
    assert int(over.headers["Retry-After"]) >= 1
    assert "ZEROSERVE_MAX_QUEUED_JOBS" in over.json()["error"]
    inputs = server.data_dir / "artifacts" / "async" / "inputs"
    assert len(list(inputs.glob("*.json"))) == 4

    assert api.http.delete("/api/endpoints/echo").status_code == 204
    for job_id in queued:
        job = status(api, job_id).json()
        assert job["status"] == "cancelled"
        assert job["error"] == "cancelled: endpoint 'echo' was deleted before the job ran"

    # Retention 2 s: finished jobs, their inputs and results go by themselves.
    deadline = time.monotonic() + 30
    while any(status(api, j).status_code != 404 for j in queued):
        assert time.monotonic() < deadline, "finished jobs were never purged"
        time.sleep(0.2)
    assert not [p for p in inputs.glob("*.json") if p.stem in queued]
