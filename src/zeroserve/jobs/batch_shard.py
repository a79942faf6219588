"""Running one shard: read, predict in chunks, write atomically, commit.

``run_shard`` is the unit of work that a driver (``run_local``, or a replica
taking a job from the queue) executes. The output is written under a temp name
and renamed into place before the manifest marks the shard done, so a kill at
any moment leaves the shard absent or whole; an output found without its
manifest entry is checked against the input ids and adopted, or rewritten.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from zeroserve.errors import ModelError, ZeroserveError
from zeroserve.jobs.batch_io import BadRow, ShardData
from zeroserve.jobs.batch_manifest import (
    BadBatchInput,
    BatchNotFound,
    Manifest,
    Shard,
    Store,
    load_manifest,
    update_manifest,
)
from zeroserve.jobs.batch_read import read_shard
from zeroserve.jobs.batch_table import read_table_shard
from zeroserve.jobs.batch_write import (
    check_rows,
    checksum,
    decode,
    encode,
    errors_name,
    output_name,
    output_table,
)
from zeroserve.types import Arrays, ColumnSpec

DEFAULT_BATCH_ROWS = 4096

Predict = Callable[[Arrays], Arrays]
RowsCallback = Callable[[int], None]


def write_shard(
    manifest: Manifest,
    shard: Shard,
    ids: np.ndarray[Any, Any],
    outputs: Arrays,
    *,
    bad_rows: int = 0,
) -> Shard:
    """Write the shard's output atomically, then mark it done in the manifest."""
    data = encode(output_table(manifest.output_id_column, ids, outputs), manifest.output_format)
    name = output_name(shard.index, manifest.output_format)
    Store(manifest.output_uri).write_atomic(name, data)
    return _commit(
        manifest,
        shard.index,
        name,
        rows=len(ids),
        bad=bad_rows,
        digest=checksum(data),
        adopted=False,
    )


def _commit(
    manifest: Manifest, index: int, name: str, *, rows: int, bad: int, digest: str, adopted: bool
) -> Shard:
    def change(m: Manifest) -> None:
        m.shards[index] = replace(
            m.shards[index],
            status="done",
            output=name,
            rows_written=rows,
            bad_rows=bad,
            checksum=digest,
            error=None,
            adopted=adopted,
        )

    return update_manifest(manifest, change).shards[index]


def _fail(manifest: Manifest, index: int, error: str, bad: int = 0) -> None:
    def change(m: Manifest) -> None:
        if m.shards[index].status != "done":
            m.shards[index] = replace(m.shards[index], status="failed", error=error, bad_rows=bad)

    update_manifest(manifest, change)


def run_shard(
    manifest: Manifest,
    shard: Shard,
    predict: Predict,
    *,
    input_name: str = "input",
    batch_rows: int = DEFAULT_BATCH_ROWS,
    skip_bad_rows: bool = False,
    on_rows: RowsCallback | None = None,
    columns: list[ColumnSpec] | None = None,
    allow_nan: bool = False,
) -> Shard:
    """Read, predict in chunks of ``batch_rows`` and write one shard; idempotent.

    A shard already done is returned as is. Bad input rows fail the shard with a
    ``BadBatchInput`` naming the first bad line, unless ``skip_bad_rows``: then
    they go to ``errors-<shard>.jsonl`` and the good rows are predicted.
    ``on_rows(n)`` reports progress as rows are predicted. With ``columns`` (a
    table model's signature) the columns are read by name and cast to their types;
    with ``allow_nan`` (a matrix model that takes missing values) nulls are NaN.
    """
    report = on_rows or (lambda n: None)
    stored = stored_manifest(manifest).shards[shard.index]
    if stored.status == "done":
        report(stored.rows)
        return stored
    store = Store(manifest.output_uri)
    name = output_name(shard.index, manifest.output_format)
    if store.exists(name):
        adopted = _adopt(manifest, shard, store, name, skip_bad_rows, columns, allow_nan)
        if adopted is not None:
            report(shard.rows)
            return adopted
    data = _read(manifest, shard, columns, allow_nan)
    if data.bad_rows:
        if not skip_bad_rows:
            error = _bad_rows_error(manifest, shard, data.bad_rows)
            _fail(manifest, shard.index, error.message, len(data.bad_rows))
            raise error
        store.write_atomic(errors_name(shard.index), _errors_file(data.bad_rows))
        report(len(data.bad_rows))
    try:
        outputs = predict_chunks(predict, data.features, input_name, batch_rows, report)
        check_rows(outputs, len(data.ids))
    except Exception as exc:
        first = shard.start_row + 1
        message = f"predict failed on shard {shard.id} (rows {first}-{first + shard.rows - 1})"
        _fail(manifest, shard.index, f"{message}: {exc}", len(data.bad_rows))
        if isinstance(exc, ZeroserveError):
            raise
        raise ModelError(f"{message}: {exc}") from exc
    return write_shard(manifest, shard, data.ids, outputs, bad_rows=len(data.bad_rows))


