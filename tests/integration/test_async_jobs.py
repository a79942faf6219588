"""Async inference against a real server: results, durability across SIGKILL, retries,
dead letters, cancellation, large payloads and signed webhooks."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import modelkit
from tests.integration.conftest import Api
from tests.polling import wait_for
from zeroserve.jobs.webhooks import verify
from zeroserve.process import ServerProcess, free_port
from zeroserve.runtimes.onnx import make_session

ENV = {
    "ZEROSERVE_JOB_VISIBILITY_S": "2",
    "ZEROSERVE_JOB_MAX_ATTEMPTS": "2",
    # The webhook receivers here listen on loopback, which egress refuses by default.
    "ZEROSERVE_EGRESS_PRIVATE_NETWORKS": '["127.0.0.0/8"]',
}
ROW = [0.25] * 98


def slow(seconds: float, *rest: float) -> list[float]:
    return [-111.0, seconds, *(rest or ROW[2:])]


@pytest.fixture(scope="module")
def jobs_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[ServerProcess, Api]]:
    data_dir = tmp_path_factory.mktemp("jobs")
    with ServerProcess(data_dir, env=ENV) as proc:
        api = Api(proc.url)
        api.register("forest", models_dir / "forest.skops", compile="onnx")
        api.register("echo", models_dir / "echo.py", models_dir / "sample.npy", trust=True)
        api.deploy("forest", mode="async", max_replicas=2, idle_timeout_s=1, scale_down_delay_s=0.5)
        api.deploy("echo", mode="async", max_replicas=2, idle_timeout_s=5, max_batch_size=1)
        yield proc, api


def submit(api: Api, endpoint: str, body: Any, **headers: str) -> dict[str, Any]:
    response = api.http.post(f"/v1/endpoints/{endpoint}/async", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_done(api: Api, job_ids: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    """Each job's final status, once none of them is queued or running."""
    done: dict[str, dict[str, Any]] = {}

    def all_done() -> bool:
        for job_id in job_ids:
            if job_id not in done:
                status = api.http.get(f"/v1/jobs/{job_id}").json()
                if status["status"] not in {"queued", "running"}:
                    done[job_id] = status
        return len(done) == len(job_ids)

    wait_for(all_done, timeout_s, lambda: f"{len(job_ids) - len(done)} unfinished jobs")
    return done


def test_a_thousand_jobs_match_the_model(jobs_server: tuple[ServerProcess, Api]) -> None:
    server, api = jobs_server
    finished = api.metric("zeroserve_jobs_finished_total", endpoint="forest", status="succeeded")
    x = np.random.default_rng(3).random((1000, 98)).astype(np.float32)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ids = list(
            pool.map(
                lambda i: submit(api, "forest", {"instances": [x[i].tolist()]})["job_id"],
                range(len(x)),
            )
        )
    assert len(set(ids)) == 1000
    done = wait_done(api, ids, timeout_s=120)
    onnx = server.data_dir / "artifacts" / "models" / "forest" / "1" / "model.onnx"
    want = make_session(str(onnx)).run(["probabilities"], {"input": x})[0]
    got = np.array([done[i]["result"]["predictions"][0]["probabilities"] for i in ids])
    assert all(done[i]["status"] == "succeeded" for i in ids)
    np.testing.assert_array_equal(got, want)
    results = {p.stem for p in (server.data_dir / "artifacts" / "async" / "results").iterdir()}
    assert set(ids) <= results  # one stored result per job
    assert (
        api.metric("zeroserve_jobs_finished_total", endpoint="forest", status="succeeded")
        == finished + 1000
    )


def test_an_endpoint_at_zero_wakes_for_jobs_and_returns_to_zero(
    jobs_server: tuple[ServerProcess, Api],
) -> None:
    _, api = jobs_server
    wait_for(lambda: api.replica_pids("forest") == [], 30, "scale to zero")
    ids = [submit(api, "forest", {"instances": [ROW]})["job_id"] for _ in range(20)]
    done = wait_done(api, ids, timeout_s=60)
    assert {d["status"] for d in done.values()} == {"succeeded"}
    wait_for(lambda: api.replica_pids("forest") == [], 30, "scale back to zero")


