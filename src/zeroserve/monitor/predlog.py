"""The prediction log: sampled rows written as Parquet, off the request path.

``record`` is the only call on the hot path: a random draw against the endpoint's
sample rate, a size check and a list append (no copies, no I/O, no logging). A
flush thread turns the buffer into Parquet files in the artifact store every
``flush_interval_s`` or ``flush_rows``, partitioned the Hive way:

    predictions/endpoint=E/variant=V/date=YYYY-MM-DD/hour=HH/part-<time>-<pid>-<n>.parquet

The buffer is bounded in bytes; a request that would overflow it is not logged
and counted in ``dropped``. Every gateway process writes its own files.
Columns: ``request_id, row, ts, endpoint, variant, version, status, latency_ms,
sample_weight`` (1 / rate), one ``in_<feature>`` column per input feature, one
``out_<name>`` per output (lists for 2-D outputs), and ``score``/``label``.
"""

from __future__ import annotations

import io
import logging
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from zeroserve.errors import BadRequest, require
from zeroserve.monitor.profile import columns, concat
from zeroserve.outputs import label_and_score
from zeroserve.registry.store import ArtifactStore
from zeroserve.types import Arrays, Signature

log = logging.getLogger(__name__)

PREDICTIONS = "predictions"
FEEDBACK = "feedback"
MAX_BUFFER_BYTES = 64 * 1024 * 1024
RECENT_IDS = 200_000


@dataclass(slots=True)
class Logged:
    """One sampled request, held by reference until the next flush."""

    request_id: str
    ts: float
    endpoint: str
    variant: str
    version: int
    status: int
    latency_ms: float
    weight: float
    inputs: Arrays
    outputs: Arrays
    signature: Signature | None


@dataclass
class LogStats:
    logged: int = 0
    dropped: int = 0
    skipped: int = 0  # not sampled
    files: int = 0
    rows_written: int = 0
    errors: int = 0
    last_error: str = ""


def partition(kind: str, endpoint: str, ts: float, variant: str | None = None) -> str:
    when = datetime.fromtimestamp(ts, UTC)
    parts = [kind, f"endpoint={endpoint}"]
    if variant is not None:
        parts.append(f"variant={variant}")
    parts += [f"date={when:%Y-%m-%d}", f"hour={when:%H}"]
    return "/".join(parts)


