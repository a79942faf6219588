"""Every CLI mistake from issue 10 is one line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from zeroserve.client import Client
from zeroserve.process import ServerProcess


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ZEROSERVE_URL": url, "COLUMNS": "80"}
    env.pop("ZEROSERVE_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "zeroserve.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def batch_shard_job(
    server: ServerProcess, models_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> str:
    import numpy as np
    import pandas as pd

    client = Client(server.url)
    client.register("err-rf", models_dir / "forest.skops")
    source = tmp_path_factory.mktemp("errs") / "rows.csv"
    pd.DataFrame(np.load(models_dir / "sample.npy")[:20]).to_csv(source, index=False)
    run_ = client.batch_run("err-rf", source, source.parent / "out", timeout_s=120)
    jobs = client.get("/api/jobs", params={"limit": 200})
    shard = [j for j in jobs if j.get("batch_run") == run_["run_id"]]
    assert shard, jobs
    return str(shard[0]["job_id"])


def test_register_with_a_malformed_signature_file(
    server: ServerProcess, models_dir: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "sig.json"
    bad.write_text("{not json")
    line = one_line_error(
        run(
            server.url,
            "models",
            "register",
            str(models_dir / "forest.skops"),
            "-n",
            "err-sig",
            "--signature",
            str(bad),
        )
    )
    assert "signature file" in line and "not valid JSON" in line
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"inputs": [{"name": "x", "dtype": "float99", "shape": [-1]}]}))
    line = one_line_error(
        run(
            server.url,
            "models",
            "register",
            str(models_dir / "forest.skops"),
            "-n",
            "err-sig",
            "--signature",
            str(wrong),
        )
    )
    assert "signature is not valid" in line and "(400)" in line


def test_register_with_a_missing_sample_or_model_file(
    server: ServerProcess, models_dir: Path, tmp_path: Path
) -> None:
    line = one_line_error(
        run(
            server.url,
            "models",
            "register",
            str(models_dir / "forest.skops"),
            "-n",
            "err-s",
            "--sample",
            str(tmp_path / "nope.npy"),
        )
    )
    assert "--sample file" in line and "does not exist" in line
    line = one_line_error(
        run(server.url, "models", "register", str(tmp_path / "nope.skops"), "-n", "err-s")
    )
    assert "does not exist" in line


def test_jobs_show_on_a_batch_shard(server: ServerProcess, batch_shard_job: str) -> None:
    done = run(server.url, "jobs", "show", batch_shard_job)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (
        shown["job_id"] == batch_shard_job and shown["batch_run"] and shown["status"] == "succeeded"
    )
    listed = run(server.url, "jobs", "list")
    assert listed.returncode == 0 and "batch " in listed.stdout
    line = one_line_error(run(server.url, "jobs", "show", "0" * 32))
    assert "(404)" in line


def test_invoke_mistakes(server: ServerProcess, batch_shard_job: str, tmp_path: Path) -> None:
    Client(server.url).deploy("err-rf", endpoint="err-ep")
    line = one_line_error(
        run(server.url, "invoke", "err-ep", "--file", str(tmp_path / "missing.json"))
    )
    assert "--file" in line and "does not exist" in line
    bad = tmp_path / "bad.json"
    bad.write_text("{instances")
    line = one_line_error(run(server.url, "invoke", "err-ep", "--file", str(bad)))
    assert "is not valid JSON" in line
    line = one_line_error(run(server.url, "invoke", "err-ep"))
    assert "--json" in line and "--file" in line
    line = one_line_error(run(server.url, "invoke", "nope", "--json", '{"instances": [[1]]}'))
    assert "no endpoint named 'nope'" in line and "(404)" in line
    line = one_line_error(run(server.url, "invoke", "err-ep", "--json", '{"instances": [[1, 2]]}'))
    assert "98 values per row" in line and "(422)" in line


def test_other_server_side_mistakes(server: ServerProcess) -> None:
    assert "(404)" in one_line_error(run(server.url, "endpoints", "describe", "nope"))
    assert "(404)" in one_line_error(run(server.url, "models", "promote", "nope", "1"))
    assert "(404)" in one_line_error(run(server.url, "deploy", "nope"))
    line = one_line_error(run(server.url, "deploy", "err-rf:3", "--follow"))
    assert "version" in line
    line = one_line_error(run(server.url, "deploy", "err-rf:1", "--follow"))
    assert "--follow needs an alias or a stage" in line
    assert "duration" in one_line_error(
        run(server.url, "deploy", "err-rf", "--idle-timeout", "soon")
    )
    line = one_line_error(run(server.url, "deploy", "err-rf", "--mode", "fast"))
    assert "--help" in line


@pytest.mark.parametrize(
    "args",
    [
        ["models", "list"],
        ["models", "register", "README.md", "-n", "x"],
        ["deploy", "fraud"],
        ["invoke", "fraud", "--json", "{}"],
        ["endpoints", "describe", "fraud"],
        ["jobs", "list"],
        ["batch", "list"],
    ],
)
def test_every_command_while_the_server_is_down(args: list[str]) -> None:
    line = one_line_error(run("http://127.0.0.1:9", *args))
    assert "cannot reach zeroserve at http://127.0.0.1:9" in line
    assert "zeroserve up" in line


def test_version_and_async_invoke(server: ServerProcess, batch_shard_job: str) -> None:
    import zeroserve

    done = run(server.url, "--version")
    assert done.returncode == 0 and done.stdout.strip() == f"zeroserve {zeroserve.__version__}"
    Client(server.url).deploy("err-rf", endpoint="err-ep")
    row = json.dumps({"instances": [[0.5] * 98]})
    done = run(server.url, "invoke", "err-ep", "--json", row, "--async", "--timeout", "60s")
    assert done.returncode == 0, done.stderr
    assert "job " in done.stdout and '"probabilities"' in done.stdout


def test_up_with_bad_settings(tmp_path: Path) -> None:
    line = one_line_error(
        run("http://127.0.0.1:9", "up", "--port", "99999", "--data-dir", str(tmp_path))
    )
    assert "port" in line and "65535" in line
    line = one_line_error(run("http://127.0.0.1:9", "up", "--log-level", "loud"))
    assert "--log-level 'loud'" in line
