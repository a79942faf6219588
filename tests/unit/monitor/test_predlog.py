import threading
import time
from pathlib import Path

import numpy as np
import pytest

from zeroserve.errors import BadRequest, NotFound
from zeroserve.monitor.predlog import PredictionLog
from zeroserve.monitor.query import batches, parse_duration, query
from zeroserve.registry.store import ArtifactStore
from zeroserve.types import Signature, TensorSpec

pytest.importorskip("duckdb")
SIG = Signature(
    inputs=[TensorSpec(name="input", dtype="float64", shape=[-1, 3], names=["a", "b", "c"])],
    outputs=[TensorSpec(name="probabilities", dtype="float64", shape=[-1, 2])],
)
T0 = 1_800_000_000.0  # 2027-01-15 08:00 UTC


def make_log(tmp_path: Path, **kw: object) -> PredictionLog:
    clock = iter(np.arange(T0, T0 + 10_000, 1.0))
    return PredictionLog(
        ArtifactStore(str(tmp_path)), default_rate=1.0, clock=lambda: float(next(clock)), **kw
    )  # type: ignore[arg-type]


def record(log: PredictionLog, request_id: str, rows: int = 2, variant: str = "v1") -> bool:
    x = np.arange(rows * 3, dtype=np.float64).reshape(rows, 3)
    p = np.tile([0.25, 0.75], (rows, 1))
    return log.record(
        "fraud",
        variant,
        request_id,
        {"input": x},
        {"probabilities": p},
        1.5,
        version=3,
        signature=SIG,
    )


def test_rows_land_in_hive_partitions_and_query_back(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    assert record(log, "r1") and record(log, "r2", rows=1, variant="v2")
    assert log.flush() == 3
    files = sorted(p.relative_to(tmp_path).parent.as_posix() for p in tmp_path.rglob("*.parquet"))
    assert files == [
        "predictions/endpoint=fraud/variant=v1/date=2027-01-15/hour=08",
        "predictions/endpoint=fraud/variant=v2/date=2027-01-15/hour=08",
    ]
    result = query(
        log.store, "fraud", since_s=None,
        sql="SELECT request_id, row, variant, in_a, in_c, score, label, version "
        "FROM predictions ORDER BY request_id, row",
    )  # fmt: skip
    assert result.rows == [
        ["r1", 0, "v1", 0.0, 2.0, 0.75, "1", 3],
        ["r1", 1, "v1", 3.0, 5.0, 0.75, "1", 3],
        ["r2", 0, "v2", 0.0, 2.0, 0.75, "1", 3],
    ]


def test_since_filters_by_time(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    record(log, "old")
    log.flush()
    result = query(
        log.store, "fraud", since_s=60, sql="SELECT count(*) FROM predictions", now=T0 + 3600
    )
    assert result.rows == [[0]]
    result = query(
        log.store, "fraud", since_s=7200, sql="SELECT count(*) FROM predictions", now=T0 + 3600
    )
    assert result.rows == [[2]]


def test_sampling_and_bounded_buffer_count_what_they_skip(tmp_path: Path) -> None:
    draws = iter([0.05, 0.5, 0.09, 0.95])
    log = PredictionLog(ArtifactStore(str(tmp_path)), default_rate=0.1, draw=lambda: next(draws))
    kept = [record(log, f"r{i}") for i in range(4)]
    assert kept == [True, False, True, False]
    assert (log.stats.logged, log.stats.skipped) == (2, 2)

    small = make_log(tmp_path, max_buffer_bytes=200)
    assert record(small, "a", rows=2)  # 48 + 32 bytes
    assert record(small, "b", rows=2)
    assert not record(small, "c", rows=2)
    assert small.stats.dropped == 1
    small.flush()
    assert record(small, "d", rows=2)  # a flush frees the buffer


def test_record_never_waits_for_a_slow_store(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    gate = threading.Event()
    original = log.store.put_bytes

    def slow_put(key: str, data: bytes) -> str:
        gate.wait(10)
        return original(key, data)

    log.store.put_bytes = slow_put  # type: ignore[method-assign]
    record(log, "first")
    flusher = threading.Thread(target=log.flush)
    flusher.start()
    started = time.perf_counter()
    for i in range(1000):
        record(log, f"r{i}")
    assert time.perf_counter() - started < 2.0  # appends while the flush is stuck on I/O
    gate.set()
    flusher.join()
    assert log.flush() == 2000


def test_writes_are_refused_and_bad_sql_is_a_400(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    record(log, "r1")
    log.flush()
    for sql in (
        "DELETE FROM predictions",
        "COPY (SELECT 1) TO 'x.csv'",
        "SELECT 1; SELECT 2",
        "ATTACH 'x.db'",
        "INSTALL httpfs",
    ):
        with pytest.raises(BadRequest):
            query(log.store, "fraud", since_s=None, sql=sql)
    with pytest.raises(BadRequest, match="query failed"):
        query(log.store, "fraud", since_s=None, sql="SELECT * FROM read_csv('/etc/passwd')")
    with pytest.raises(BadRequest, match="parse"):
        query(log.store, "fraud", since_s=None, sql="SELEC oops")
    with pytest.raises(NotFound, match="no predictions logged"):
        query(log.store, "other", since_s=None)


def test_feedback_joins_to_predictions(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    record(log, "r1", rows=1)
    record(log, "r2", rows=1)
    log.record_feedback("fraud", "r1", 1, None)
    log.flush()
    result = query(
        log.store, "fraud", since_s=None,
        sql="SELECT p.request_id, f.label FROM predictions p "
        "LEFT JOIN feedback f USING (request_id) ORDER BY 1",
    )  # fmt: skip
    assert result.rows == [["r1", "1"], ["r2", None]]


def test_batches_prune_by_variant_and_columns(tmp_path: Path) -> None:
    log = make_log(tmp_path)
    record(log, "r1", variant="v1")
    record(log, "r2", variant="v2", rows=3)
    log.flush()
    got = list(batches(log.store, "fraud", variant="v2", columns=["in_a", "nope"]))
    assert sum(b.num_rows for b in got) == 3
    assert got[0].schema.names == ["in_a"]


def test_background_thread_flushes_on_its_own(tmp_path: Path) -> None:
    log = PredictionLog(ArtifactStore(str(tmp_path)), default_rate=1.0, flush_interval_s=0.05)
    log.start()
    try:
        record(log, "r1")
        deadline = time.monotonic() + 10
        while log.stats.rows_written < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert log.stats.rows_written == 2
    finally:
        log.stop()


def test_durations() -> None:
    assert parse_duration("1h") == 3600
    assert parse_duration("15m") == 900
    with pytest.raises(BadRequest, match="90s"):
        parse_duration("soon")
    with pytest.raises(BadRequest):
        parse_duration("-1h")
