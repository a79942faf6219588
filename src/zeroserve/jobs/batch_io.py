"""Reading and writing batch data: shard planning, shard reading, output encoding.

CSV and JSONL inputs are split into byte ranges aligned to line starts; one
sequential scan at plan time counts lines so that each shard knows its first
line number and row count, and error messages name exact lines. Parquet inputs
are split along row groups (a row group larger than a shard is cut into row
ranges). A shard is parsed by pyarrow straight into a float32 matrix; only a
shard that pyarrow rejects is parsed again row by row in Python, to name each
bad line and say what is wrong with it.

Rules worth knowing: a CSV row is one line (quoted values with newlines are
not supported: they show up as bad rows); blank lines are skipped and not
counted as rows; an empty value or a JSON null is a bad row (write ``nan``
where a model takes missing values); Parquet feature columns must be numeric.
"""

from __future__ import annotations

import csv
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroserve.errors import BadRequest, require
from zeroserve.jobs.batch_manifest import (
    FORMATS,
    BadBatchInput,
    BatchInputNotFound,
    Format,
    Shard,
)
from zeroserve.types import Arrays

SCAN_CHUNK_BYTES = 16 << 20
SAMPLE_ROWS = 1000
_EXTENSIONS: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_NEWLINE, _CR = 10, 13


def pa_module() -> Any:
    return require("pyarrow", "parquet")


@dataclass(slots=True)
class BadRow:
    """A row that could not be turned into features; ``number`` is 1-based."""

    number: int
    reason: str
    kind: str = "line"
    """``line`` (a physical line of a CSV/JSONL file) or ``row`` (a Parquet row)."""
    text: str | None = None

    def describe(self) -> str:
        return f"{self.kind} {self.number}: {self.reason}"


@dataclass(slots=True)
class ShardData:
    """A shard ready for the model: ids, a C-contiguous float32 matrix, bad rows."""

    ids: np.ndarray[Any, Any]
    features: np.ndarray[Any, Any] | Arrays
    """A float32 matrix, or one array per column for a table model."""
    bad_rows: list[BadRow] = field(default_factory=list)


@dataclass(slots=True)
class InputLayout:
    """What planning learns about an input: columns, id type and shards."""

    feature_columns: list[str]
    id_type: str
    total_rows: int
    shards: list[Shard]
    header: str | None = None


# -- opening ---------------------------------------------------------------------------


def detect_format(uri: str, given: str | None) -> Format:
    if given is not None:
        if given not in FORMATS:
            raise BadRequest(f"unsupported format {given!r}; use one of {', '.join(FORMATS)}")
        return given
    lower = uri.lower()
    for ext, fmt in _EXTENSIONS.items():
        if lower.endswith(ext):
            return fmt
    raise BadBatchInput(
        f"cannot tell the format of {uri} from its name; pass format='csv', 'jsonl' or "
        "'parquet' (compressed files such as .csv.gz cannot be split into shards; "
        "decompress them first)",
        input_uri=uri,
    )


