"""Batch transform through the server: outputs equal the model, bad rows are named,
cancel/resume, and a 1,000,000-row run survives SIGKILL of the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.integration.conftest import Api
from tests.polling import wait_for
from zeroserve.jobs import batch
from zeroserve.process import ServerProcess
from zeroserve.runtimes.onnx import make_session

ENV = {"ZEROSERVE_JOB_VISIBILITY_S": "3"}


@pytest.fixture(scope="module")
def batch_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path
) -> Iterator[tuple[ServerProcess, Api]]:
    # Batch URIs are confined to data_dir and ZEROSERVE_BATCH_ROOTS; the tests' files
    # live under pytest's base temp directory.
    env = {**ENV, "ZEROSERVE_BATCH_ROOTS": json.dumps([str(tmp_path_factory.getbasetemp())])}
    with ServerProcess(tmp_path_factory.mktemp("batch"), env=env) as proc:
        api = Api(proc.url)
        api.register("forest", models_dir / "forest.skops", compile="onnx")
        yield proc, api


def onnx_predictions(server: ServerProcess, x: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    path = server.data_dir / "artifacts" / "models" / "forest" / "1" / "model.onnx"
    session = make_session(str(path))
    return np.concatenate(
        [
            session.run(["probabilities"], {"input": x[i : i + 65536]})[0]
            for i in range(0, len(x), 65536)
        ]
    )


def wait_run(api: Api, run_id: str, timeout_s: float) -> dict[str, Any]:
    """The batch run's status once it is no longer running."""

    def finished() -> dict[str, Any] | None:
        run: dict[str, Any] = api.check(api.http.get(f"/api/batch/{run_id}"))
        return run if run["state"] != "running" else None

    return wait_for(finished, timeout_s, f"batch run {run_id} to finish", interval_s=0.2)