def _read(
    manifest: Manifest, shard: Shard, columns: list[ColumnSpec] | None, allow_nan: bool = False
) -> ShardData:
    if columns is not None:
        return read_table_shard(manifest, shard, columns)
    return read_shard(manifest, shard, allow_nan)


def predict_chunks(
    predict: Predict,
    features: np.ndarray[Any, Any] | Arrays,
    input_name: str,
    batch_rows: int,
    on_rows: RowsCallback | None = None,
) -> Arrays:
    """``predict`` over row slices of ``features`` (a matrix, or columns by name),
    outputs concatenated in order."""
    table = features if isinstance(features, dict) else {input_name: features}
    total = len(next(iter(table.values())))
    parts: dict[str, list[np.ndarray[Any, Any]]] = {}
    for start in range(0, total, max(1, batch_rows)):
        chunk = {k: v[start : start + batch_rows] for k, v in table.items()}
        for name, value in predict(chunk).items():
            parts.setdefault(name, []).append(np.asarray(value))
        if on_rows is not None:
            on_rows(min(batch_rows, total - start))
    if not parts:
        # No rows to predict: ask once with an empty batch for the output names.
        return dict(predict({k: v[:0] for k, v in table.items()}))
    return {name: np.concatenate(values) for name, values in parts.items()}


def stored_manifest(manifest: Manifest) -> Manifest:
    try:
        return load_manifest(manifest.output_uri)
    except BatchNotFound:
        return manifest


def _adopt(
    manifest: Manifest,
    shard: Shard,
    store: Store,
    name: str,
    skip_bad_rows: bool,
    columns: list[ColumnSpec] | None = None,
    allow_nan: bool = False,
) -> Shard | None:
    """Mark an existing output done if it holds exactly the shard's ids, else drop it."""
    try:
        data = store.read_bytes(name)
        table = decode(data, manifest.output_format, manifest.output_id_column, manifest.id_type)
        got = table.column(manifest.output_id_column).to_pylist()
    except Exception:  # an unreadable or foreign file is rewritten, never trusted
        got = None
    expected = _read(manifest, shard, columns, allow_nan)
    usable = skip_bad_rows or not expected.bad_rows
    if got is not None and usable and got == expected.ids.tolist():
        bad = len(expected.bad_rows)
        digest = checksum(data)
        return _commit(
            manifest, shard.index, name, rows=len(got), bad=bad, digest=digest, adopted=True
        )
    store.remove(name)
    return None


def _bad_rows_error(manifest: Manifest, shard: Shard, bad: list[BadRow]) -> BadBatchInput:
    more = f" (and {len(bad) - 1} more bad rows in this shard)" if len(bad) > 1 else ""
    return BadBatchInput(
        f"{manifest.input_uri}, {bad[0].describe()}{more}; fix the input, or pass "
        f"skip_bad_rows=True to write bad rows to {errors_name(shard.index)} and go on",
        input_uri=manifest.input_uri,
        shard=shard.index,
        **{bad[0].kind: bad[0].number},
    )


def _errors_file(bad: list[BadRow]) -> bytes:
    import orjson

    return b"".join(
        orjson.dumps({row.kind: row.number, "reason": row.reason, "text": row.text}) + b"\n"
        for row in bad
    )
