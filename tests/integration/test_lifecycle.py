"""Endpoint lifecycle: no silent version switches, following a stage, pinned endpoints."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from tests.integration.conftest import Api
from tests.integration.test_cli import cli
from zeroserve import Client, errors
from zeroserve.process import ServerProcess

ROW = [0.5] * 98


@pytest.fixture(scope="module")
def zs(server: ServerProcess, models_dir: Path) -> Client:
    client = Client(server.url)
    for _ in range(3):
        client.register("life", models_dir / "forest.skops")
    return client


def served(api: Api, endpoint: str) -> str:
    response = api.invoke(endpoint, {"instances": [ROW]})
    assert response.status_code == 200, response.text
    return response.headers["x-zeroserve-model-version"]


def test_deploy_refuses_a_version_switch_without_update(
    zs: Client, api: Api, server: ServerProcess
) -> None:
    zs.deploy("life:1", endpoint="life-pinned")
    with pytest.raises(errors.Conflict) as refused:
        zs.deploy("life:2", endpoint="life-pinned")
    assert "serves life version 1" in refused.value.message
    assert "life version 1 -> life version 2" in refused.value.message
    assert "--update" in refused.value.message
    assert served(api, "life-pinned") == "life:1"  # untouched
    out = cli(server, "deploy", "life:2", "--endpoint", "life-pinned", ok=False)
    assert "pass --update" in out.lower()
    out = cli(server, "deploy", "life:2", "--endpoint", "life-pinned", "--update")
    assert "changed: serves life version 1 -> life version 2" in out
    assert served(api, "life-pinned") == "life:2"


def test_pinned_endpoint_says_so_and_ignores_promotions(
    zs: Client, api: Api, server: ServerProcess
) -> None:
    zs.deploy("life:1", endpoint="life-fixed")
    zs.promote("life", 3)
    assert served(api, "life-fixed") == "life:1"
    described = cli(server, "endpoints", "describe", "life-fixed")
    assert "pinned to version 1" in described
    assert "promotions do not move it" in described


def test_follow_redeploys_on_promotion_while_requests_keep_succeeding(
    zs: Client, api: Api, server: ServerProcess
) -> None:
    zs.promote("life", 1)
    zs.deploy("life@production", endpoint="life-follow", follow=True)
    assert "follows life@production" in cli(server, "endpoints", "describe", "life-follow")
    failures: list[str] = []
    versions: list[str] = []
    stop = threading.Event()

    def traffic() -> None:
        client = Api(server.url)
        while not stop.is_set():
            response = client.invoke("life-follow", {"instances": [ROW]})
            if response.status_code != 200:
                failures.append(f"{response.status_code}: {response.text}")
            else:
                versions.append(response.headers["x-zeroserve-model-version"])

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        while len(versions) < 30:
            threading.Event().wait(0.01)
        change = zs.promote("life", 2)
        before = len(versions)
        while len(versions) < before + 30:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert change["redeployed"] == ["life-follow: life version 1 -> 2"]
    assert failures == []
    assert versions[0] == "life:1" and versions[-1] == "life:2"
    spec = zs.endpoint("life-follow")["spec"]
    assert [(v["version"], v["follow"]) for v in spec["variants"]] == [(2, "@production")]
    assert served(api, "life-pinned") == "life:2"  # pinned endpoints did not move


def test_endpoints_update_changes_scaling_and_version(zs: Client, server: ServerProcess) -> None:
    zs.deploy("life:1", endpoint="life-upd")
    out = cli(server, "endpoints", "update", "life-upd", "--max-replicas", "3")
    assert "max_replicas 2 -> 3" in out
    out = cli(server, "endpoints", "update", "life-upd", "--version", "@production", "--follow")
    assert "follows life@production" in out
    spec = zs.endpoint("life-upd")["spec"]["variants"][0]
    assert spec["scaling"]["max_replicas"] == 3 and spec["follow"] == "@production"
    assert "nothing changed" in cli(
        server, "endpoints", "update", "life-upd", "--max-replicas", "3"
    )


def test_models_delete_is_refused_while_served(
    zs: Client, server: ServerProcess, models_dir: Path
) -> None:
    zs.register("life-tmp", models_dir / "forest.skops")
    zs.deploy("life-tmp", endpoint="life-tmp")
    out = cli(server, "models", "delete", "life-tmp", "--yes", ok=False)
    assert "served by endpoints life-tmp" in out
    zs.delete_endpoint("life-tmp")
    assert "deleted model life-tmp" in cli(server, "models", "delete", "life-tmp", "--yes")
    with pytest.raises(errors.ModelNotFound):
        zs.model("life-tmp")
