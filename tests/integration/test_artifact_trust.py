"""C1 and M12 against a real server that forbids trusted code: the skops exec payload is
refused, trust is refused, uploads are capped, and a changed artifact is not deployed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import Api
from tests.unit.runtimes.skops_payloads import exec_payload
from zeroserve.process import ServerProcess


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Api]]:
    env = {"ZEROSERVE_ALLOW_TRUSTED_CODE": "false", "ZEROSERVE_MAX_UPLOAD_MB": "1"}
    with ServerProcess(tmp_path_factory.mktemp("shared"), env=env) as proc:
        yield proc, Api(proc.url)


def upload(api: Api, name: str, path: Path, **form: str) -> object:
    return api.http.post(
        f"/api/models/{name}/versions",
        files={"file": (path.name, path.read_bytes())},
        data=form,
    )


def test_skops_exec_payload_is_refused_and_never_runs(
    shared: tuple[ServerProcess, Api], tmp_path: Path
) -> None:
    _, api = shared
    marker = tmp_path / "pwned"
    payload = exec_payload(tmp_path / "evil.skops", f"open({str(marker)!r}, 'w').write('x')")
    response = upload(api, "evil", payload)
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert "numpy.testing._private.utils.runstring" in body["error"]
    assert not marker.exists()
    assert api.check(api.http.get("/api/models")) == []


def test_trust_is_forbidden_on_this_server(
    shared: tuple[ServerProcess, Api], models_dir: Path
) -> None:
    _, api = shared
    response = upload(api, "echo", models_dir / "echo.py", trust="true")
    assert response.status_code == 403  # type: ignore[attr-defined]
    assert "allow_trusted_code" in response.json()["error"]  # type: ignore[attr-defined]


def test_uploads_are_capped(shared: tuple[ServerProcess, Api], tmp_path: Path) -> None:
    _, api = shared
    big = tmp_path / "big.onnx"
    big.write_bytes(b"\0" * (2 * 1024 * 1024))
    response = upload(api, "big", big)
    assert response.status_code == 413  # type: ignore[attr-defined]
    assert "ZEROSERVE_MAX_UPLOAD_MB" in response.json()["error"]  # type: ignore[attr-defined]


def test_a_changed_artifact_is_not_deployed(
    shared: tuple[ServerProcess, Api], models_dir: Path
) -> None:
    server, api = shared
    api.register("ridge", models_dir / "ridge.skops")
    model = server.data_dir / "artifacts" / "models" / "ridge" / "1" / "model.skops"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    response = api.http.post("/api/deploy", json={"model": "ridge"})
    assert response.status_code == 409, response.text
    assert "changed on disk since it was registered" in response.json()["error"]
    assert "model.skops" in response.json()["error"]
