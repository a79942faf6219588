"""A batch run SIGKILLed at a random moment resumes to exactly one row per input row."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from zeroserve.jobs.batch import load_manifest, plan, read_outputs, run_local
from zeroserve.jobs.batch_manifest import BatchNotFound
from zeroserve.types import Arrays

ROWS, FEATURES, SHARD_ROWS = 3000, 4, 150
WEIGHTS = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)

CHILD = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from zeroserve.jobs.batch import plan, run_local

    weights = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
    delay_s = float(sys.argv[3])

    def predict(arrays):
        time.sleep(delay_s)
        return {"y": arrays["input"] @ weights}

    manifest = plan(sys.argv[1], sys.argv[2], shard_rows=int(sys.argv[4]), id_column="id")
    run_local(manifest, predict, progress=False, batch_rows=50)
    """
)


def predict(arrays: Arrays) -> Arrays:
    return {"y": arrays["input"] @ WEIGHTS}


def kill_when(
    proc: subprocess.Popen[bytes], out: Path, shards_done: int, extra_s: float, timeout_s: float
) -> None:
    """SIGKILL ``proc`` ``extra_s`` after ``shards_done`` shards are committed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            done = sum(s.status == "done" for s in load_manifest(str(out)).shards)
        except BatchNotFound:  # not planned yet
            done = 0
        if done >= shards_done:
            break
        time.sleep(0.002)
    time.sleep(extra_s)  # land anywhere: mid-predict, mid-write, between rename and commit
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


@pytest.mark.parametrize(("seed", "fmt", "delay_s"), [(1, "parquet", 0.004), (2, "csv", 0.002)])
def test_sigkill_at_a_random_moment_then_resume(
    tmp_path: Path, seed: int, fmt: str, delay_s: float
) -> None:
    rnd = random.Random(seed)
    rng = np.random.default_rng(seed)
    ids = rng.permutation(ROWS).astype(np.int64) + 10
    x = rng.standard_normal((ROWS, FEATURES)).astype(np.float32)
    src = tmp_path / f"in.{fmt}"
    table = pa.table({"id": ids, **{f"f{j}": x[:, j] for j in range(FEATURES)}})
    if fmt == "parquet":
        pq.write_table(table, src, row_group_size=SHARD_ROWS)
    else:
        pacsv.write_csv(table, src)
    out = tmp_path / "out"
    shards = ROWS // SHARD_ROWS
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    first = rnd.randint(2, shards // 2 - 2)
    for target in (first, rnd.randint(first + 2, shards - 4)):  # killed twice
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(src), str(out), str(delay_s), str(SHARD_ROWS)],
            env=env,
        )
        kill_when(proc, out, target, extra_s=rnd.random() * 0.01, timeout_s=60)
        assert proc.returncode == -signal.SIGKILL
    mid = load_manifest(str(out))
    assert 0 < sum(s.status == "done" for s in mid.shards) < shards
    result = run_local(plan(str(src), str(out)), predict, progress=False)
    assert result.state == "done" and result.rows_written == ROWS
    got = read_outputs(str(out))
    assert got.num_rows == ROWS
    got_ids = got.column("id").to_numpy()
    assert len(np.unique(got_ids)) == ROWS and set(got_ids.tolist()) == set(ids.tolist())
    order = np.argsort(ids)
    expected = predict({"input": x})["y"][order]
    np.testing.assert_allclose(got.column("y").to_numpy()[np.argsort(got_ids)], expected, rtol=1e-6)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
