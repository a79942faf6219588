"""Encoding shard outputs and reading them back.

An output row is the input id followed by every model output. A 1-D output
keeps its name; an output with more columns per row (class probabilities, an
embedding) is flattened into ``<name>_0 .. <name>_<k-1>``, so every format,
CSV included, holds plain scalar columns. Without an input id column the id
column is ``row``: the 0-based position of the row among the input's data rows.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any

import numpy as np

from zeroserve.errors import ModelError, require
from zeroserve.jobs.batch_io import pa_module
from zeroserve.jobs.batch_manifest import Format
from zeroserve.types import Arrays

EXTENSIONS: dict[Format, str] = {"csv": "csv", "jsonl": "jsonl", "parquet": "parquet"}


def output_name(index: int, fmt: Format) -> str:
    return f"part-{index:05d}.{EXTENSIONS[fmt]}"


def errors_name(index: int) -> str:
    return f"errors-{index:05d}.jsonl"


def checksum(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_rows(outputs: Arrays, n: int) -> None:
    """Every output must have one row per input row."""
    for name, value in outputs.items():
        shape = np.shape(value)
        if not shape or shape[0] != n:
            raise ModelError(
                f"output {name!r} has shape {shape}, expected {n} rows (one per input row)"
            )


def output_table(id_name: str, ids: np.ndarray[Any, Any], outputs: Arrays) -> Any:
    """The id column joined to the model outputs, one row per id."""
    pa = pa_module()
    n = len(ids)
    names: list[str] = [id_name]
    arrays: list[Any] = [pa.array(ids)]
    check_rows(outputs, n)
    for name, raw in outputs.items():
        value = np.asarray(raw)
        if value.ndim == 1:
            names.append(name)
            arrays.append(pa.array(value))
            continue
        flat = value.reshape(n, -1)
        for k in range(flat.shape[1]):
            names.append(f"{name}_{k}")
            arrays.append(pa.array(np.ascontiguousarray(flat[:, k])))
    return pa.Table.from_arrays(arrays, names=names)


def encode(table: Any, fmt: Format) -> bytes:
    """The bytes of ``table`` as one output file."""
    pa = pa_module()
    if fmt == "parquet":
        pq = require("pyarrow.parquet", "parquet")
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return bytes(sink.getvalue())
    if fmt == "csv":
        pacsv = require("pyarrow.csv", "parquet")
        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        return bytes(sink.getvalue())
    import orjson

    names = table.column_names
    columns = [table.column(c).to_pylist() for c in names]
    lines = [orjson.dumps(dict(zip(names, row, strict=True))) for row in zip(*columns, strict=True)]
    return b"".join(line + b"\n" for line in lines)


def decode(data: bytes, fmt: Format, id_name: str | None = None, id_type: str = "int64") -> Any:
    """An output file's bytes back as an Arrow table (the id column typed as planned)."""
    pa = pa_module()
    if fmt == "parquet":
        return require("pyarrow.parquet", "parquet").read_table(pa.BufferReader(data))
    types = {id_name: pa.type_for_alias(id_type)} if id_name else {}
    if fmt == "csv":
        pacsv = require("pyarrow.csv", "parquet")
        options = pacsv.ConvertOptions(column_types=types)
        return pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    if not data:
        return pa.table({})
    pajson = require("pyarrow.json", "parquet")
    options = pajson.ParseOptions(explicit_schema=pa.schema(list(types.items())))
    return pajson.read_json(io.BytesIO(data), parse_options=options)