@dataclass
class PredictionLog:
    """Sampled, bounded, batched Parquet logging of predictions (and feedback)."""

    store: ArtifactStore
    default_rate: float = 0.0
    max_buffer_bytes: int = MAX_BUFFER_BYTES
    flush_interval_s: float = 5.0
    flush_rows: int = 100_000
    clock: Callable[[], float] = time.time
    draw: Callable[[], float] = random.random
    rates: dict[str, float] = field(default_factory=dict)
    stats: LogStats = field(default_factory=LogStats)

    def __post_init__(self) -> None:
        self._buffer: list[Logged] = []
        self._feedback: list[dict[str, Any]] = []
        self._bytes = 0
        self._rows = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seq = 0
        self.recent: OrderedDict[str, tuple[str, str, float]] = OrderedDict()

    # configuration
    def set_rate(self, endpoint: str, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise BadRequest(f"sample rate {rate} is not in [0, 1]; use e.g. 0.1 for 10%")
        self.rates[endpoint] = rate

    def rate(self, endpoint: str) -> float:
        return self.rates.get(endpoint, self.default_rate)

    # the hot path
    def record(
        self,
        endpoint: str,
        variant: str,
        request_id: str,
        inputs: Arrays,
        outputs: Arrays,
        latency_ms: float,
        *,
        status: int = 200,
        version: int = 0,
        signature: Signature | None = None,
        rate: float | None = None,
    ) -> bool:
        """Keep this request for the next flush, if sampled and there is room. Never blocks
        on I/O; returns whether it was kept. ``rate`` overrides the endpoint's rate (the
        data plane passes ``spec.monitoring.log_sample_rate``)."""
        if rate is None:
            rate = self.rates.get(endpoint, self.default_rate)
        if rate <= 0.0 or (rate < 1.0 and self.draw() >= rate):
            self.stats.skipped += 1
            return False
        size = sum(a.nbytes for a in inputs.values()) + sum(a.nbytes for a in outputs.values())
        if self._bytes + size > self.max_buffer_bytes:
            self.stats.dropped += 1
            return False
        now = self.clock()
        item = Logged(
            request_id, now, endpoint, variant, version, status, latency_ms, 1.0 / rate,
            inputs, outputs, signature,
        )  # fmt: skip
        self._buffer.append(item)  # list.append is atomic under the GIL
        self._bytes += size
        self._rows += 1
        self.stats.logged += 1
        recent = self.recent
        recent[request_id] = (endpoint, variant, now)
        if len(recent) > RECENT_IDS:
            recent.popitem(last=False)
        if self._rows >= self.flush_rows:
            self._wake.set()
        return True

    def record_feedback(
        self, endpoint: str, request_id: str, label: Any, value: float | None, row: int = 0
    ) -> None:
        with self._lock:
            self._feedback.append(
                {
                    "request_id": request_id,
                    "row": row,
                    "ts": self.clock(),
                    "label": None if label is None else str(label),
                    "value": value,
                    "endpoint": endpoint,
                }
            )
        self._wake.set()

    # the flush thread
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="zs-predlog", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.flush()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception as exc:  # the log must never take the server down
                self.stats.errors += 1
                self.stats.last_error = str(exc)
                log.warning("prediction log flush failed: %s", exc)

    def flush(self) -> int:
        """Write what is buffered; returns the number of rows written."""
        with self._lock:
            buffer, self._buffer = self._buffer, []
            feedback, self._feedback = self._feedback, []
            self._bytes = 0
            self._rows = 0
        written = 0
        hours: dict[tuple[str, str, int], list[Logged]] = {}
        for item in buffer:
            # Group by hour first: formatting a partition per row costs microseconds.
            hours.setdefault((item.endpoint, item.variant, int(item.ts // 3600)), []).append(item)
        for (endpoint, variant, hour), items in hours.items():
            key = partition(PREDICTIONS, endpoint, hour * 3600.0, variant)
            written += self._write(key, prediction_table(items))
        fgroups: dict[str, list[dict[str, Any]]] = {}
        for row in feedback:
            fgroups.setdefault(partition(FEEDBACK, row["endpoint"], row["ts"]), []).append(row)
        for key, rows in fgroups.items():
            pa = require("pyarrow", "monitor")
            written += self._write(key, pa.Table.from_pylist(rows))
        return written

    def _write(self, key: str, table: Any) -> int:
        pq = require("pyarrow.parquet", "monitor")
        self._seq += 1
        name = f"{key}/part-{int(self.clock() * 1000)}-{os.getpid()}-{self._seq}.parquet"
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.store.put_bytes(name, sink.getvalue())
        self.stats.files += 1
        self.stats.rows_written += table.num_rows
        return int(table.num_rows)


def _column(values: list[np.ndarray[Any, Any]]) -> Any:
    pa = require("pyarrow", "monitor")
    arr = np.concatenate(values)
    if arr.ndim == 1:
        return pa.array(arr.astype(str) if arr.dtype.kind == "O" else arr)
    flat = arr.reshape(arr.shape[0], -1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel()), flat.shape[1])


def prediction_table(items: list[Logged]) -> Any:
    """One Arrow table for logged requests of one partition (one row per input row)."""
    pa = require("pyarrow", "monitor")
    rows_per = np.fromiter((_rows(item) for item in items), dtype=np.int64, count=len(items))
    total = int(rows_per.sum())
    single = bool(np.all(rows_per == 1))

    def per_row(values: list[Any], dtype: Any) -> Any:
        arr = np.asarray(values, dtype=dtype)
        return pa.array(arr if single else np.repeat(arr, rows_per))

    ids = [i.request_id for i in items]
    if not single:
        ids = [v for v, n in zip(ids, rows_per.tolist(), strict=True) for _ in range(n)]
    rows = (
        np.zeros(total, dtype=np.int32)
        if single
        else np.concatenate([np.arange(n, dtype=np.int32) for n in rows_per.tolist()])
    )
    meta: dict[str, Any] = {
        "request_id": pa.array(ids, pa.string()),
        "row": pa.array(rows),
        "ts": per_row([i.ts for i in items], np.float64),
        "endpoint": pa.array([items[0].endpoint] * total, pa.string()),
        "variant": pa.array([items[0].variant] * total, pa.string()),
        "version": per_row([i.version for i in items], np.int32),
        "status": per_row([i.status for i in items], np.int16),
        "latency_ms": per_row([i.latency_ms for i in items], np.float64),
        "sample_weight": per_row([i.weight for i in items], np.float64),
    }
    # One concatenation per tensor for the whole partition, then columns from that:
    # per-request work here would cost more than the requests themselves.
    first = items[0]
    specs = first.signature.inputs if first.signature is not None else []
    inputs = concat([i.inputs for i in items])
    outputs = concat([i.outputs for i in items])
    feats = columns(specs, inputs) if specs else {k: v for k, v in inputs.items() if v.ndim == 1}
    found: dict[str, np.ndarray[Any, Any]] = {f"in_{k}": v for k, v in feats.items()}
    found.update({f"out_{k}": v for k, v in outputs.items()})
    label, score = label_and_score(outputs) if outputs else (None, None)
    if score is not None:
        found["score"] = score
    if label is not None:
        found["label"] = np.asarray(label).astype(str)
    for name, values in found.items():
        if len(values) == total:
            meta[name] = _column([values])
    return pa.table(meta)


def _rows(item: Logged) -> int:
    for arr in item.inputs.values():
        return int(arr.shape[0]) if arr.ndim else 1
    return 1
