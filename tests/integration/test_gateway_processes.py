"""Several gateway processes on one port: the control process and its secondaries.

The server runs with ZEROSERVE_GATEWAY_PROCESSES=2. Each test opens fresh
connections (the kernel hands each to whichever process accepts it) and checks
that answers are right whichever process gave them, that the control process
sees every process's requests (metrics, autoscaling), and that a secondary
follows the replicas the control process starts, retires and loses.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests import modelkit
from tests.integration.conftest import Api
from tests.polling import wait_for
from zeroserve.process import ServerProcess

ROWS = np.random.default_rng(7).random((600, modelkit.N_FEATURES)).astype(np.float32)
CONNECTIONS = 16
ROLES = ("control", "secondary")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"ZEROSERVE_GATEWAY_PROCESSES": "2"}
    with ServerProcess(tmp_path_factory.mktemp("gateways"), env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def api(server: ServerProcess, models_dir: Path) -> Api:
    api = Api(server.url)
    api.register("echo", models_dir / "echo.py", models_dir / "sample.npy", trust=True)
    return api


def gateways(api: Api) -> list[dict[str, Any]]:
    # A fresh connection: the shared one may be held by a secondary a test kills.
    with httpx.Client(base_url=api.url, timeout=30) as client:
        listed: list[dict[str, Any]] = api.check(client.get("/api/gateways"))
    return listed


def secondary(api: Api) -> dict[str, Any]:
    """The secondary's entry; while it is being restarted, an entry that is not ready."""
    missing = {"pid": 0, "ready": False, "answered": 0, "restarts": 0}
    return next((g for g in gateways(api) if g["role"] == "secondary"), missing)


def answered(api: Api) -> dict[str, int]:
    """Requests answered by each role, from one snapshot of the list."""
    listed = gateways(api)
    return {role: sum(g["answered"] for g in listed if g["role"] == role) for role in ROLES}


def answered_beyond(api: Api, total: int) -> dict[str, int] | None:
    now = answered(api)
    return now if sum(now.values()) > total else None


def invoke_on_fresh_connections(
    url: str, endpoint: str, rows: np.ndarray, connections: int = CONNECTIONS
) -> list[httpx.Response]:
    """One request per row, spread over ``connections`` new keep-alive connections."""

    def worker(part: np.ndarray) -> list[httpx.Response]:
        with httpx.Client(base_url=url, timeout=60) as client:
            return [
                client.post(f"/v1/endpoints/{endpoint}/invocations", json={"instances": [row]})
                for row in part.tolist()
            ]

    parts = np.array_split(rows, connections)
    with concurrent.futures.ThreadPoolExecutor(connections) as pool:
        return [r for answers in pool.map(worker, parts) for r in answers]


def scores(responses: list[httpx.Response]) -> np.ndarray:
    bad = [(r.status_code, r.text) for r in responses if r.status_code != 200]
    assert not bad, bad[:3]
    return np.array([r.json()["predictions"][0] for r in responses])


def test_every_process_answers_and_every_answer_is_right(api: Api, server: ServerProcess) -> None:
    api.deploy("echo", endpoint="spread", min_replicas=2, max_replicas=2)
    before = {g["pid"]: g["answered"] for g in gateways(api)}
    responses = invoke_on_fresh_connections(server.url, "spread", ROWS)
    np.testing.assert_allclose(scores(responses), modelkit.python_model_predict(ROWS), rtol=1e-9)

    # Both processes served part of it, and the control process counts all of it.
    def counted() -> bool:
        now = gateways(api)
        return sum(g["answered"] - before.get(g["pid"], 0) for g in now) == len(ROWS)

    wait_for(counted, 20, lambda: f"every answer counted: {gateways(api)}")
    assert all(r.headers["x-zeroserve-variant"] == "v1" for r in responses)
    assert len({r.headers["x-request-id"] for r in responses}) == len(ROWS)
    assert all(g["answered"] > before.get(g["pid"], 0) for g in gateways(api)), gateways(api)
    wait_for(
        lambda: api.metric("zeroserve_requests_total", endpoint="spread", code="200") == len(ROWS),
        20,
        lambda: api.metric("zeroserve_requests_total", endpoint="spread", code="200"),
    )
    # Rows are counted by every process's batches, and merged once in /metrics.
    wait_for(
        lambda: api.metric("zeroserve_batch_size_rows_sum", endpoint="spread") == len(ROWS), 20
    )

    # Per-variant outcomes too: the stats API counts every process's requests once.
    def outcome_count() -> int:
        (variant,) = api.check(api.http.get("/api/endpoints/spread/stats"))
        return int(variant["windows"]["5m"]["requests"])

    wait_for(lambda: outcome_count() == len(ROWS), 20, outcome_count)
    latency = api.metric("zeroserve_request_duration_seconds_count", endpoint="spread")
    assert latency == len(ROWS)


def test_control_api_answers_through_any_process(api: Api, server: ServerProcess) -> None:
    """A secondary forwards what it does not serve; ``Via`` marks the forwarded answers."""
    api.deploy("echo", endpoint="listed")
    forwarded = 0
    for _ in range(200):
        with httpx.Client(base_url=server.url, timeout=30) as client:
            response = client.get("/api/endpoints/listed")
            assert response.status_code == 200, response.text
            assert response.json()["spec"]["name"] == "listed"
            forwarded += "via" in response.headers
            missing = client.get("/api/endpoints/nope")
            assert missing.status_code == 404 and "nope" in missing.json()["error"]
        if forwarded >= 3:
            break
    assert forwarded >= 3


