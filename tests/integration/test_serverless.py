"""Serverless endpoints: scale to zero, cold starts that never fail, autoscaling, limits."""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests import modelkit
from tests.integration.conftest import Api
from tests.polling import wait_for

ROW = [0.25] * 98


def slow(seconds: float) -> list[float]:
    return [-111.0, seconds, *ROW[2:]]


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            return "zombie" in fh.read()
    except FileNotFoundError:
        return True


@pytest.fixture(scope="module")
def echo(api: Api, models_dir: Path, deployed: dict[str, str]) -> str:
    return "echo"  # registered by the deployed fixture, trusted python model


def test_scales_to_zero_after_idle_and_comes_back_cold(api: Api, echo: str) -> None:
    api.deploy(
        echo, endpoint="sl-idle", mode="serverless", idle_timeout_s=1, scale_down_delay_s=0.5
    )
    assert api.replica_pids("sl-idle") == []  # serverless starts at zero
    first = api.invoke("sl-idle", {"instances": [ROW]})
    assert first.status_code == 200
    assert first.headers.get("x-zeroserve-cold-start") == "true"
    np.testing.assert_allclose(
        first.json()["predictions"], modelkit.python_model_predict(np.array([ROW]))
    )
    pids = api.replica_pids("sl-idle")
    assert len(pids) == 1
    warm = api.invoke("sl-idle", {"instances": [ROW]})
    assert "x-zeroserve-cold-start" not in warm.headers
    wait_for(lambda: api.replica_pids("sl-idle") == [], 30, "scale to zero")
    wait_for(lambda: gone(pids[0]), 15, f"replica process {pids[0]} to exit")
    again = api.invoke("sl-idle", {"instances": [ROW]})
    assert again.status_code == 200
    assert again.headers.get("x-zeroserve-cold-start") == "true"
    assert api.metric("zeroserve_cold_starts_total", endpoint="sl-idle") == 2
    assert api.metric("zeroserve_cold_start_seconds_count", endpoint="sl-idle") == 2


def test_a_burst_at_zero_replicas_all_succeeds(api: Api, echo: str) -> None:
    api.deploy(echo, endpoint="sl-burst", mode="serverless", idle_timeout_s=30, max_replicas=4)
    assert api.replica_pids("sl-burst") == []
    x = np.random.default_rng(1).random((48, 98)).astype(np.float32)
    start = threading.Barrier(24)

    def one(i: int) -> tuple[int, float, bool]:
        if i < 24:
            start.wait()
        response = api.invoke("sl-burst", {"instances": [x[i].tolist()]})
        body = response.json()
        value = body["predictions"][0] if response.status_code == 200 else float("nan")
        return response.status_code, value, "x-zeroserve-cold-start" in response.headers

    with concurrent.futures.ThreadPoolExecutor(24) as pool:
        results = list(pool.map(one, range(len(x))))
    assert [r[0] for r in results] == [200] * len(x)
    np.testing.assert_allclose([r[1] for r in results], modelkit.python_model_predict(x), rtol=1e-6)
    assert any(r[2] for r in results)


def test_replicas_grow_under_load_and_shrink_after(api: Api, echo: str) -> None:
    api.deploy(
        echo,
        endpoint="sl-load",
        mode="serverless",
        max_replicas=3,
        target_concurrency=1,
        idle_timeout_s=1.5,
        scale_down_delay_s=0.5,
        max_batch_size=1,
    )
    stop = time.monotonic() + 3.0
    counts: list[int] = []
    statuses: list[int] = []

    def client() -> None:
        while time.monotonic() < stop:
            statuses.append(api.invoke("sl-load", {"instances": [slow(0.05)]}).status_code)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        counts.append(len(api.replica_pids("sl-load")))
        time.sleep(0.1)
    for t in threads:
        t.join()
    assert set(statuses) == {200}
    assert max(counts) == 3, counts  # grew to the cap under load
    wait_for(lambda: api.replica_pids("sl-load") == [], 30, "scale to zero after the load")
    ups = api.metric("zeroserve_scale_events_total", endpoint="sl-load", direction="up")
    downs = api.metric("zeroserve_scale_events_total", endpoint="sl-load", direction="down")
    assert ups >= 3  # counted per replica: at least the three it grew to
    assert downs == ups  # back at zero: every replica started was retired


