"""The skeleton end to end: every flavor over both protocols, bad input, crashes, restarts."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests import modelkit
from tests.integration.conftest import Api
from tests.polling import wait_for
from zeroserve.process import ServerProcess
from zeroserve.runtimes.onnx import make_session

X = modelkit.data()[0][-40:]


def expected(flavor: str, models_dir: Path, server: ServerProcess) -> dict[str, Any]:
    """What each model predicts in-process on X."""
    if flavor in ("sklearn", "onnx"):
        import skops.io as sio

        path = models_dir / "forest.skops"
        forest = sio.load(path, trusted=sio.get_untrusted_types(file=path))
        if flavor == "sklearn":
            return {"label": forest.predict(X), "probabilities": forest.predict_proba(X)}
        onnx = server.data_dir / "artifacts" / "models" / "forest" / "2" / "model.onnx"
        label, proba = make_session(str(onnx)).run(["label", "probabilities"], {"input": X})
        np.testing.assert_allclose(proba, forest.predict_proba(X), atol=1e-5)
        return {"label": label, "probabilities": proba}
    if flavor == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster(model_file=str(models_dir / "xgb.ubj"))
        p = booster.predict(xgb.DMatrix(X))  # a classifier: both classes, like XGBClassifier
        return {"label": (p > 0.5).astype(np.int64), "probabilities": np.column_stack([1 - p, p])}
    if flavor == "lightgbm":
        import lightgbm as lgb

        p = lgb.Booster(model_file=str(models_dir / "lgb.txt")).predict(X)
        return {"label": (p > 0.5).astype(np.int64), "probabilities": np.column_stack([1 - p, p])}
    return {"score": modelkit.python_model_predict(X)}


FLAVORS = ["sklearn", "onnx", "xgboost", "lightgbm", "python"]
# The model and version each flavor's endpoint serves (see the ``deployed`` fixture).
SERVED_VERSION = {
    "sklearn": "forest:1",
    "onnx": "forest:2",
    "xgboost": "xgb:1",
    "lightgbm": "lgb:1",
    "python": "echo:1",
}


@pytest.mark.parametrize("flavor", FLAVORS)
def test_json_route_serves_what_the_model_predicts(
    flavor: str, api: Api, deployed: dict[str, str], models_dir: Path, server: ServerProcess
) -> None:
    want = expected(flavor, models_dir, server)
    endpoint = deployed[flavor]
    rows = api.invoke(endpoint, {"instances": X.tolist()})
    assert rows.status_code == 200, rows.text
    predictions = rows.json()["predictions"]
    for name, values in want.items():
        got = np.array([p[name] for p in predictions]) if len(want) > 1 else np.array(predictions)
        np.testing.assert_allclose(got, values, rtol=1e-6, atol=0)
    columns = api.invoke(endpoint, {"inputs": {"input": X[:5].tolist()}})
    assert columns.status_code == 200, columns.text
    for name, values in want.items():
        np.testing.assert_allclose(columns.json()["outputs"][name], values[:5], rtol=1e-6)
    single = api.invoke(endpoint, {"instances": [X[0].tolist()]})
    assert single.status_code == 200, single.text
    assert single.headers["x-zeroserve-model-version"] == SERVED_VERSION[flavor]


@pytest.mark.parametrize("flavor", FLAVORS)
def test_triton_client_over_open_inference_protocol(
    flavor: str, server: ServerProcess, deployed: dict[str, str], models_dir: Path
) -> None:
    import tritonclient.http as triton

    want = expected(flavor, models_dir, server)
    endpoint = deployed[flavor]
    client = triton.InferenceServerClient(url=server.url.removeprefix("http://"))
    assert client.is_server_live()
    assert client.is_model_ready(endpoint)
    meta = client.get_model_metadata(endpoint)
    assert meta["inputs"][0]["shape"] == [-1, 98]
    inp = triton.InferInput("input", list(X.shape), "FP32")
    inp.set_data_from_numpy(X, binary_data=True)
    outputs = [triton.InferRequestedOutput(name, binary_data=True) for name in want]
    result = client.infer(endpoint, [inp], outputs=outputs)
    for name, values in want.items():
        np.testing.assert_allclose(result.as_numpy(name), values, rtol=1e-6)
    # JSON tensors too, and a version pinned in the URL.
    inp.set_data_from_numpy(X, binary_data=False)
    version = meta["versions"][0]
    result = client.infer(
        endpoint,
        [inp],
        model_version=version,
        outputs=[triton.InferRequestedOutput(n, binary_data=False) for n in want],
    )
    for name, values in want.items():
        np.testing.assert_allclose(result.as_numpy(name), values, rtol=1e-6)


ROW = [0.1] * 98


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"instances": [[0.1] * 97]}, 422, "has 97 values; expected 98 values per row"),
        ({"instances": [["a"] * 98]}, 422, "not a number"),
        ({"instances": [[None, *ROW[1:]]]}, 422, "does not accept missing values"),
        ({"instances": "abc"}, 422, "must be a non-empty list"),
        ({"rows": []}, 400, '{"instances"'),
        ({"inputs": {"colour": [1]}}, 422, "unknown inputs colour"),
    ],
)
def test_bad_json_input_is_a_clear_4xx(
    api: Api, deployed: dict[str, str], body: Any, status: int, message: str
) -> None:
    response = api.invoke(deployed["onnx"], body)
    assert response.status_code == status
    assert message in response.json()["error"]


@pytest.mark.parametrize(
    ("inputs", "status", "message"),
    [
        (
            [{"name": "input", "shape": [1, 97], "datatype": "FP32", "data": [0.1] * 97}],
            422,
            "expected 98 values per row",
        ),
        (
            [{"name": "input", "shape": [1, 98], "datatype": "BYTES", "data": ["a"] * 98}],
            422,
            "takes FP32",
        ),
        (
            [{"name": "input", "shape": [1, 98], "datatype": "FP32", "data": [float("nan")] * 98}],
            400,  # a bare NaN token is not JSON
            "not valid JSON",
        ),
        ([{"name": "x", "shape": [1, 98], "datatype": "FP32", "data": ROW}], 422, "names 'x'"),
        ([{"name": "input", "shape": [1, 98], "datatype": "FP32"}], 400, "has no data"),
    ],
)
def test_bad_v2_input_is_a_clear_4xx(
    api: Api, deployed: dict[str, str], inputs: Any, status: int, message: str
) -> None:
    import json

    body = json.dumps({"inputs": inputs})  # NaN is not JSON; the server must still refuse it
    response = api.http.post(f"/v2/models/{deployed['onnx']}/infer", content=body)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_malformed_unknown_and_oversized(api: Api, deployed: dict[str, str]) -> None:
    bad_json = api.http.post(f"/v1/endpoints/{deployed['onnx']}/invocations", content=b"{oops")
    assert bad_json.status_code == 400
    assert "not valid JSON" in bad_json.json()["error"]
    unknown = api.invoke("nope", {"instances": [ROW]})
    assert unknown.status_code == 404
    assert deployed["onnx"] in unknown.json()["error"]  # says what exists
    v2_unknown = api.http.post("/v2/models/nope/infer", content=b"{}")
    assert v2_unknown.status_code == 404
    pinned = api.http.post(f"/v2/models/{deployed['onnx']}/versions/9/infer", content=b"{}")
    assert pinned.status_code == 404
    assert "does not serve version 9" in pinned.json()["error"]
    huge = api.http.post(
        f"/v1/endpoints/{deployed['onnx']}/invocations", content=b" " * (7 * 1024 * 1024)
    )
    assert huge.status_code == 413
    assert "limit" in huge.json()["error"]
    model_error = api.invoke(deployed["python"], {"instances": [[-555, *ROW[1:]]]})
    assert model_error.status_code == 422
    assert "feature 0 may not be -555" in model_error.json()["error"]


def test_concurrent_single_rows_are_batched(
    api: Api, deployed: dict[str, str], models_dir: Path, server: ServerProcess
) -> None:
    endpoint = deployed["sklearn"]
    want = expected("sklearn", models_dir, server)["probabilities"]
    before_rows = api.metric("zeroserve_batch_size_rows_sum", endpoint=endpoint)
    before_batches = api.metric("zeroserve_batch_size_rows_count", endpoint=endpoint)

    def one(i: int) -> list[float]:
        response = api.invoke(endpoint, {"instances": [X[i].tolist()]})
        assert response.status_code == 200
        return response.json()["predictions"][0]["probabilities"]  # type: ignore[no-any-return]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = list(pool.map(one, range(len(X))))
    np.testing.assert_allclose(got, want, rtol=1e-9)
    rows = api.metric("zeroserve_batch_size_rows_sum", endpoint=endpoint) - before_rows
    batches = api.metric("zeroserve_batch_size_rows_count", endpoint=endpoint) - before_batches
    assert rows == len(X)
    assert batches < len(X)  # some requests shared a batch


def test_a_crashing_replica_fails_only_its_request(api: Api, deployed: dict[str, str]) -> None:
    endpoint = deployed["python"]
    crashes = api.metric("zeroserve_replica_crashes_total", endpoint=endpoint)
    pids = set(wait_for(lambda: len(p := api.replica_pids(endpoint)) == 2 and p, 30))
    crash = api.invoke(endpoint, {"instances": [[-999, *ROW[1:]]]})
    assert crash.status_code == 503
    assert "exited with code 3" in crash.json()["error"]
    assert "retry" in crash.json()["error"]
    # The crashed replica is replaced; the other one is untouched.
    replaced = set(
        wait_for(lambda: len(p := set(api.replica_pids(endpoint))) == 2 and p != pids and p, 30)
    )
    assert len(pids & replaced) == 1, (pids, replaced)
    ok = [api.invoke(endpoint, {"instances": [ROW]}) for _ in range(10)]
    assert [r.status_code for r in ok] == [200] * 10
    # An outside SIGKILL of an idle replica is also survived, and only it is replaced.
    victim, survivor = sorted(replaced)
    os.kill(victim, signal.SIGKILL)
    current = set(
        wait_for(
            lambda: len(p := set(api.replica_pids(endpoint))) == 2 and victim not in p and p,
            30,
            lambda: f"a replacement for {victim}; replicas {api.replica_pids(endpoint)}",
        )
    )
    assert survivor in current
    assert len(current - replaced) == 1
    assert api.invoke(endpoint, {"instances": [ROW]}).status_code == 200
    wait_for(
        lambda: api.metric("zeroserve_replica_crashes_total", endpoint=endpoint) > crashes + 1, 10
    )
    assert api.metric("zeroserve_replica_crashes_total", endpoint=endpoint) == crashes + 2


def test_metrics_health_and_openapi(api: Api, deployed: dict[str, str]) -> None:
    assert api.http.get("/healthz").json() == {"status": "ok"}
    ready = api.http.get("/readyz")
    assert ready.status_code == 200
    assert set(deployed.values()) <= set(ready.json()["endpoints"])
    assert api.http.get("/v2/health/live").json() == {"live": True}
    assert api.http.get("/v2/health/ready").status_code == 200
    text = api.http.get("/metrics").text
    for family in (
        "zeroserve_requests_total",
        "zeroserve_request_duration_seconds_bucket",
        "zeroserve_batch_size_rows_bucket",
        "zeroserve_replicas",
        "zeroserve_queue_depth",
    ):
        assert family in text, family
    spec = api.http.get("/api/openapi.json").json()
    assert "/api/deploy" in spec["paths"]
    assert "/api/models/{name}/versions" in spec["paths"]


def test_stages_aliases_and_deploy_by_reference(api: Api, deployed: dict[str, str]) -> None:
    api.check(api.http.post("/api/models/forest/versions/2/stage", json={"stage": "production"}))
    api.check(api.http.put("/api/models/forest/aliases/champion", json={"version": 1}))
    by_stage = api.deploy("forest", "@production", endpoint="forest-prod")
    assert by_stage["spec"]["variants"][0]["version"] == 2
    by_alias = api.deploy("forest", "champion", endpoint="forest-champ")
    assert by_alias["spec"]["variants"][0]["version"] == 1
    assert api.invoke("forest-prod", {"instances": [ROW]}).status_code == 200
    for name in ("forest-prod", "forest-champ"):
        assert api.http.delete(f"/api/endpoints/{name}").status_code == 204
    assert api.invoke("forest-prod", {"instances": [ROW]}).status_code == 404
    refused = api.http.delete("/api/models/forest")
    assert refused.status_code == 409


def test_state_survives_a_killed_server(tmp_path: Path, models_dir: Path) -> None:
    data_dir = tmp_path / "state"
    with ServerProcess(data_dir) as first:
        api = Api(first.url)
        api.register("fraud", models_dir / "forest.skops", compile="onnx")
        api.deploy("fraud")
        before = api.invoke("fraud", {"instances": X[:3].tolist()}).json()
        first.kill()  # SIGKILL: no shutdown hooks run
    with ServerProcess(data_dir) as second:
        api = Api(second.url)
        wait_for(lambda: api.http.get("/readyz").status_code == 200, 60, "/readyz")
        after = api.invoke("fraud", {"instances": X[:3].tolist()})
        assert after.status_code == 200
        assert after.json() == before
        assert [m["name"] for m in api.check(api.http.get("/api/models"))] == ["fraud"]


def test_api_keys_guard_both_planes(tmp_path: Path, models_dir: Path) -> None:
    env = {
        "ZEROSERVE_ADMIN_API_KEYS": '["admin-key-0123456789"]',
        "ZEROSERVE_API_KEYS": '["user-key-0123456789"]',
    }
    with ServerProcess(tmp_path / "state", env=env) as server:
        anonymous = Api(server.url)
        user = Api(server.url, {"authorization": "Bearer user-key-0123456789"})
        admin = Api(server.url, {"authorization": "Bearer admin-key-0123456789"})
        assert anonymous.http.get("/api/models").status_code == 401
        assert user.http.get("/api/models").status_code == 403
        admin.register("m", models_dir / "xgb.ubj")
        admin.deploy("m")
        assert anonymous.invoke("m", {"instances": [ROW]}).status_code == 401
        wrong = Api(server.url, {"x-api-key": "guess"})
        assert wrong.invoke("m", {"instances": [ROW]}).status_code == 403
        assert user.invoke("m", {"instances": [ROW]}).status_code == 200
        assert admin.invoke("m", {"instances": [ROW]}).status_code == 200
        assert anonymous.http.get("/healthz").status_code == 200


def test_deleting_an_endpoint_fails_its_running_requests_at_once(
    api: Api, deployed: dict[str, str]
) -> None:
    api.deploy("echo", endpoint="doomed", min_replicas=1, max_replicas=1, max_batch_size=1)
    slow = [-111.0, 30.0, *ROW[2:]]  # would take 30 s
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.invoke, "doomed", {"instances": [slow]})
        wait_for(lambda: api.endpoint("doomed")["status"]["in_flight"] == 1, 30, "the request")
        started = time.monotonic()
        assert api.http.delete("/api/endpoints/doomed").status_code == 204
        response = pending.result(timeout=20)
    assert time.monotonic() - started < 10
    assert response.status_code == 503
    assert "was removed" in response.json()["error"]
