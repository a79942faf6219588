"""Batch transforms: plan shards, run each one, resume after a kill.

A run lives in its output directory (local path or fsspec URL)::

    manifest.json           the plan and the state of every shard
    part-00000.parquet      one output file per shard: id column + model outputs
    errors-00003.jsonl      bad input rows of a shard (only with skip_bad_rows)

``run_shard`` is the unit of work: read one shard, predict in chunks, write the
output under a temp name, rename it into place, and only then mark the shard
done in the manifest. A shard is therefore either absent or whole in the
output; an output whose manifest entry was lost (killed between rename and
commit) is validated against the input and adopted, or rewritten. Resuming is
``plan`` again (it returns the stored manifest for an unchanged input) and
running the shards that are not done. ``run_local`` drives that in-process; the
job queue drives it with one shard per job.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from zeroserve.errors import Conflict
from zeroserve.jobs.batch_io import (
    BadRow,
    ShardData,
    detect_format,
    fingerprint,
    input_fs,
    plan_layout,
)
from zeroserve.jobs.batch_manifest import (
    MANIFEST_FILE,
    BadBatchInput,
    BatchInputNotFound,
    BatchNotFound,
    Manifest,
    Shard,
    Store,
    load_manifest,
    save_manifest,
    update_manifest,
)
from zeroserve.jobs.batch_read import read_shard
from zeroserve.jobs.batch_shard import (
    DEFAULT_BATCH_ROWS,
    Predict,
    RowsCallback,
    predict_chunks,
    run_shard,
    stored_manifest,
    write_shard,
)
from zeroserve.jobs.batch_write import decode

__all__ = [
    "BadBatchInput",
    "BadRow",
    "BatchInputNotFound",
    "BatchNotFound",
    "BatchStatus",
    "Manifest",
    "Predict",
    "Shard",
    "ShardData",
    "cancel",
    "load_manifest",
    "plan",
    "predict_chunks",
    "read_outputs",
    "read_shard",
    "resume",
    "run_local",
    "run_shard",
    "status",
    "write_shard",
]

DEFAULT_SHARD_ROWS = 100_000
State = Literal["pending", "partial", "done", "failed", "cancelled"]


def plan(
    input_uri: str,
    output_uri: str,
    *,
    shard_rows: int = DEFAULT_SHARD_ROWS,
    format: str | None = None,
    output_format: str | None = None,
    id_column: str | None = None,
    feature_columns: list[str] | None = None,
    n_features: int | None = None,
    overwrite: bool = False,
    typed: bool = False,
) -> Manifest:
    """Split ``input_uri`` into shards and store the manifest under ``output_uri``.

    ``format`` is the input's (default: from its extension), ``output_format``
    the outputs' (default: the input's). If ``output_uri`` already holds a run
    for the same, unchanged input, that manifest is returned: planning again is
    how a run resumes. ``n_features``, when given, is checked against the number
    of feature columns (all columns but the id, unless ``feature_columns``).
    """
    if shard_rows < 1:
        raise BadBatchInput(f"shard_rows must be at least 1, got {shard_rows}")
    fmt = detect_format(input_uri, format)
    out_fmt = detect_format("", output_format) if output_format else fmt
    fs, path, info = input_fs(input_uri)
    store = Store(output_uri)
    if store.exists(MANIFEST_FILE) and not overwrite:
        existing = load_manifest(output_uri)
        _check_same_run(existing, input_uri, fingerprint(info), id_column, feature_columns)
        store.clean_temps()
        return existing
    if overwrite:
        for name in store.names():
            if name.startswith(("part-", "errors-", ".")) or name == MANIFEST_FILE:
                store.remove(name)
    layout = plan_layout(
        fs,
        path=path,
        fmt=fmt,
        uri=input_uri,
        shard_rows=shard_rows,
        id_column=id_column,
        feature_columns=feature_columns,
        typed=typed,
    )
    if n_features is not None and len(layout.feature_columns) != n_features:
        cols = layout.feature_columns
        raise BadBatchInput(
            f"{input_uri} has {len(cols)} feature columns ({cols[0] if cols else ''} .. "
            f"{cols[-1] if cols else ''}) but the model takes {n_features}; pass "
            "feature_columns=[...] or id_column=... to choose them",
            expected=n_features,
            got=len(cols),
        )
    manifest = Manifest(
        input_uri=input_uri,
        output_uri=output_uri,
        input_format=fmt,
        output_format=out_fmt,
        fingerprint=fingerprint(info),
        feature_columns=layout.feature_columns,
        id_column=id_column,
        id_type=layout.id_type,
        shard_rows=shard_rows,
        total_rows=layout.total_rows,
        shards=layout.shards,
        header=layout.header,
        created_at=time.time(),
    )
    save_manifest(manifest)
    return manifest


def _check_same_run(
    existing: Manifest,
    input_uri: str,
    fp: dict[str, Any],
    id_column: str | None,
    feature_columns: list[str] | None,
) -> None:
    hint = "write to a new output location, or pass overwrite=True to start over"
    if existing.input_uri != input_uri:
        raise Conflict(
            f"{existing.output_uri} holds a batch run of {existing.input_uri}, not {input_uri}; "
            + hint
        )
    if existing.fingerprint != fp:
        raise Conflict(
            f"{input_uri} changed since its batch run was planned "
            f"({existing.fingerprint} -> {fp}); " + hint
        )
    if id_column is not None and id_column != existing.id_column:
        raise Conflict(f"the stored run uses id column {existing.id_column!r}; " + hint)
    if feature_columns is not None and list(feature_columns) != existing.feature_columns:
        raise Conflict("the stored run uses other feature columns; " + hint)


@dataclass(slots=True)
class BatchStatus:
    """Where a batch run stands, from its manifest."""

    output_uri: str
    input_uri: str
    state: State
    shards: int
    shards_done: int
    shards_failed: int
    rows: int
    rows_done: int
    """Input rows of the shards that are done (written or skipped as bad)."""
    rows_written: int
    bad_rows: int
    errors: list[str] = field(default_factory=list)


def status(output_uri: str) -> BatchStatus:
    """Summarise the run stored at ``output_uri``."""
    m = load_manifest(output_uri)
    done = [s for s in m.shards if s.status == "done"]
    failed = [s for s in m.shards if s.status == "failed"]
    state: State = "partial" if done else "pending"
    if len(done) == len(m.shards):
        state = "done"
    elif m.cancelled:
        state = "cancelled"
    elif failed:
        state = "failed"
    return BatchStatus(
        output_uri=output_uri,
        input_uri=m.input_uri,
        state=state,
        shards=len(m.shards),
        shards_done=len(done),
        shards_failed=len(failed),
        rows=m.total_rows,
        rows_done=sum(s.rows for s in done),
        rows_written=sum(s.rows_written or 0 for s in done),
        bad_rows=sum(s.bad_rows for s in done),
        errors=[f"shard {s.id}: {s.error}" for s in failed if s.error],
    )


def cancel(output_uri: str) -> BatchStatus:
    """Ask drivers to stop before their next shard; ``resume`` continues the run."""

    def change(m: Manifest) -> None:
        m.cancelled = True

    update_manifest(load_manifest(output_uri), change)
    return status(output_uri)


def resume(output_uri: str, predict: Predict, **options: Any) -> BatchStatus:
    """Continue a stopped, failed or cancelled run: plan again, run what is not done."""
    stored = load_manifest(output_uri)
    manifest = plan(stored.input_uri, output_uri)  # raises Conflict if the input changed

    def change(m: Manifest) -> None:
        m.cancelled = False

    update_manifest(manifest, change)
    return run_local(manifest, predict, **options)


def run_local(
    manifest: Manifest,
    predict: Predict,
    *,
    workers: int = 1,
    progress: bool = True,
    input_name: str = "input",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    skip_bad_rows: bool = False,
) -> BatchStatus:
    """Run the shards not done yet in this process, with a rows/s progress bar.

    ``workers`` threads run shards side by side (``predict`` must be
    thread-safe; ONNX Runtime sessions are). The first failing shard stops new
    shards from starting and its error is raised once the others finish.
    """
    current = stored_manifest(manifest)
    if current.cancelled:
        raise Conflict(f"batch run at {manifest.output_uri} was cancelled; resume() continues it")
    todo = [s for s in current.shards if s.status != "done"]
    failures: list[BaseException] = []

    with _progress_bar(progress, current) as advance:

        def work(shard: Shard) -> None:
            if failures or stored_manifest(manifest).cancelled:
                return
            try:
                run_shard(
                    manifest,
                    shard,
                    predict,
                    input_name=input_name,
                    batch_rows=batch_rows,
                    skip_bad_rows=skip_bad_rows,
                    on_rows=advance,
                )
            except BaseException as exc:
                failures.append(exc)
                raise

        if workers <= 1:
            for shard in todo:
                work(shard)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="zeroserve-batch") as pool:
                for future in [pool.submit(work, s) for s in todo]:
                    future.exception()
    if failures:
        raise failures[0]
    return status(manifest.output_uri)


@contextmanager
def _progress_bar(enabled: bool, manifest: Manifest) -> Iterator[RowsCallback]:
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RowsPerSecond(ProgressColumn):
        def render(self, task: Task) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="cyan")

    done = sum(s.rows for s in manifest.shards if s.status == "done")
    columns = (
        TextColumn("[bold]batch"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns) as bar:
        task = bar.add_task("batch", total=manifest.total_rows, completed=done)
        yield lambda n: bar.advance(task, n)


def read_outputs(output_uri: str) -> Any:
    """All written outputs of a run, in shard order, as one Arrow table."""
    import pyarrow as pa

    m = load_manifest(output_uri)
    store = Store(output_uri)
    tables = [
        decode(store.read_bytes(s.output), m.output_format, m.output_id_column, m.id_type)
        for s in m.shards
        if s.status == "done" and s.output
    ]
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")
