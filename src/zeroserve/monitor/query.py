"""Reading the prediction log: DuckDB SQL for people, Arrow batches for reports.

``query`` runs one read-only statement over two views, ``predictions`` and
``feedback``, restricted to one endpoint and a time window. Anything but a single
SELECT is refused with a 400, and DuckDB itself is locked down before the user's
SQL runs: no file access outside the log, no extensions, no configuration changes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zeroserve.errors import BadRequest, NotFound, require
from zeroserve.monitor.predlog import FEEDBACK, PREDICTIONS
from zeroserve.registry.store import ArtifactStore

DEFAULT_SQL = "SELECT * FROM predictions ORDER BY ts DESC LIMIT 100"
MAX_ROWS = 10_000
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``1h``, ``7d`` (or plain seconds) as seconds."""
    value = text.strip().lower()
    try:
        if value and value[-1] in UNITS:
            seconds = float(value[:-1]) * UNITS[value[-1]]
        else:
            seconds = float(value)
    except ValueError:
        raise BadRequest(f"duration {text!r} is not valid: use e.g. 90s, 15m, 1h or 7d") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise BadRequest(f"duration {text!r} must be positive")
    return seconds


def check_read_only(sql: str) -> None:
    duckdb = require("duckdb", "monitor")
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise BadRequest(f"the SQL does not parse: {exc}") from None
    if len(statements) != 1:
        raise BadRequest(f"send exactly one SELECT statement (got {len(statements)})")
    kind = statements[0].type
    if kind != duckdb.StatementType.SELECT:
        raise BadRequest(
            f"only SELECT queries are allowed on the prediction log (got {kind.name}); "
            "the log is read-only"
        )


@dataclass
class QueryResult:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"columns": self.columns, "rows": self.rows, "truncated": self.truncated}


def _files(store: ArtifactStore, kind: str, endpoint: str) -> list[str]:
    root = store.url(f"{kind}/endpoint={endpoint}")
    pattern = f"{store._path(f'{kind}/endpoint={endpoint}')}/**/*.parquet"
    found = sorted(store.fs.glob(pattern))
    if store.is_local:
        return found
    protocol = root.split("://", 1)[0]
    return [f"{protocol}://{f}" for f in found]


def connect(store: ArtifactStore, endpoint: str, since_ts: float | None = None) -> Any:
    """A locked-down DuckDB connection with ``predictions`` and ``feedback`` views."""
    duckdb = require("duckdb", "monitor")
    files = _files(store, PREDICTIONS, endpoint)
    if not files:
        raise NotFound(
            f"no predictions logged for endpoint {endpoint!r} yet: set a sample rate with "
            f"`zeroserve endpoints set-logging {endpoint} --rate 1.0` and send requests"
        )
    con = duckdb.connect(":memory:")
    if not store.is_local:
        con.register_filesystem(store.fs)
    where = f"WHERE ts >= {float(since_ts)!r}" if since_ts is not None else ""
    con.execute(
        f"CREATE VIEW predictions AS SELECT * FROM read_parquet({files!r}, "
        f"hive_partitioning = true, union_by_name = true) {where}"
    )
    feedback = _files(store, FEEDBACK, endpoint)
    if feedback:
        con.execute(
            f"CREATE VIEW feedback AS SELECT * FROM read_parquet({feedback!r}, "
            "hive_partitioning = true, union_by_name = true)"
        )
    else:
        con.execute(
            "CREATE TABLE feedback (request_id VARCHAR, ts DOUBLE, label VARCHAR, value DOUBLE)"
        )
    if store.is_local:
        con.execute(f"SET allowed_directories = [{str(Path(store._path('')))!r}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def query(
    store: ArtifactStore,
    endpoint: str,
    *,
    since_s: float | None = 3600.0,
    sql: str | None = None,
    max_rows: int = MAX_ROWS,
    now: float | None = None,
) -> QueryResult:
    """Run one SELECT over the endpoint's log (the last ``since_s`` seconds)."""
    text = sql or DEFAULT_SQL
    check_read_only(text)
    duckdb = require("duckdb", "monitor")
    since = None if since_s is None else (now or time.time()) - since_s
    con = connect(store, endpoint, since)
    try:
        cursor = con.execute(text)
        names = [d[0] for d in cursor.description]
        rows = cursor.fetchmany(max_rows + 1)
    except duckdb.Error as exc:
        raise BadRequest(f"query failed: {exc}") from None
    finally:
        con.close()
    return QueryResult(
        names, [[_plain(v) for v in row] for row in rows[:max_rows]], len(rows) > max_rows
    )


def _plain(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


def batches(
    store: ArtifactStore,
    endpoint: str,
    *,
    variant: str | None = None,
    since_ts: float | None = None,
    until_ts: float | None = None,
    columns: list[str] | None = None,
    batch_rows: int = 131_072,
) -> Iterator[Any]:
    """Arrow record batches of the endpoint's log, column-pruned and filtered by time
    and variant (partitions pruned by the Hive layout)."""
    ds = require("pyarrow.dataset", "monitor")
    pa = require("pyarrow", "monitor")
    if not _files(store, PREDICTIONS, endpoint):
        return
    parts = pa.schema([("variant", pa.string()), ("date", pa.string()), ("hour", pa.string())])
    dataset = ds.dataset(
        store._path(f"{PREDICTIONS}/endpoint={endpoint}"),
        format="parquet",
        partitioning=ds.partitioning(parts, flavor="hive"),
        filesystem=None if store.is_local else store.fs,
    )
    field = ds.field
    cond = None
    for part in (
        (field("variant") == variant) if variant is not None else None,
        (field("ts") >= since_ts) if since_ts is not None else None,
        (field("ts") < until_ts) if until_ts is not None else None,
    ):
        if part is not None:
            cond = part if cond is None else cond & part
    wanted = None
    if columns is not None:
        names = set(dataset.schema.names)
        wanted = [c for c in columns if c in names]
    yield from dataset.to_batches(columns=wanted, filter=cond, batch_size=batch_rows)
