"""Batch transform throughput: end to end (read, predict, write) vs raw ONNX Runtime.

Builds a Parquet file (default 1,000,000 rows x 98 float32 features, in a temp
dir), trains a 100-tree RandomForest on 20,000 synthetic rows, compiles it to
ONNX with skl2onnx, then alternates, ``--repeats`` times:

* raw: ``session.run`` over the rows already in memory, ``--batch-rows`` at a time;
* batch: ``plan`` + ``run_local`` from the Parquet file to Parquet outputs, with
  the same session's ``run`` as the predict function.

Reports median/min/max rows/s of each and the ratio of the medians (goal: the
batch transform reaches at least 70% of raw). ``--kill-and-resume`` also runs
the transform in a subprocess, SIGKILLs it once about half the shards are done,
resumes in-process and checks that the outputs hold exactly one row per input
row, equal to the in-process predictions.

    python bench/batch.py                       # the full run (a few minutes)
    python bench/batch.py --rows 200000 --repeats 2 --kill-and-resume
"""

from __future__ import annotations

import argparse
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from zeroserve.jobs.batch import load_manifest, plan, read_outputs, run_local
from zeroserve.runtimes.onnx import make_session
from zeroserve.types import Arrays


def make_model(features: int, trees: int, train_rows: int) -> tuple[bytes, np.ndarray[Any, Any]]:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier

    x, y = make_classification(
        n_samples=train_rows, n_features=features, n_informative=30, random_state=0
    )
    x = x.astype(np.float32)
    model = RandomForestClassifier(n_estimators=trees, random_state=0, n_jobs=-1).fit(x, y)
    onx = convert_sklearn(
        model,
        initial_types=[("input", FloatTensorType([None, features]))],
        options={id(model): {"zipmap": False}},
    )
    return onx.SerializeToString(), x