def write_csv(path: Path, x: np.ndarray[Any, Any], ids: list[str]) -> None:
    header = "id," + ",".join(f"f{i}" for i in range(x.shape[1]))
    lines = [header] + [
        f"{i}," + ",".join(f"{v:.9g}" for v in row) for i, row in zip(ids, x, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def test_csv_run_matches_the_model(batch_server: tuple[ServerProcess, Api], tmp_path: Path) -> None:
    server, api = batch_server
    x = np.random.default_rng(0).random((5_000, 98)).astype(np.float32)
    ids = [f"tx-{i}" for i in range(len(x))]
    write_csv(tmp_path / "in.csv", x, ids)
    run = api.check(
        api.http.post(
            "/api/batch",
            json={
                "model": "forest",
                "input_uri": str(tmp_path / "in.csv"),
                "output_uri": str(tmp_path / "out"),
                "id_column": "id",
                "shard_rows": 2_000,
                "output_format": "parquet",
            },
        )
    )
    assert run["shards"] == 3
    done = wait_run(api, run["run_id"], 120)
    assert done["state"] == "done" and done["rows_written"] == 5_000
    table = batch.read_outputs(str(tmp_path / "out")).to_pandas().set_index("id")
    want = onnx_predictions(server, x.astype(np.float64).astype(np.float32))
    got = table.loc[ids, ["probabilities_0", "probabilities_1"]].to_numpy()
    np.testing.assert_allclose(got, want, atol=1e-6)  # CSV text round trip of the inputs
    # The internal endpoint goes away with the run.
    assert f"batch-{run['run_id']}" not in [
        e["spec"]["name"] for e in api.check(api.http.get("/api/endpoints"))
    ]


def test_bad_rows_are_named_or_skipped(
    batch_server: tuple[ServerProcess, Api], tmp_path: Path
) -> None:
    _, api = batch_server
    x = np.random.default_rng(1).random((300, 98)).astype(np.float32)
    write_csv(tmp_path / "in.csv", x, [str(i) for i in range(300)])
    lines = (tmp_path / "in.csv").read_text().splitlines()
    lines[42] = lines[42].replace(",", ",abc,", 1).rsplit(",", 1)[0]  # a word in a number
    (tmp_path / "in.csv").write_text("\n".join(lines) + "\n")
    body = {"model": "forest", "input_uri": str(tmp_path / "in.csv"), "id_column": "id"}
    failed = wait_run(
        api,
        api.check(
            api.http.post("/api/batch", json={**body, "output_uri": str(tmp_path / "strict")})
        )["run_id"],
        60,
    )
    assert failed["state"] == "failed"
    assert "line 43" in " ".join(failed["errors"])
    skipped = wait_run(
        api,
        api.check(
            api.http.post(
                "/api/batch",
                json={**body, "output_uri": str(tmp_path / "lenient"), "skip_bad_rows": True},
            )
        )["run_id"],
        60,
    )
    assert skipped["state"] == "done"
    assert skipped["bad_rows"] == 1 and skipped["rows_written"] == 299
    errors = list((tmp_path / "lenient").glob("errors-*.jsonl"))
    assert errors and "43" in errors[0].read_text()
    missing = api.http.post(
        "/api/batch",
        json={**body, "input_uri": str(tmp_path / "nope.csv"), "output_uri": str(tmp_path / "x")},
    )
    assert missing.status_code == 404
    assert "nope.csv" in missing.json()["error"]


def test_batch_uris_outside_the_allowlist_are_refused(
    batch_server: tuple[ServerProcess, Api], tmp_path: Path
) -> None:
    """M12: batch input and output are confined like async inputs; nothing is echoed."""
    _, api = batch_server
    write_csv(tmp_path / "in.csv", np.zeros((3, 98), dtype=np.float32), ["a", "b", "c"])
    inside = {"model": "forest", "input_uri": str(tmp_path / "in.csv")}
    cases = [
        {**inside, "input_uri": "/etc/passwd", "output_uri": str(tmp_path / "o1")},
        {
            **inside,
            "input_uri": f"simplecache::file://{tmp_path}/in.csv",
            "output_uri": str(tmp_path / "o2"),
        },
        {**inside, "output_uri": "/var/tmp/zs-escaped-output"},
        {**inside, "output_uri": "memory://x"},
    ]
    for body in cases:
        response = api.http.post("/api/batch", json=body)
        assert response.status_code == 403, response.text
        assert "root:" not in response.text
    assert not Path("/var/tmp/zs-escaped-output").exists()


def test_cancel_and_resume_from_the_cli(
    batch_server: tuple[ServerProcess, Api], tmp_path: Path
) -> None:
    server, api = batch_server
    x = np.random.default_rng(2).random((200_000, 98)).astype(np.float32)
    pq.write_table(
        pa.table({f"f{i}": x[:, i] for i in range(98)}),
        tmp_path / "in.parquet",
        row_group_size=5_000,
    )
    env = {**os.environ, "ZEROSERVE_URL": server.url, "COLUMNS": "200"}

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "zeroserve.cli.main", "batch", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    run = api.check(
        api.http.post(
            "/api/batch",
            json={
                "model": "forest",
                "ref": "1",
                "input_uri": str(tmp_path / "in.parquet"),
                "output_uri": str(tmp_path / "out"),
                "shard_rows": 5000,
                "max_replicas": 1,
            },
        )
    )
    run_id = run["run_id"]
    cancelled = api.check(api.http.post(f"/api/batch/{run_id}/cancel"))
    assert cancelled["state"] == "cancelled"
    assert cancelled["shards_done"] < cancelled["shards"]
    assert "cancelled" in cli("status", run_id)
    assert "done" in cli("resume", run_id)
    table = batch.read_outputs(str(tmp_path / "out"))
    assert table.num_rows == 200_000
    assert sorted(table.column("row").to_pylist()) == list(range(200_000))
    assert run_id in cli("list")


def test_a_million_rows_survive_a_killed_server(tmp_path: Path, models_dir: Path) -> None:
    rows = 1_000_000
    x = np.random.default_rng(7).random((rows, 98), dtype=np.float32)
    pq.write_table(
        pa.table({f"f{i}": x[:, i] for i in range(98)}),
        tmp_path / "in.parquet",
        row_group_size=50_000,
    )
    out = tmp_path / "out"
    data_dir = tmp_path / "state"
    env = {**ENV, "ZEROSERVE_BATCH_ROOTS": json.dumps([str(tmp_path)])}
    with ServerProcess(data_dir, env=env) as first:
        api = Api(first.url)
        api.register("forest", models_dir / "forest.skops", compile="onnx")
        run = api.check(
            api.http.post(
                "/api/batch",
                json={
                    "model": "forest",
                    "input_uri": str(tmp_path / "in.parquet"),
                    "output_uri": str(out),
                    "shard_rows": 50_000,
                },
            )
        )
        assert run["shards"] == 20
        wait_for(
            lambda: api.check(api.http.get(f"/api/batch/{run['run_id']}"))["shards_done"] >= 8,
            300,
            "8 of 20 shards",
        )
        first.kill()  # SIGKILL halfway through
    halfway = batch.status(str(out))
    assert 0 < halfway.shards_done < 20
    with ServerProcess(data_dir, env=env) as second:
        api = Api(second.url)
        final = wait_run(api, run["run_id"], 600)  # resumes by itself
        want = onnx_predictions(second, x)
    assert final["state"] == "done"
    table = batch.read_outputs(str(out))
    assert table.num_rows == rows
    order = np.argsort(table.column("row").to_numpy())
    assert np.array_equal(table.column("row").to_numpy()[order], np.arange(rows))
    got = np.column_stack(
        [table.column("probabilities_0").to_numpy(), table.column("probabilities_1").to_numpy()]
    )[order]
    np.testing.assert_array_equal(got, want)