def test_deploy_then_invoke_on_another_connection_finds_the_endpoint(
    api: Api, server: ServerProcess
) -> None:
    """A deploy returns only once every process routes to the new endpoint."""
    for i in range(6):
        name = f"fresh-{i}"
        api.deploy("echo", endpoint=name)
        responses = invoke_on_fresh_connections(server.url, name, ROWS[:8], connections=8)
        np.testing.assert_allclose(scores(responses), modelkit.python_model_predict(ROWS[:8]))
        api.check(api.http.delete(f"/api/endpoints/{name}"))
        gone = invoke_on_fresh_connections(server.url, name, ROWS[:8], connections=8)
        assert {r.status_code for r in gone} == {404}


def test_cold_start_from_zero_through_every_process(api: Api, server: ServerProcess) -> None:
    api.deploy(
        "echo", endpoint="sleepy", mode="serverless", max_replicas=2, idle_timeout_s=1,
        scale_down_delay_s=0.5,
    )  # fmt: skip
    wait_for(lambda: api.replica_pids("sleepy") == [], 30, "scale to zero")
    responses = invoke_on_fresh_connections(server.url, "sleepy", ROWS[:48], connections=24)
    np.testing.assert_allclose(scores(responses), modelkit.python_model_predict(ROWS[:48]))
    assert any(r.headers.get("x-zeroserve-cold-start") == "true" for r in responses)
    # Demand seen by the secondary counted too: back to zero only after it stopped.
    wait_for(lambda: api.replica_pids("sleepy") == [], 30, "scale to zero after the burst")


def test_scale_down_while_serving_fails_nothing(api: Api, server: ServerProcess) -> None:
    """Retired replicas finish what every process sent them before they exit."""
    api.deploy("echo", endpoint="shrink", min_replicas=3, max_replicas=3, max_batch_size=4)
    wait_for(lambda: len(api.replica_pids("shrink")) == 3, 30, "three replicas")
    served = api.metric("zeroserve_requests_total", endpoint="shrink")
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        load = pool.submit(invoke_on_fresh_connections, server.url, "shrink", ROWS, 12)
        # Scale down once the load is well under way (the control process counts its share
        # at once; the secondary's arrives within 0.1 s).
        wait_for(
            lambda: api.metric("zeroserve_requests_total", endpoint="shrink") >= served + 24,
            30,
            "the load to start",
            interval_s=0.01,
        )
        api.deploy("echo", endpoint="shrink", min_replicas=1, max_replicas=1, max_batch_size=4)
        responses = load.result(timeout=120)
    np.testing.assert_allclose(scores(responses), modelkit.python_model_predict(ROWS))
    wait_for(lambda: len(api.replica_pids("shrink")) == 1, 30, "one replica left")


def test_a_crash_is_explained_by_the_process_that_held_the_request(
    api: Api, server: ServerProcess
) -> None:
    api.deploy("echo", endpoint="fragile", min_replicas=1, max_replicas=1)
    crash = [-999.0, *ROWS[0, 1:].tolist()]

    for _ in range(40):
        before = answered(api)
        with httpx.Client(base_url=server.url, timeout=60) as client:
            response = client.post("/v1/endpoints/fragile/invocations", json={"instances": [crash]})
        assert response.status_code == 503
        assert "exited with code 3" in response.json()["error"]
        wait_for(lambda: len(api.replica_pids("fragile")) == 1, 30, "a replacement replica")
        # Exactly one process counts the request; the secondary reports every 0.1 s.
        total = sum(before.values())
        after = wait_for(partial(answered_beyond, api, total), 15, "the crash request's count")
        assert sum(after.values()) == total + 1, (before, after)
        if after["secondary"] > before["secondary"]:
            break  # the secondary held it, and said how the replica died
    else:
        pytest.fail("no crash request reached the secondary in 40 connections")
    healthy = invoke_on_fresh_connections(server.url, "fragile", ROWS[:16], connections=8)
    np.testing.assert_allclose(scores(healthy), modelkit.python_model_predict(ROWS[:16]))


def test_a_killed_secondary_is_restarted_and_serves_again(api: Api, server: ServerProcess) -> None:
    api.deploy("echo", endpoint="survivor", min_replicas=1, max_replicas=1)
    old = secondary(api)
    os.kill(old["pid"], signal.SIGKILL)
    api.http.close()  # its connection may have been the secondary's: open a new one
    api.http = httpx.Client(base_url=api.url, timeout=120)
    fresh = wait_for(
        lambda: (s := secondary(api))["pid"] not in {old["pid"], 0} and s["ready"] and s,
        40,
        lambda: f"a new secondary: {gateways(api)}",
    )
    assert fresh["restarts"] == old["restarts"] + 1
    responses = invoke_on_fresh_connections(server.url, "survivor", ROWS[:64])
    np.testing.assert_allclose(scores(responses), modelkit.python_model_predict(ROWS[:64]))
    wait_for(lambda: secondary(api)["answered"] > 0, 20, "the new secondary to answer")
