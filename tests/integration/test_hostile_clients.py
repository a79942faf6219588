"""A real server against hostile clients and pages: stalled and oversized requests,
too many connections, cross-site posts, DNS rebinding and malformed OIP requests."""

from __future__ import annotations

import concurrent.futures
import json
import selectors
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess

STALLED = 3000
ROW = [0.1] * 98


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    return sock


def healthz_latencies(url: str, count: int) -> list[float]:
    """Seconds per GET /healthz, each on a new connection (what a new client sees)."""
    out = []
    for _ in range(count):
        started = time.perf_counter()
        response = httpx.get(f"{url}/healthz", timeout=30)
        out.append(time.perf_counter() - started)
        assert response.status_code == 200
    return out


def wait_closed(socks: list[socket.socket], deadline_s: float) -> tuple[int, list[bytes]]:
    """How many of ``socks`` the server closed before the deadline, and what it sent."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    closed, answers = 0, []
    deadline = time.monotonic() + deadline_s
    while closed < len(socks) and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                data = sock.recv(65536)
            except ConnectionError:
                data = b""
            if data:
                answers.append(data)
                continue
            sel.unregister(sock)
            closed += 1
    sel.close()
    return closed, answers


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    env = {
        "ZEROSERVE_HEADER_TIMEOUT_S": "4",
        "ZEROSERVE_BODY_RATE_WINDOW_S": "1.5",
        "ZEROSERVE_MAX_CONNECTIONS": str(STALLED + 500),
    }
    with ServerProcess(tmp_path_factory.mktemp("guarded"), env=env) as server:
        yield server


def test_stalled_connections_are_closed_and_new_clients_keep_their_latency(
    guarded: ServerProcess,
) -> None:
    baseline = statistics.median(healthz_latencies(guarded.url, 20))
    socks = []
    try:
        for i in range(STALLED):
            sock = connect(guarded.port)
            sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-{i}: ".encode())
            socks.append(sock)
        during = statistics.median(healthz_latencies(guarded.url, 20))
        closed, answers = wait_closed(socks, deadline_s=60)
    finally:
        for s in socks:
            s.close()
    assert closed == STALLED, f"only {closed} of {STALLED} stalled connections were closed"
    assert answers and all(a.startswith(b"HTTP/1.1 408") for a in answers)
    assert during < max(0.25, 20 * baseline), (baseline, during)


def test_an_idle_connection_that_sends_nothing_is_closed(guarded: ServerProcess) -> None:
    sock = connect(guarded.port)
    started = time.monotonic()
    try:
        closed, answers = wait_closed([sock], deadline_s=30)
    finally:
        sock.close()
    assert closed == 1 and answers == []
    assert 3.0 < time.monotonic() - started < 20


def test_a_body_that_trickles_is_cut_off(guarded: ServerProcess) -> None:
    sock = connect(guarded.port)
    try:
        sock.sendall(
            b"POST /api/deploy HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # a route that reads the body
            b'Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{"inst'
        )
        closed, answers = wait_closed([sock], deadline_s=30)
    finally:
        sock.close()
    assert closed == 1
    assert b"".join(answers).startswith(b"HTTP/1.1 408")


def test_an_8_mb_header_is_refused_with_431(guarded: ServerProcess) -> None:
    sock = connect(guarded.port)
    sent = 0
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        chunk = b"a" * 65536
        try:
            while sent < 8 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        _, answers = wait_closed([sock], deadline_s=10)
    finally:
        sock.close()
    answer = b"".join(answers)
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"application/json" in answer


def test_connections_over_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    with ServerProcess(tmp_path / "s", env={"ZEROSERVE_MAX_CONNECTIONS": "40"}) as server:
        held = [connect(server.port) for _ in range(40)]
        try:
            extra = [connect(server.port) for _ in range(10)]
            closed, _ = wait_closed(extra, deadline_s=5)
            assert closed == 10
            still_open, _ = wait_closed(held[:5], deadline_s=0.5)
            assert still_open == 0
        finally:
            for s in held:
                s.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            pytest.fail("the server did not serve again after the held connections closed")


# the session server: a web page's attacks and malformed OIP requests
PAYLOAD = """
from pathlib import Path
Path({marker!r}).write_text("pwned")

class Model:
    def predict(self, inputs):
        return {{"y": inputs["input"].sum(axis=1)}}