def test_bad_payloads_fail_with_the_reason_without_retrying(
    jobs_server: tuple[ServerProcess, Api],
) -> None:
    server, api = jobs_server
    job = submit(api, "forest", {"instances": [[1.0] * 97]})
    done = wait_done(api, [job["job_id"]], timeout_s=10)[job["job_id"]]
    assert done["status"] == "failed"
    assert done["attempts"] == 1
    assert "97 values; expected 98" in done["error"]
    not_json = api.http.post("/v1/endpoints/forest/async", content=b"oops{")
    bad = wait_done(api, [not_json.json()["job_id"]], 10)
    assert "not valid JSON" in next(iter(bad.values()))["error"]
    assert (
        api.http.post(
            "/v1/endpoints/forest/async", json={"input_uri": "file:///etc/hostname"}
        ).status_code
        == 403
    )
    missing = api.http.post(
        "/v1/endpoints/forest/async",
        json={"input_uri": (server.data_dir / "no-such-file.json").as_uri()},
    )
    assert missing.status_code == 404, missing.text  # inside the allowed roots, but absent
    assert "does not exist" in missing.json()["error"]
    assert api.http.post("/v1/endpoints/nope/async", json={}).status_code == 404


def test_input_by_uri_and_large_payloads(jobs_server: tuple[ServerProcess, Api]) -> None:
    server, api = jobs_server
    x = np.random.default_rng(5).random((12_000, 98)).astype(np.float32)
    body = json.dumps({"instances": x.tolist()}).encode()
    assert len(body) > 6 * 1024 * 1024  # over the synchronous limit
    response = api.http.post("/v1/endpoints/forest/async", content=body)
    assert response.status_code == 202
    done = wait_done(api, [response.json()["job_id"]], 60)
    result = next(iter(done.values()))
    assert result["status"] == "succeeded"
    assert len(result["result"]["predictions"]) == 12_000
    staged = server.data_dir / "staged.json"
    staged.write_text(json.dumps({"instances": x[:5].tolist()}))
    by_uri = submit(api, "forest", {"input_uri": staged.as_uri()})
    assert (
        len(wait_done(api, [by_uri["job_id"]], 10)[by_uri["job_id"]]["result"]["predictions"]) == 5
    )


def test_idempotency_keys_and_cancel(jobs_server: tuple[ServerProcess, Api]) -> None:
    _, api = jobs_server
    first = submit(api, "echo", {"instances": [ROW]}, **{"Idempotency-Key": "order-42"})
    again = submit(api, "echo", {"instances": [ROW]}, **{"Idempotency-Key": "order-42"})
    assert first["job_id"] == again["job_id"]
    # Fill the endpoint (2 replicas, one job each); six slow jobs wait behind them, so one
    # more submitted now is still queued when it is cancelled.
    busy = [submit(api, "echo", {"instances": [slow(1.0)]})["job_id"] for _ in range(8)]
    wait_for(
        lambda: (
            [api.http.get(f"/v1/jobs/{j}").json()["status"] for j in busy].count("running") == 2
        ),
        30,
        "both replicas to hold a slow job",
        interval_s=0.02,
    )
    queued = submit(api, "echo", {"instances": [ROW]})["job_id"]
    cancel = api.http.delete(f"/v1/jobs/{queued}")
    assert cancel.status_code == 200, cancel.text
    assert api.http.get(f"/v1/jobs/{queued}").json()["status"] == "cancelled"
    wait_done(api, busy, 60)
    assert api.http.delete(f"/v1/jobs/{busy[0]}").status_code == 409
    assert api.http.get("/v1/jobs/does-not-exist").status_code == 404


def test_a_replica_killed_mid_job_is_retried(jobs_server: tuple[ServerProcess, Api]) -> None:
    _, api = jobs_server
    sync = api.invoke("echo", {"instances": [ROW]})  # an async endpoint takes jobs only
    assert sync.status_code == 409 and "/v1/endpoints/echo/async" in sync.json()["error"]
    warm = [submit(api, "echo", {"instances": [ROW]})["job_id"] for _ in range(4)]
    wait_done(api, warm, 60)  # warm replicas, so the job is on one when we kill them
    job_id = submit(api, "echo", {"instances": [slow(3.0)]})["job_id"]
    wait_for(
        lambda: any(
            r["busy"] for v in api.endpoint("echo")["status"]["variants"] for r in v["replicas"]
        ),
        30,
        "the job to reach a replica",
        interval_s=0.02,
    )
    assert api.http.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    for pid in api.replica_pids("echo"):
        os.kill(pid, signal.SIGKILL)
    done = wait_done(api, [job_id], 60)[job_id]
    assert done["status"] == "succeeded"
    assert done["attempts"] == 2
    assert "killed by SIGKILL" in done["error"]  # the first attempt's failure is kept


