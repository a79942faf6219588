"""The CLI against a real server, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess


def cli(server: ServerProcess, *args: str, ok: bool = True) -> str:
    env = {**os.environ, "ZEROSERVE_URL": server.url, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "zeroserve.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert (done.returncode == 0) == ok, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_register_deploy_invoke_describe(
    server: ServerProcess, api: Api, models_dir: Path, deployed: dict[str, str]
) -> None:
    out = cli(
        server,
        "models",
        "register",
        str(models_dir / "forest.joblib"),
        "--name",
        "cli-rf",
        ok=False,
    )
    assert "--trust" in out  # a pickle is refused with the reason
    out = cli(
        server,
        "models",
        "register",
        str(models_dir / "forest.joblib"),
        "--name",
        "cli-rf",
        "--trust",
        "--compile",
        "onnx",
    )
    assert "registered cli-rf version 1 (onnx)" in out
    assert "ONNX check" in out
    assert "cli-rf" in cli(server, "models", "list")
    assert "production" in cli(server, "models", "promote", "cli-rf", "1")
    cli(server, "models", "alias", "cli-rf", "champion", "1")
    out = cli(
        server,
        "deploy",
        "cli-rf@production",
        "--endpoint",
        "cli-ep",
        "--mode",
        "serverless",
        "--idle-timeout",
        "30s",
        "--max-replicas",
        "3",
    )
    assert "deployed cli-rf version 1 as endpoint cli-ep (serverless)" in out
    row = json.dumps({"instances": [[0.5] * 98]})
    out = cli(server, "invoke", "cli-ep", "--json", row)
    assert "cold start" in out and "probabilities" in out
    described = cli(server, "endpoints", "describe", "cli-ep")
    assert "0..3" in described and "idle 30s" in described
    # Outcomes of the last minute: the one invocation above, on variant v1.
    assert "last minute" in described
    assert re.search(r"v1\s+│\s+primary\s+│\s+1\s+│", described), described
    assert "cli-ep" in cli(server, "endpoints", "list")
    bad = cli(server, "invoke", "cli-ep", "--json", '{"instances": [[1, 2]]}', ok=False)
    assert "422" in bad and "98 values per row" in bad
    assert "no endpoint named" in cli(server, "invoke", "nope", "--json", row, ok=False)
    cli(server, "endpoints", "delete", "cli-ep")
    assert "cli-ep" not in cli(server, "endpoints", "list")


def test_jobs_commands(server: ServerProcess, api: Api, deployed: dict[str, str]) -> None:
    job = api.http.post(
        f"/v1/endpoints/{deployed['python']}/async", json={"instances": [[0.5] * 98]}
    ).json()
    out = cli(server, "jobs", "list", "--endpoint", deployed["python"])
    assert job["job_id"][:8] in out
    assert job["job_id"] in cli(server, "jobs", "show", job["job_id"])
    assert "dead letters" in cli(server, "jobs", "dead-letters")


def test_unreachable_server_is_explained(tmp_path: Path) -> None:
    env = {**os.environ, "ZEROSERVE_URL": "http://127.0.0.1:9"}
    done = subprocess.run(
        [sys.executable, "-m", "zeroserve.cli.main", "models", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot reach zeroserve" in done.stderr