"""


def test_a_cross_site_form_post_cannot_register_code(api: Api, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    (tmp_path / "evil.py").write_text(PAYLOAD.format(marker=str(marker)))
    sample = tmp_path / "s.npy"
    np.save(sample, np.zeros((2, 4)))
    files = {
        "file": ("evil.py", (tmp_path / "evil.py").read_bytes()),
        "sample": ("s.npy", sample.read_bytes()),
    }
    browser = httpx.Client(base_url=api.url, timeout=60)  # no X-Zeroserve-Client
    forged = browser.post(
        "/api/models/csrf/versions",
        files=files,
        data={"trust": "true"},
        headers={"origin": "https://evil.example"},
    )
    assert forged.status_code == 403
    no_origin = browser.post("/api/models/csrf/versions", files=files, data={"trust": "true"})
    assert no_origin.status_code == 403
    assert no_origin.json()["code"] == "cross_site_refused"
    rebound = browser.get("/api/models", headers={"host": "attacker.example:8300"})
    assert rebound.status_code == 421
    assert not marker.exists()
    assert browser.get("/api/models/csrf").status_code == 404


@pytest.fixture(scope="module")
def xgb(api: Api, models_dir: Path) -> str:
    api.register("hostile-xgb", models_dir / "xgb.ubj")
    api.deploy("hostile-xgb")
    return "hostile-xgb"


def v2_item(**overrides: Any) -> dict[str, Any]:
    return {"name": "input", "shape": [1, 98], "datatype": "FP32", "data": ROW, **overrides}


MALFORMED_V2: list[tuple[str, Any, dict[str, str]]] = [
    ("datatype-object", {"inputs": [v2_item(datatype={})]}, {}),
    ("datatype-list", {"inputs": [v2_item(datatype=[None, None])]}, {}),
    ("input-parameters", {"inputs": [v2_item(parameters=[1])]}, {}),
    ("request-parameters", {"inputs": [v2_item()], "parameters": "x"}, {}),
    ("outputs-number", {"inputs": [v2_item()], "outputs": 5}, {}),
    (
        "output-parameters",
        {"inputs": [v2_item()], "outputs": [{"name": "x", "parameters": [1]}]},
        {},
    ),
    ("shape-wraps", {"inputs": [v2_item(shape=[4611686018427387904, 98], data=[])]}, {}),
    ("shape-bool", {"inputs": [v2_item(shape=[True, 98])]}, {}),
    ("shape-scalar", {"inputs": [v2_item(shape=[], data=[0.1])]}, {}),
    ("bool-data", {"inputs": [v2_item(data=[True, *ROW[1:]])]}, {}),
    (
        "binary-size-string",
        {"inputs": [v2_item(data=None, parameters={"binary_data_size": "abc"})]},
        {},
    ),
    (
        "header-length-5000-digits",
        {"inputs": [v2_item()]},
        {"inference-header-content-length": "9" * 5000},
    ),
    ("numeric-id", {"inputs": [v2_item()], "id": 42}, {}),
]


@pytest.mark.parametrize(
    ("case", "body", "headers"), MALFORMED_V2, ids=[c[0] for c in MALFORMED_V2]
)
def test_malformed_v2_requests_get_a_json_4xx(
    api: Api, xgb: str, case: str, body: Any, headers: dict[str, str]
) -> None:
    response = api.http.post(f"/v2/models/{xgb}/infer", content=orjson.dumps(body), headers=headers)
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]


def test_malformed_paths_and_json_bools(api: Api, xgb: str) -> None:
    long_version = api.http.post(f"/v2/models/{xgb}/versions/{'9' * 5000}/infer", content=b"{}")
    # Not a version the data plane takes: the documented route refuses it, naming the field.
    assert long_version.status_code == 422
    assert "version" in long_version.json()["error"]
    arabic_one = api.http.post(f"/v2/models/{xgb}/versions/\u0661/infer", content=b"{}")
    assert arabic_one.status_code == 422
    bools = api.invoke(xgb, {"instances": [[True, *ROW[1:]]]})
    assert bools.status_code == 422
    assert "instances[0][0] is a boolean" in bools.json()["error"]
    assert api.invoke(xgb, {"instances": [ROW]}).status_code == 200


@pytest.mark.parametrize(
    ("signature", "field"),
    [
        ("garbage", "signature"),
        ('{"inputs": 1}', "signature.inputs"),
        ("null", "signature"),
        (
            '{"inputs": [{"name": "input", "dtype": "float32", "shape": []}], '
            '"outputs": [{"name": "y", "dtype": "float32", "shape": [-1]}]}',
            "signature.inputs[0].shape",
        ),
        (
            '{"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 98]}], '
            '"outputs": [{"name": "nope", "dtype": "float32", "shape": [-1]}]}',
            "signature.outputs",
        ),
    ],
)
def test_a_malformed_signature_is_a_422_naming_it(
    api: Api, models_dir: Path, signature: str, field: str
) -> None:
    response = api.http.post(
        "/api/models/badsig/versions",
        files={"file": ("xgb.ubj", (models_dir / "xgb.ubj").read_bytes())},
        data={"signature": signature},
    )
    assert response.status_code == 422, response.text
    assert field in response.json()["error"]


def test_two_registrations_at_once_get_consecutive_versions(api: Api, models_dir: Path) -> None:
    def register() -> httpx.Response:
        return api.http.post(
            "/api/models/twice/versions",
            files={"file": ("xgb.ubj", (models_dir / "xgb.ubj").read_bytes())},
        )

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda _: register(), range(2)))
    assert [a.status_code for a in answers] == [201, 201], [a.text for a in answers]
    assert sorted(a.json()["version"] for a in answers) == [1, 2]


def test_an_endpoint_without_variants_is_refused(api: Api) -> None:
    response = api.http.post("/api/endpoints", json={"name": "empty", "variants": []})
    assert response.status_code == 422
    assert "variants" in response.json()["error"]
    assert json.loads(api.http.get("/api/jobs?limit=18446744073709551616").text)["code"] == (
        "invalid_request"
    )