def input_fs(uri: str) -> tuple[Any, str, dict[str, Any]]:
    """The filesystem, path and ``info()`` of the input, or a clear error."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri)
        info: dict[str, Any] = fs.info(path)
    except FileNotFoundError:
        raise BatchInputNotFound(
            f"batch input {uri} does not exist; check the path (for s3:// URIs also the "
            "bucket name and your credentials)",
            input_uri=uri,
        ) from None
    except PermissionError as exc:
        raise BadBatchInput(f"cannot read {uri}: permission denied ({exc})") from None
    if info.get("type") == "directory":
        raise BadBatchInput(f"batch input {uri} is a directory; point to one file in it")
    return fs, path, info


def fingerprint(info: dict[str, Any]) -> dict[str, Any]:
    """Size plus whatever change marker the filesystem offers (mtime, ETag)."""
    out: dict[str, Any] = {"size": int(info.get("size") or 0)}
    for key in ("mtime", "LastModified", "last_modified", "ETag", "etag", "md5Hash"):
        if key in info and info[key] is not None:
            value = info[key]
            out[key.lower()] = value if isinstance(value, int | float) else str(value)
    return out


# -- planning --------------------------------------------------------------------------


def plan_layout(
    fs: Any,
    *,
    path: str,
    fmt: Format,
    uri: str,
    shard_rows: int,
    id_column: str | None,
    feature_columns: list[str] | None,
    typed: bool = False,
) -> InputLayout:
    """Shards and columns of the input; ``typed`` (a table model) allows non-numeric columns."""
    if fmt == "parquet":
        return _plan_parquet(
            fs,
            path=path,
            uri=uri,
            shard_rows=shard_rows,
            id_column=id_column,
            feature_columns=feature_columns,
            typed=typed,
        )
    with fs.open(path, "rb") as f:
        header: str | None = None
        start, first_line = 0, 1
        if fmt == "csv":
            raw = f.readline()
            if not raw.strip():
                raise BadBatchInput(f"{uri} is empty or has no header line; CSV needs a header")
            start, first_line = len(raw), 2
            header = raw.decode("utf-8-sig").rstrip("\r\n")
        sample = _sample_lines(f, start)
        shards, total = _scan_lines(f, start, first_line, shard_rows)
    if fmt == "csv":
        assert header is not None
        columns = next(csv.reader([header]))
        ids: list[Any] = []
        if id_column is not None and id_column in columns:
            at = columns.index(id_column)
            ids = [r[at] for r in csv.reader(sample) if len(r) == len(columns)]
    else:
        columns, ids = _jsonl_columns(sample, uri, id_column)
    features = _choose_features(columns, uri, id_column, feature_columns)
    id_type = "int64"
    if id_column is not None and not all(_is_int(v) for v in ids):
        id_type = "string"
    return InputLayout(features, id_type, total, shards, header)


def _jsonl_columns(
    lines: list[str], uri: str, id_column: str | None
) -> tuple[list[str], list[Any]]:
    import orjson

    columns: list[str] | None = None
    ids: list[Any] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            if columns is None:
                raise BadBatchInput(f"{uri}, line {number}: invalid JSON ({exc})") from None
            continue
        if not isinstance(record, dict):
            if columns is None:
                raise BadBatchInput(
                    f"{uri}, line {number}: expected a JSON object per line, got "
                    f"{type(record).__name__}"
                )
            continue
        if columns is None:
            columns = list(record)
        if id_column is not None and id_column in record:
            ids.append(record[id_column])
    if columns is None:
        raise BadBatchInput(f"{uri} has no rows")
    return columns, ids


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    if isinstance(value, str):
        try:
            int(value)
        except ValueError:
            return False
        return True
    return False


def _choose_features(
    columns: list[str], uri: str, id_column: str | None, feature_columns: list[str] | None
) -> list[str]:
    listing = ", ".join(columns[:20]) + (" ..." if len(columns) > 20 else "")
    if id_column is not None and id_column not in columns:
        raise BadBatchInput(
            f"id column {id_column!r} not found in {uri}; its columns are: {listing}",
            id_column=id_column,
        )
    if feature_columns is None:
        return [c for c in columns if c != id_column]
    missing = [c for c in feature_columns if c not in columns]
    if missing:
        raise BadBatchInput(
            f"feature columns {missing} not found in {uri}; its columns are: {listing}"
        )
    return list(feature_columns)


def _sample_lines(f: Any, start: int) -> list[str]:
    f.seek(start)
    data = f.read(1 << 20)
    lines = data.split(b"\n")
    if len(data) == 1 << 20:
        lines = lines[:-1]  # the last line may be cut
    return [line.decode("utf-8", "replace").rstrip("\r") for line in lines[:SAMPLE_ROWS]]


def _scan_lines(f: Any, start: int, first_line: int, shard_rows: int) -> tuple[list[Shard], int]:
    """Cut the bytes from ``start`` into shards of ``shard_rows`` non-blank lines."""
    shards: list[Shard] = []
    f.seek(start)
    chunk_offset, chunk_line = start, first_line
    shard_start, shard_line, rows_before, in_shard = start, first_line, 0, 0
    carry_len, carry_last = 0, _NEWLINE  # the unterminated line running into this chunk
    while chunk := f.read(SCAN_CHUNK_BYTES):
        buf = np.frombuffer(chunk, dtype=np.uint8)
        nl = np.flatnonzero(buf == _NEWLINE)
        if len(nl):
            lengths = np.diff(nl, prepend=-1) - 1
            lengths[0] += carry_len
            last = buf[np.maximum(nl - 1, 0)]
            if nl[0] == 0:
                last[0] = carry_last
            blank = (lengths == 0) | ((lengths == 1) & (last == _CR))
            ranks = np.cumsum(~blank)
            taken = 0
            while ranks[-1] - taken >= shard_rows - in_shard:
                # ranks grow by at most one per line, so the first line reaching the
                # target rank is the non-blank line that completes the shard.
                i = int(np.searchsorted(ranks, taken + shard_rows - in_shard))
                end = chunk_offset + int(nl[i]) + 1
                shards.append(
                    Shard(len(shards), rows_before, shard_rows, shard_start, end, shard_line)
                )
                rows_before += shard_rows
                shard_start, shard_line = end, chunk_line + i + 1
                taken, in_shard = int(ranks[i]), 0
            in_shard += int(ranks[-1]) - taken
            carry_len = len(chunk) - int(nl[-1]) - 1
        else:
            carry_len += len(chunk)
        carry_last = int(buf[-1])
        chunk_offset += len(chunk)
        chunk_line += len(nl)
    if carry_len > 1 or (carry_len == 1 and carry_last != _CR):
        in_shard += 1  # a last line without a newline
    if in_shard:
        shards.append(
            Shard(len(shards), rows_before, in_shard, shard_start, chunk_offset, shard_line)
        )
    return shards, rows_before + in_shard


def _plan_parquet(
    fs: Any,
    *,
    path: str,
    uri: str,
    shard_rows: int,
    id_column: str | None,
    feature_columns: list[str] | None,
    typed: bool = False,
) -> InputLayout:
    pa = pa_module()
    pq = require("pyarrow.parquet", "parquet")
    try:
        with fs.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
            schema = pq.ParquetFile(f).schema_arrow
    except pa.ArrowException as exc:
        raise BadBatchInput(f"cannot read {uri} as Parquet: {exc}") from None
    features = _choose_features(list(schema.names), uri, id_column, feature_columns)
    for name in [] if typed else features:
        kind = schema.field(name).type
        if not (
            pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
        ):
            raise BadBatchInput(
                f"column {name!r} of {uri} has type {kind}; features must be numeric "
                "(pass feature_columns=[...] to choose them)"
            )
    id_type = str(schema.field(id_column).type) if id_column else "int64"
    shards: list[Shard] = []
    groups: list[int] = []
    start = group_start = 0  # first row of the pending shard, of the current group
    pending = 0

    def close(rows: int, skip: int) -> None:
        nonlocal start
        shards.append(Shard(len(shards), start, rows, row_groups=list(groups), skip_rows=skip))
        start += rows

    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if n > shard_rows:
            if pending:
                close(pending, 0)
            pieces = -(-n // shard_rows)
            bounds = np.linspace(0, n, pieces + 1).astype(int)
            for a, b in itertools.pairwise(bounds):
                groups[:] = [g]
                close(int(b - a), int(a))
            groups.clear()
            pending = 0
        else:
            if pending + n > shard_rows:
                close(pending, 0)
                groups.clear()
                pending = 0
            groups.append(g)
            pending += n
        group_start += n
    if pending:
        close(pending, 0)
    shards = [s for s in shards if s.rows]
    for i, s in enumerate(shards):
        s.index = i
    return InputLayout(features, id_type, group_start, shards)