def test_memory_limit_kills_only_the_offending_replica(api: Api, echo: str) -> None:
    api.deploy(echo, endpoint="sl-mem", min_replicas=2, max_replicas=2, memory_limit_mb=300)
    before = set(wait_for(lambda: len(p := api.replica_pids("sl-mem")) == 2 and p, 30))
    hog = api.invoke("sl-mem", {"instances": [[-777.0, *ROW[1:]]]})
    assert hog.status_code == 503
    assert "over its memory limit of 300 MB" in hog.json()["error"]
    after = set(
        wait_for(
            lambda: len(p := set(api.replica_pids("sl-mem"))) == 2 and p != before and p,
            30,
            "a replacement for the offender",
        )
    )
    survivors = before & after
    assert len(survivors) == 1  # only the offender was killed
    assert all(not gone(pid) for pid in survivors)
    assert api.invoke("sl-mem", {"instances": [ROW]}).status_code == 200
    assert api.metric("zeroserve_replica_crashes_total", endpoint="sl-mem", reason="memory") == 1


def test_a_full_queue_answers_429_with_retry_after(api: Api, echo: str) -> None:
    api.deploy(
        echo, endpoint="sl-queue", min_replicas=1, max_replicas=1, max_queue=2, max_batch_size=1
    )

    def one(_: int) -> tuple[int, str | None]:
        response = api.invoke("sl-queue", {"instances": [slow(0.3)]})
        return response.status_code, response.headers.get("retry-after")

    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        results = list(pool.map(one, range(10)))
    codes = [code for code, _ in results]
    assert codes.count(200) >= 3  # one running + two queued
    assert codes.count(429) >= 1
    assert set(codes) <= {200, 429}
    assert all(retry == "1" for code, retry in results if code == 429)


def test_request_timeout_and_endpoint_concurrency(api: Api, echo: str) -> None:
    api.deploy(
        echo,
        endpoint="sl-limits",
        min_replicas=1,
        max_replicas=1,
        request_timeout_s=0.3,
        max_concurrency=2,
        max_batch_size=1,
    )
    late = api.invoke("sl-limits", {"instances": [slow(1.0)]})
    assert late.status_code == 504
    assert "within 0.3 s" in late.json()["error"]
    wait_for(lambda: api.idle("sl-limits"), 30, "the replica to finish the late request")

    def one(_: int) -> int:
        return api.invoke("sl-limits", {"instances": [slow(0.2)]}).status_code

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(one, range(6)))
    assert 429 in codes and 200 in codes


def test_zygote_eviction_is_transparent(api: Api, echo: str, server: object) -> None:
    api.deploy(echo, endpoint="sl-evict", mode="serverless", idle_timeout_s=30)
    status = api.endpoint("sl-evict")["status"]["variants"][0]
    assert status["zygote_alive"]
    evicted = api.http.post("/api/endpoints/sl-evict/evict")
    assert evicted.status_code == 200, evicted.text
    assert not api.endpoint("sl-evict")["status"]["variants"][0]["zygote_alive"]
    response = api.invoke("sl-evict", {"instances": [ROW]})  # rebuilds the zygote, then forks
    assert response.status_code == 200
    assert response.headers.get("x-zeroserve-cold-start") == "true"
    assert api.endpoint("sl-evict")["status"]["variants"][0]["zygote_alive"]


def test_fork_safety_each_replica_reseeds(api: Api, models_dir: Path, tmp_path: Path) -> None:
    """Random state must not be shared across fork(): two replicas draw different numbers."""
    source = tmp_path / "rand.py"
    source.write_text(
        "import numpy as np, os\n"
        "class Model:\n"
        "    def predict(self, inputs):\n"
        "        n = len(inputs['input'])\n"
        "        return {'draw': np.random.random(n), 'pid': np.full(n, os.getpid())}\n"
    )
    api.register("rand", source, models_dir / "sample.npy", trust=True)
    api.deploy("rand", min_replicas=2, max_replicas=2, max_batch_size=1)
    seen: dict[int, float] = {}
    for _ in range(50):
        out = api.invoke("rand", {"instances": [ROW]}).json()["predictions"][0]
        seen.setdefault(int(out["pid"]), out["draw"])
        if len(seen) == 2:
            break
    assert len(seen) == 2, "requests should reach both replicas"
    assert len(set(seen.values())) == 2
    assert os.getpid() not in seen