def test_crashing_jobs_go_to_the_dead_letter_queue(jobs_server: tuple[ServerProcess, Api]) -> None:
    _, api = jobs_server
    job_id = submit(api, "echo", {"instances": [[-999.0, *ROW[1:]]]})["job_id"]
    done = wait_done(api, [job_id], 30)[job_id]
    assert done["status"] == "dead"
    assert done["attempts"] == 2  # ZEROSERVE_JOB_MAX_ATTEMPTS
    dead = api.check(api.http.get("/api/jobs/dead-letters"))
    assert job_id in [j["job_id"] for j in dead]
    retried = api.http.post(f"/api/jobs/{job_id}/retry")
    assert retried.status_code == 200
    assert wait_done(api, [job_id], 30)[job_id]["status"] == "dead"


class Receiver:
    """A local webhook receiver; fails the first ``fail_first`` deliveries with a 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.calls: list[tuple[bytes, dict[str, str]]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.calls.append((body, dict(self.headers)))
                code = 500 if len(receiver.calls) <= receiver.fail_first else 200
                self.send_response(code)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_webhooks_are_signed_and_retried(jobs_server: tuple[ServerProcess, Api]) -> None:
    _, api = jobs_server
    secret = api.check(api.http.get("/api/endpoints/echo/webhook-secret"))["secret"]
    receiver = Receiver(fail_first=1)
    try:
        job_id = submit(api, "echo", {"instances": [ROW]}, **{"X-Callback-Url": receiver.url})[
            "job_id"
        ]
        wait_for(lambda: len(receiver.calls) >= 2, 40, "a retried delivery")
        assert len(receiver.calls) == 2  # a 500, then a retry that was accepted
        body, headers = receiver.calls[-1]
        assert verify(secret, body, headers["X-Zeroserve-Signature"])
        assert not verify(secret, body + b" ", headers["X-Zeroserve-Signature"])
        assert not verify("wrong", body, headers["X-Zeroserve-Signature"])
        message = json.loads(body)
        assert message["job_id"] == job_id and message["status"] == "succeeded"
        hook = wait_for(
            lambda: (
                (h := api.http.get(f"/v1/jobs/{job_id}").json()["webhook"])["status"] == "delivered"
                and h
            ),
            20,
            "the delivery to be recorded",
        )
        assert hook["attempts"] == 2
        assert len(receiver.calls) == 2  # nothing delivered twice
    finally:
        receiver.close()
    # An unreachable receiver: the job still succeeds; the failed delivery is visible.
    dead_url = f"http://127.0.0.1:{free_port()}/hook"
    job_id = submit(api, "echo", {"instances": [ROW]}, **{"X-Callback-Url": dead_url})["job_id"]
    assert wait_done(api, [job_id], 30)[job_id]["status"] == "succeeded"
    hook = wait_for(
        lambda: (
            (h := api.http.get(f"/v1/jobs/{job_id}").json().get("webhook", {})).get("attempts", 0)
            >= 1
            and h
        ),
        30,
        "a failed delivery attempt",
    )
    assert hook["status"] == "pending"  # it will be retried
    # H4: the status says the delivery failed, not how (no port-scan oracle).
    assert hook["last_error"] == "delivery failed; the server log has the details"


def test_accepted_jobs_survive_a_killed_server(tmp_path: Path, models_dir: Path) -> None:
    data_dir = tmp_path / "state"
    x = np.random.default_rng(9).random((150, 98)).astype(np.float32)
    x[:, 0] = -111.0
    x[:, 1] = 0.02  # each job sleeps 20 ms in the model
    with ServerProcess(data_dir, env=ENV) as first:
        api = Api(first.url)
        api.register("echo", models_dir / "echo.py", models_dir / "sample.npy", trust=True)
        api.deploy("echo", mode="async", max_replicas=1, max_batch_size=1)
        ids = [submit(api, "echo", {"instances": [row.tolist()]})["job_id"] for row in x]
        wait_for(
            lambda: api.metric("zeroserve_jobs_finished_total", endpoint="echo") >= 20,
            60,
            "20 jobs to finish",
            interval_s=0.02,
        )
        first.kill()  # SIGKILL with jobs queued and in flight
    with ServerProcess(data_dir, env=ENV) as second:
        api = Api(second.url)
        done = wait_done(api, ids, timeout_s=90)
    assert {d["status"] for d in done.values()} == {"succeeded"}
    want = modelkit.python_model_predict(x)
    got = np.array([done[i]["result"]["predictions"][0] for i in ids])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    results = sorted(p.stem for p in (data_dir / "artifacts" / "async" / "results").glob("*.json"))
    assert results == sorted(ids)  # exactly one result per accepted job
