"""A real zeroserve server on loopback, with models of every flavor registered."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from zeroserve.process import ServerProcess


class Api:
    """Thin helpers over the control API, failing loudly with the server's message."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        self.url = url
        headers = {"x-zeroserve-client": "tests", **(headers or {})}
        self.http = httpx.Client(base_url=url, timeout=120, headers=headers)

    def check(self, response: httpx.Response) -> Any:
        assert response.status_code < 400, f"{response.status_code}: {response.text}"
        return response.json() if response.content else None

    def register(self, name: str, path: Path, sample: Path | None = None, **form: Any) -> Any:
        files: dict[str, Any] = {"file": (path.name, path.read_bytes())}
        if sample is not None:
            files["sample"] = (sample.name, sample.read_bytes())
        data = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in form.items()}
        return self.check(self.http.post(f"/api/models/{name}/versions", files=files, data=data))

    def deploy(self, model: str, ref: str | None = None, **options: Any) -> Any:
        return self.check(
            self.http.post("/api/deploy", json={"model": model, "ref": ref, **options})
        )

    def endpoint(self, name: str) -> Any:
        return self.check(self.http.get(f"/api/endpoints/{name}"))

    def invoke(self, endpoint: str, body: Any) -> httpx.Response:
        return self.http.post(f"/v1/endpoints/{endpoint}/invocations", json=body)

    def replica_pids(self, endpoint: str) -> list[int]:
        status = self.endpoint(endpoint)["status"]
        return [r["pid"] for v in status["variants"] for r in v["replicas"]]

    def idle(self, endpoint: str) -> bool:
        """Nothing queued, in flight or running on a replica of ``endpoint``."""
        status = self.endpoint(endpoint)["status"]
        return status["in_flight"] == 0 and all(
            v["queued"] == 0 and v["in_flight"] == 0 and not any(r["busy"] for r in v["replicas"])
            for v in status["variants"]
        )

    def metric(self, name: str, **labels: str) -> float:
        total = 0.0
        for line in self.http.get("/metrics").text.splitlines():
            if not line.startswith(name + "{") and not line.startswith(name + " "):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # Batch inputs and outputs must be under allowed roots: the tests' files are in tmp.
    roots = {"ZEROSERVE_BATCH_ROOTS": json.dumps([str(tmp_path_factory.getbasetemp())])}
    with ServerProcess(tmp_path_factory.mktemp("server"), env=roots) as proc:
        yield proc


@pytest.fixture(scope="session")
def api(server: ServerProcess) -> Api:
    return Api(server.url)


@pytest.fixture(scope="session")
def deployed(api: Api, models_dir: Path) -> dict[str, str]:
    """Endpoints of every flavor: name -> endpoint."""
    sample = models_dir / "sample.npy"
    api.register("forest", models_dir / "forest.skops", sample)
    api.register("forest", models_dir / "forest.skops", sample, compile="onnx")
    api.register("xgb", models_dir / "xgb.ubj")
    api.register("lgb", models_dir / "lgb.txt", flavor="lightgbm")
    api.register("echo", models_dir / "echo.py", sample, trust=True)
    endpoints = {
        "sklearn": "forest-sk",
        "onnx": "forest-onnx",
        "xgboost": "xgb",
        "lightgbm": "lgb",
        "python": "echo",
    }
    api.deploy("forest", "1", endpoint="forest-sk")
    api.deploy("forest", "2", endpoint="forest-onnx")
    api.deploy("xgb")
    api.deploy("lgb")
    api.deploy("echo", min_replicas=2, max_replicas=2)
    return endpoints
