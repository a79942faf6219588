"""Models that misbehave on a real server: wrong row counts, scalars, hangs, deploy failures.

Each failure must fail only the requests it touches, with a clear error, and the
endpoint must keep serving afterwards.
"""

from __future__ import annotations

import concurrent.futures
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess

# Drops the last row of any merged batch; 7 in feature 0 returns a scalar;
# -1 hangs forever; the answer is otherwise the row sum (easy to check).
MISBEHAVING = textwrap.dedent("""
    import time
    import numpy as np

    class Model:
        def load(self, artifact_dir):
            pass

        def predict(self, inputs):
            x = inputs["input"]
            if (x[:, 0] == 7).any():
                return {"score": np.float64(1.0)}
            if (x[:, 0] == -1).any():
                while True:
                    time.sleep(0.1)
            out = x.sum(axis=1)
            return {"score": out[:-1] if len(out) > 1 else out}
""")
# Loads at registration; fails to load once the marker file exists (as a deleted weights file).
FAILS_TO_LOAD = textwrap.dedent("""
    import os

    class Model:
        def load(self, artifact_dir):
            if os.path.exists(MARKER):
                raise RuntimeError("the weights file is missing")

        def predict(self, inputs):
            return {"score": inputs["input"].sum(axis=1)}
""")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {"ZEROSERVE_BATCH_DEADLINE_S": "2", "ZEROSERVE_RECONCILE_INTERVAL_S": "0.5"}
    with ServerProcess(tmp_path_factory.mktemp("dispatch"), env=env) as proc:
        yield proc


@pytest.fixture(scope="module")
def api(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> Api:
    api = Api(server.url)
    root = tmp_path_factory.mktemp("models")
    (root / "bad.py").write_text(MISBEHAVING)
    np.save(root / "sample.npy", np.ones((4, 3), np.float32))
    api.register("bad", root / "bad.py", root / "sample.npy", trust=True)
    api.deploy("bad", max_batch_size=64)
    return api


def invoke(api: Api, rows: list[list[float]]) -> httpx.Response:
    with httpx.Client(base_url=api.url, timeout=60) as client:
        return client.post("/v1/endpoints/bad/invocations", json={"instances": rows})


def test_sixty_concurrent_clients_each_get_their_own_answer(api: Api) -> None:
    rows = [[float(i), 1.0, 2.0] for i in range(8, 68)]
    with concurrent.futures.ThreadPoolExecutor(30) as pool:
        responses = list(pool.map(lambda r: invoke(api, [r]), rows))
    for row, response in zip(rows, responses, strict=True):
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == [pytest.approx(sum(row))]


def test_a_scalar_answer_is_a_502_and_the_endpoint_keeps_serving(api: Api) -> None:
    response = invoke(api, [[7.0, 0.0, 0.0], [8.0, 0.0, 0.0], [9.0, 0.0, 0.0]])
    assert response.status_code == 502
    assert response.json()["code"] == "bad_model_output"
    # The python runtime makes the scalar one row: one answer for three rows, never a 200.
    assert "model bad v1 returned 1 row(s) of output 'score' for 3" in response.json()["error"]
    ok = invoke(api, [[1.0, 2.0, 3.0]])
    assert ok.status_code == 200 and ok.json()["predictions"] == [6.0]
    rows_short = invoke(api, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])  # the model drops a row
    assert rows_short.status_code == 502
    assert "1 row(s) of output 'score' for 2 input row(s)" in rows_short.json()["error"]


def test_a_hung_replica_is_replaced_at_its_deadline(api: Api) -> None:
    started = time.monotonic()
    hung = invoke(api, [[-1.0, 0.0, 0.0]])
    assert hung.status_code == 503
    assert hung.json()["code"] == "replica_hung"
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the replacement starts in milliseconds
        ok = invoke(api, [[1.0, 2.0, 3.0]])
        if ok.status_code == 200:
            break
        time.sleep(0.1)
    assert ok.status_code == 200 and ok.json()["predictions"] == [6.0]


def test_stats_count_outcomes_per_variant_with_causes(api: Api) -> None:
    before = stats(api)
    assert invoke(api, [[7.0, 0.0, 0.0], [8.0, 0.0, 0.0]]).status_code == 502
    assert invoke(api, [[1.0, 0.0, 0.0]]).status_code == 200
    after = stats(api)
    assert after["requests"] - before["requests"] == 2
    assert (
        after["by_cause"].get("bad_model_output", 0) - before["by_cause"].get("bad_model_output", 0)
        == 1
    )


def stats(api: Api) -> dict[str, object]:
    listed = api.check(api.http.get("/api/endpoints/bad/stats"))
    (variant,) = [s for s in listed if s["variant"] == "v1"]
    window: dict[str, object] = variant["windows"]["5m"]
    return window


def test_a_model_that_cannot_load_is_failed_not_fatal(api: Api, tmp_path: Path) -> None:
    marker = tmp_path / "weights-gone"
    (tmp_path / "broken.py").write_text(f"MARKER = {str(marker)!r}\n" + FAILS_TO_LOAD)
    api.register("broken", tmp_path / "broken.py", trust=True, signature=SIGNATURE)
    marker.touch()
    response = api.http.post("/api/deploy", json={"model": "broken"})
    assert response.status_code == 503
    assert "the weights file is missing" in response.json()["error"]
    status = api.endpoint("broken")["status"]
    assert status["state"] == "failed" and "weights file is missing" in status["error"]
    ready = api.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["failed"] == ["broken"]
    assert invoke(api, [[1.0, 2.0, 3.0]]).status_code == 200  # the others serve on
    api.check(api.http.delete("/api/endpoints/broken"))


SIGNATURE = (
    '{"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 3]}],'
    ' "outputs": [{"name": "score", "dtype": "float64", "shape": [-1]}]}'
)
