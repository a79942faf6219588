"""Reading one shard for a table model: columns by name, cast to the signature's types.

Every column is matched by its name, in whatever order the file has them; a value
that cannot be cast fails the shard with the line (or row), the column and the
type it expected.
"""

from __future__ import annotations

import csv
from typing import Any

import numpy as np

from zeroserve.errors import InvalidInput, require
from zeroserve.jobs.batch_io import ShardData, input_fs, pa_module
from zeroserve.jobs.batch_manifest import BadBatchInput, Manifest, Shard
from zeroserve.protocols.table import columns_to_table
from zeroserve.types import ColumnSpec, ColumnType, Signature


def read_table_shard(manifest: Manifest, shard: Shard, columns: list[ColumnSpec]) -> ShardData:
    """Ids and one checked array per column of ``shard``."""
    fs, path, _ = input_fs(manifest.input_uri)
    pa = pa_module()
    names = [c.name for c in columns]
    wanted = names + ([manifest.id_column] if manifest.id_column not in (None, *names) else [])
    try:
        if manifest.input_format == "parquet":
            from zeroserve.jobs.batch_read import _parquet_rows

            pq = require("pyarrow.parquet", "parquet")
            with fs.open(path, "rb") as f:
                table = _parquet_rows(pq.ParquetFile(f), shard, [str(w) for w in wanted])
            values = {n: _numpy(table.column(n)) for n in names}
        else:
            with fs.open(path, "rb") as f:
                f.seek(shard.byte_start)
                data = f.read((shard.byte_end or 0) - (shard.byte_start or 0))
            if manifest.input_format == "csv":
                table = _csv(pa, data, manifest, columns, wanted)
                values = {n: _numpy(table.column(n)) for n in names}
            else:
                table, values = _jsonl(pa, data, manifest, names, shard)
    except (OSError, pa.ArrowException) as exc:
        raise BadBatchInput(
            f"cannot read shard {shard.id} of {manifest.input_uri}: {exc}; every column must "
            f"hold values of its type ({', '.join(f'{c.name}: {c.type.value}' for c in columns)})"
        ) from None
    signature = Signature(columns=columns, outputs=[])
    try:
        arrays = columns_to_table(values, signature, manifest.input_uri)
    except InvalidInput as exc:
        first = shard.start_row
        raise BadBatchInput(
            f"{exc.message} (row numbers count from {first}, this shard's first)"
        ) from None
    if manifest.id_column is None:
        ids = np.arange(shard.start_row, shard.start_row + shard.rows, dtype=np.int64)
    else:
        ids = np.asarray(table.column(manifest.id_column).to_numpy(zero_copy_only=False))
    return ShardData(ids, arrays)


ARROW_TYPES = {
    ColumnType.FLOAT: "float64",
    ColumnType.INT: "int64",
    ColumnType.BOOL: "bool",
    ColumnType.STRING: "string",
    ColumnType.DATETIME: "timestamp[ns]",
}


def _csv(
    pa: Any, data: bytes, manifest: Manifest, columns: list[ColumnSpec], wanted: list[Any]
) -> Any:
    pacsv = require("pyarrow.csv", "parquet")
    assert manifest.header is not None
    types = {c.name: pa.type_for_alias(ARROW_TYPES[c.type]) for c in columns}
    if manifest.id_column is not None and manifest.id_column not in types:
        types[manifest.id_column] = pa.type_for_alias(manifest.id_type)
    return pacsv.read_csv(
        pa.BufferReader(data),
        read_options=pacsv.ReadOptions(
            column_names=next(csv.reader([manifest.header])), block_size=16 << 20
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            include_columns=[str(w) for w in wanted],
            null_values=[""],
            strings_can_be_null=True,
        ),
    )


def _jsonl(
    pa: Any, data: bytes, manifest: Manifest, names: list[str], shard: Shard
) -> tuple[Any, dict[str, Any]]:
    import orjson

    records = []
    for number, line in enumerate(data.splitlines(), start=shard.first_line or 1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise BadBatchInput(
                f"{manifest.input_uri}, line {number}: invalid JSON ({exc})"
            ) from None
        if not isinstance(record, dict):
            raise BadBatchInput(f"{manifest.input_uri}, line {number}: expected a JSON object")
        missing = [n for n in names if n not in record]
        if missing:
            raise BadBatchInput(f"{manifest.input_uri}, line {number}: no column {missing[0]!r}")
        records.append(record)
    values = {n: [r[n] for r in records] for n in names}
    ids = [r.get(manifest.id_column) for r in records] if manifest.id_column else []
    table = pa.table({manifest.id_column: ids}) if manifest.id_column else None
    return table, values


def _numpy(column: Any) -> Any:
    """An Arrow column as values ``to_column`` can check: arrays, or lists with None."""
    if column.null_count:
        return column.to_pylist()
    arr = column.to_numpy(zero_copy_only=False)
    return arr if arr.dtype.kind != "M" else arr.astype("datetime64[ns]")