def make_data(train_x: np.ndarray[Any, Any], rows: int, path: Path, row_group_rows: int) -> Any:
    """Rows near the training distribution (a training row plus noise), as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    x = train_x[rng.integers(0, len(train_x), rows)]
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.1)
    ids = np.arange(rows, dtype=np.int64)
    columns = {"id": ids, **{f"f{j}": x[:, j] for j in range(x.shape[1])}}
    pq.write_table(pa.table(columns), path, row_group_size=row_group_rows)
    return x


def session_predict(session: Any) -> Any:
    names = [o.name for o in session.get_outputs()]

    def predict(arrays: Arrays) -> Arrays:
        return dict(zip(names, session.run(names, arrays), strict=True))

    return predict


def raw_run(predict: Any, x: np.ndarray[Any, Any], batch_rows: int) -> tuple[float, Arrays]:
    parts: dict[str, list[np.ndarray[Any, Any]]] = {}
    start = time.perf_counter()
    for i in range(0, len(x), batch_rows):
        for name, value in predict({"input": x[i : i + batch_rows]}).items():
            parts.setdefault(name, []).append(value)
    elapsed = time.perf_counter() - start
    return elapsed, {k: np.concatenate(v) for k, v in parts.items()}


def batch_run(predict: Any, src: Path, out: Path, args: argparse.Namespace) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    manifest = plan(str(src), str(out), shard_rows=args.shard_rows, id_column="id")
    run_local(
        manifest, predict, workers=args.workers, progress=args.progress, batch_rows=args.batch_rows
    )
    return time.perf_counter() - start


def check_outputs(out: Path, rows: int, expected: Arrays) -> str:
    table = read_outputs(str(out))
    ids = table.column("id").to_numpy()
    assert table.num_rows == rows, f"{table.num_rows} output rows, expected {rows}"
    assert len(np.unique(ids)) == rows, "duplicated ids in the output"
    order = np.argsort(ids)
    assert np.array_equal(ids[order], np.arange(rows)), "missing ids in the output"
    label = table.column("label").to_numpy()[order]
    assert np.array_equal(label, expected["label"]), "labels differ from in-process"
    got = np.stack([table.column(f"probabilities_{k}").to_numpy()[order] for k in (0, 1)], 1)
    diff = float(np.max(np.abs(got - expected["probabilities"])))
    assert diff <= 1e-6, f"probabilities differ from in-process by {diff}"
    return f"{rows:,} rows, ids unique and complete, labels equal, max |dp| = {diff:.1e}"


def kill_and_resume(src: Path, model: Path, args: argparse.Namespace, expected: Arrays) -> str:
    out = src.parent / "killed"
    shutil.rmtree(out, ignore_errors=True)
    child = [sys.executable, __file__, "--child", str(src), str(out), str(model)]
    child += ["--threads", str(args.threads), "--shard-rows", str(args.shard_rows)]
    child += ["--batch-rows", str(args.batch_rows)]
    proc = subprocess.Popen(child)
    half, done, total = 0, 0, 0
    while proc.poll() is None:
        try:
            shards = load_manifest(str(out)).shards
            total, done = len(shards), sum(s.status == "done" for s in shards)
            half = max(1, total // 2)
        except Exception:  # not planned yet
            pass
        if half and done >= half:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the child finished before it was killed"
    print(f"killed the run with {done}/{total} shards done; resuming")
    session = make_session(str(model), threads=args.threads)
    manifest = plan(str(src), str(out))
    run_local(manifest, session_predict(session), batch_rows=args.batch_rows, progress=True)
    return check_outputs(out, args.rows, expected)


def child_main(args: argparse.Namespace) -> None:
    src, out, model = args.child
    session = make_session(model, threads=args.threads)
    manifest = plan(src, out, shard_rows=args.shard_rows, id_column="id")
    run_local(manifest, session_predict(session), batch_rows=args.batch_rows, progress=False)


def summary(times: list[float], rows: int) -> tuple[float, float, float]:
    rates = [rows / t for t in times]
    return statistics.median(rates), min(rates), max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=98)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--train-rows", type=int, default=20_000)
    parser.add_argument("--shard-rows", type=int, default=100_000)
    parser.add_argument("--row-group-rows", type=int, default=100_000)
    parser.add_argument("--batch-rows", type=int, default=4096)
    # One intra-op thread, as a replica runs it (zeroserve.runtimes.onnx); more
    # threads compete with the reader and writer for the same cores.
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--workers", type=int, default=1, help="run_local shard threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--progress", action="store_true", help="show the progress bar")
    parser.add_argument("--kill-and-resume", action="store_true")
    parser.add_argument("--child", nargs=3, metavar=("SRC", "OUT", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print("command: python " + " ".join(sys.argv))
    with tempfile.TemporaryDirectory(prefix="zeroserve-bench-batch-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        model_bytes, train_x = make_model(args.features, args.trees, args.train_rows)
        (work / "model.onnx").write_bytes(model_bytes)
        x = make_data(train_x, args.rows, work / "input.parquet", args.row_group_rows)
        size_mb = (work / "input.parquet").stat().st_size / 1e6
        console.print(
            f"setup {time.perf_counter() - t0:.1f}s: {args.rows:,} rows x {args.features} "
            f"float32 in Parquet ({size_mb:,.0f} MB), RandomForest of {args.trees} trees "
            f"as ONNX ({len(model_bytes) / 1e6:.1f} MB), ORT intra-op threads {args.threads}"
        )
        predict = session_predict(make_session(model_bytes, threads=args.threads))
        raw_times: list[float] = []
        batch_times: list[float] = []
        expected: Arrays = {}
        for rep in range(args.repeats):
            elapsed, expected = raw_run(predict, x, args.batch_rows)
            raw_times.append(elapsed)
            batch_times.append(batch_run(predict, work / "input.parquet", work / "out", args))
            console.print(
                f"rep {rep + 1}: raw {args.rows / raw_times[-1]:,.0f} rows/s, "
                f"batch {args.rows / batch_times[-1]:,.0f} rows/s"
            )
        check = check_outputs(work / "out", args.rows, expected)

        table = Table(title=f"batch transform, {args.rows:,} rows x {args.features} features")
        for col in ("path", "median rows/s", "min", "max", "median s"):
            table.add_column(col, justify="right" if col != "path" else "left")
        for name, times in (
            ("raw ONNX Runtime (in memory)", raw_times),
            ("batch end to end", batch_times),
        ):
            med, lo, hi = summary(times, args.rows)
            table.add_row(
                name, f"{med:,.0f}", f"{lo:,.0f}", f"{hi:,.0f}", f"{statistics.median(times):.2f}"
            )
        console.print(table)
        ratio = summary(batch_times, args.rows)[0] / summary(raw_times, args.rows)[0]
        console.print(f"ratio batch/raw (medians): {ratio:.1%} (goal >= 70%)")
        console.print(f"output check: {check}")
        if args.kill_and_resume:
            verdict = kill_and_resume(work / "input.parquet", work / "model.onnx", args, expected)
            console.print(f"kill and resume: {verdict}")


if __name__ == "__main__":
    main()
