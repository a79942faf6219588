"""Reading one shard into ids and a float32 feature matrix.

The fast path hands the shard's bytes (or row groups) to pyarrow and checks the
result (no nulls, the planned row count). Anything it rejects is parsed again
line by line in Python, which is slow but names every bad line and the reason;
that only happens for shards that hold bad rows.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np

from zeroserve.errors import require
from zeroserve.jobs.batch_io import BadRow, ShardData, input_fs, pa_module
from zeroserve.jobs.batch_manifest import BadBatchInput, Manifest, Shard


def read_shard(manifest: Manifest, shard: Shard, allow_nan: bool = False) -> ShardData:
    """Ids and features of ``shard``; malformed rows are returned in ``bad_rows``.

    With ``allow_nan`` (a model that takes missing values) an empty or null feature
    is NaN, not a bad row.
    """
    fs, path, _ = input_fs(manifest.input_uri)
    pa = pa_module()
    try:
        if manifest.input_format == "parquet":
            return _read_parquet(fs, path, manifest, shard, allow_nan)
        with fs.open(path, "rb") as f:
            f.seek(shard.byte_start)
            data = f.read((shard.byte_end or 0) - (shard.byte_start or 0))
    except (OSError, pa.ArrowException) as exc:
        raise BadBatchInput(
            f"cannot read shard {shard.id} of {manifest.input_uri}: {exc}"
        ) from None
    table = _fast_table(data, manifest, shard, allow_nan)
    if table is not None:
        return ShardData(_ids(table, manifest, shard), matrix(table, manifest.feature_columns))
    if manifest.input_format == "csv":
        return _slow_csv(data, manifest, shard, allow_nan)
    return _slow_jsonl(data, manifest, shard, allow_nan)


def matrix(table: Any, columns: list[str]) -> np.ndarray[Any, Any]:
    """Columns of ``table`` as one C-contiguous float32 ``(rows, len(columns))`` matrix."""
    # Filling a Fortran-ordered block column by column writes sequentially; one
    # transposing copy then gives the row-major layout the model wants.
    block = np.empty((len(columns), table.num_rows), dtype=np.float32)
    for j, name in enumerate(columns):
        col = table.column(name)
        for chunk, start in _chunks(col):
            block[j, start : start + len(chunk)] = chunk.to_numpy(zero_copy_only=False)
    return np.ascontiguousarray(block.T)


def _chunks(col: Any) -> list[tuple[Any, int]]:
    out, start = [], 0
    for chunk in col.chunks:
        out.append((chunk, start))
        start += len(chunk)
    return out


def _ids(table: Any, manifest: Manifest, shard: Shard) -> np.ndarray[Any, Any]:
    if manifest.id_column is None:
        return np.arange(shard.start_row, shard.start_row + table.num_rows, dtype=np.int64)
    ids: np.ndarray[Any, Any] = table.column(manifest.id_column).to_numpy()
    return ids


def _arrow_types(manifest: Manifest) -> dict[str, Any]:
    pa = pa_module()
    types = {name: pa.float32() for name in manifest.feature_columns}
    if manifest.id_column is not None:
        types[manifest.id_column] = pa.type_for_alias(manifest.id_type)
    return types


def _fast_table(data: bytes, manifest: Manifest, shard: Shard, allow_nan: bool = False) -> Any:
    """The shard as an Arrow table, or None when pyarrow finds anything wrong."""
    pa = pa_module()
    types = _arrow_types(manifest)
    try:
        if manifest.input_format == "csv":
            pacsv = require("pyarrow.csv", "parquet")
            assert manifest.header is not None
            table = pacsv.read_csv(
                pa.BufferReader(data),
                read_options=pacsv.ReadOptions(
                    column_names=next(csv.reader([manifest.header])), block_size=16 << 20
                ),
                convert_options=pacsv.ConvertOptions(
                    column_types=types, include_columns=list(types), null_values=[""]
                ),
            )
        else:
            pajson = require("pyarrow.json", "parquet")
            table = pajson.read_json(
                pa.BufferReader(data),
                read_options=pajson.ReadOptions(block_size=16 << 20),
                parse_options=pajson.ParseOptions(
                    explicit_schema=pa.schema(list(types.items())),
                    unexpected_field_behavior="ignore",
                ),
            )
    except pa.ArrowException:
        return None
    checked = [manifest.id_column] if allow_nan and manifest.id_column else []
    columns = [table.column(c) for c in checked] if allow_nan else table.columns
    if table.num_rows != shard.rows or any(c.null_count for c in columns):
        return None
    return table


def _to_id(value: Any, id_type: str) -> Any:
    if id_type == "int64":
        if isinstance(value, bool):
            raise ValueError
        return int(value)
    return str(value)


def _finish(
    ids: list[Any], rows: list[list[float]], bad: list[BadRow], manifest: Manifest, shard: Shard
) -> ShardData:
    width = len(manifest.feature_columns)
    features = np.array(rows, dtype=np.float32).reshape(len(rows), width)
    if manifest.id_column is None:
        # Without an id column a row's id is its 0-based position among data rows.
        id_array = np.asarray(ids, dtype=np.int64)
    elif manifest.id_type == "int64":
        id_array = np.asarray(ids, dtype=np.int64)
    else:
        id_array = np.asarray(ids, dtype=object)
    return ShardData(id_array, features, bad)


def _slow_csv(data: bytes, manifest: Manifest, shard: Shard, allow_nan: bool = False) -> ShardData:
    assert manifest.header is not None
    columns = next(csv.reader([manifest.header]))
    positions = [columns.index(c) for c in manifest.feature_columns]
    id_pos = columns.index(manifest.id_column) if manifest.id_column else -1
    n_features = len(positions)
    extra = len(columns) - n_features
    ids: list[Any] = []
    rows: list[list[float]] = []
    bad: list[BadRow] = []
    position = shard.start_row
    for number, raw in enumerate(data.split(b"\n"), start=shard.first_line or 1):
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if not line:
            continue
        position += 1
        fields = next(csv.reader([line]), [])
        if len(fields) != len(columns):
            if extra <= 1:
                reason = f"expected {n_features} numeric features, got {len(fields) - extra}"
            else:
                reason = f"expected {len(columns)} fields, got {len(fields)}"
            bad.append(BadRow(number, reason, "line", line))
            continue
        try:
            values = [_number(fields[p], columns[p], allow_nan) for p in positions]
            row_id = position - 1
            if id_pos >= 0:
                row_id = _checked_id(fields[id_pos], manifest)
        except _RowError as exc:
            bad.append(BadRow(number, str(exc), "line", line))
            continue
        ids.append(row_id)
        rows.append(values)
    return _finish(ids, rows, bad, manifest, shard)


def _slow_jsonl(
    data: bytes, manifest: Manifest, shard: Shard, allow_nan: bool = False
) -> ShardData:
    import orjson

    ids: list[Any] = []
    rows: list[list[float]] = []
    bad: list[BadRow] = []
    position = shard.start_row
    for number, raw in enumerate(data.split(b"\n"), start=shard.first_line or 1):
        if not raw.strip():
            continue
        position += 1
        line = raw.decode("utf-8", "replace").rstrip("\r")
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            bad.append(BadRow(number, f"invalid JSON ({exc})", "line", line))
            continue
        try:
            if not isinstance(record, dict):
                raise _RowError(f"expected a JSON object, got {type(record).__name__}")
            missing = [c for c in manifest.feature_columns if c not in record]
            if missing:
                got = len(manifest.feature_columns) - len(missing)
                raise _RowError(
                    f"expected {len(manifest.feature_columns)} numeric features, got {got} "
                    f"(missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})"
                )
            values = [_json_number(record[c], c, allow_nan) for c in manifest.feature_columns]
            row_id: Any = position - 1
            if manifest.id_column is not None:
                if manifest.id_column not in record or record[manifest.id_column] is None:
                    raise _RowError(f"column {manifest.id_column}: missing id")
                row_id = _checked_id(record[manifest.id_column], manifest)
        except _RowError as exc:
            bad.append(BadRow(number, str(exc), "line", line))
            continue
        ids.append(row_id)
        rows.append(values)
    return _finish(ids, rows, bad, manifest, shard)


class _RowError(ValueError):
    pass


def _number(text: str, column: str, allow_nan: bool = False) -> float:
    if allow_nan and not text.strip():
        return float("nan")
    if not text:
        raise _RowError(f"column {column}: missing value")
    try:
        return float(text)
    except ValueError:
        raise _RowError(f"column {column}: {text!r} is not a number") from None


def _json_number(value: Any, column: str, allow_nan: bool = False) -> float:
    if allow_nan and value is None:
        return float("nan")
    if value is None:
        raise _RowError(f"column {column}: missing value")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _RowError(f"column {column}: {value!r} is not a number")
    return float(value)


def _checked_id(value: Any, manifest: Manifest) -> Any:
    try:
        return _to_id(value, manifest.id_type)
    except ValueError:
        raise _RowError(
            f"column {manifest.id_column}: {value!r} is not an integer id like the others"
        ) from None


def _read_parquet(
    fs: Any, path: str, manifest: Manifest, shard: Shard, allow_nan: bool = False
) -> ShardData:
    pa = pa_module()
    pc = require("pyarrow.compute", "parquet")
    pq = require("pyarrow.parquet", "parquet")
    columns = list(manifest.feature_columns)
    if manifest.id_column is not None and manifest.id_column not in columns:
        columns.append(manifest.id_column)
    with fs.open(path, "rb") as f:
        table = _parquet_rows(pq.ParquetFile(f), shard, columns)
    bad: list[BadRow] = []
    features = [] if allow_nan else manifest.feature_columns  # nulls are NaN for this model
    checked = [*features, *([manifest.id_column] if manifest.id_column else [])]
    if any(table.column(c).null_count for c in checked):
        reason = np.full(table.num_rows, None, dtype=object)
        for name in reversed(checked):  # the first null column of a row wins
            nulls = pc.is_null(table.column(name)).to_numpy(zero_copy_only=False)
            reason[nulls] = f"column {name}: missing value"
        bad_at = np.flatnonzero(reason != None)  # noqa: E711 - elementwise on an object array
        bad = [BadRow(shard.start_row + int(i) + 1, str(reason[i]), "row") for i in bad_at]
        keep = np.ones(table.num_rows, dtype=bool)
        keep[bad_at] = False
        positions = np.arange(shard.start_row, shard.start_row + table.num_rows)[keep]
        table = table.filter(pa.array(keep))
    else:
        positions = np.arange(shard.start_row, shard.start_row + table.num_rows)
    ids = (
        positions.astype(np.int64)
        if manifest.id_column is None
        else table.column(manifest.id_column).to_numpy()
    )
    return ShardData(ids, matrix(table, manifest.feature_columns), bad)


def _parquet_rows(pf: Any, shard: Shard, columns: list[str]) -> Any:
    groups = shard.row_groups or []
    if len(groups) != 1 or shard.rows == pf.metadata.row_group(groups[0]).num_rows:
        return pf.read_row_groups(groups, columns=columns).slice(shard.skip_rows, shard.rows)
    # A piece of a row group larger than a shard: stream the group and stop at the
    # piece's end, instead of decoding all of it for every piece.
    pa = pa_module()
    end, seen, parts = shard.skip_rows + shard.rows, 0, []
    for batch in pf.iter_batches(batch_size=65536, row_groups=groups, columns=columns):
        lo, hi = max(shard.skip_rows - seen, 0), min(end - seen, len(batch))
        if hi > lo:
            parts.append(batch.slice(lo, hi - lo))
        seen += len(batch)
        if seen >= end:
            break
    return pa.Table.from_batches(parts)
