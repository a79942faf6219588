"""The embedded job queue: one SQLite file in WAL mode.

Every write runs in ``BEGIN IMMEDIATE``, which takes SQLite's single write lock
up front, so the select-then-update of ``lease`` is serialised across every
process sharing the file and no job is leased twice while its lease is live.
Readers never block (WAL). Each thread of each process gets its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from zeroserve.errors import BadRequest
from zeroserve.integrity import check_sqlite
from zeroserve.jobs.queue import Job, JobQueue, JobStatus, Json, Lease, check_limits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    available_at REAL NOT NULL,
    lease_expires_at REAL,
    lease_token TEXT,
    idempotency_key TEXT,
    result TEXT,
    error TEXT
);
-- NULL keys never collide, so jobs without a key are unconstrained.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (queue, idempotency_key);
-- Serves lease (queued by available_at), the expiry sweep (running) and counts.
CREATE INDEX IF NOT EXISTS jobs_ready ON jobs (queue, status, available_at);
CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);
"""

# Expired leases go back to the queue, or to the dead letters once attempts are used up.
_SWEEP = """
UPDATE jobs SET
    status = CASE WHEN attempts >= max_attempts THEN 'dead' ELSE 'queued' END,
    error = 'lease expired on attempt ' || attempts
        || ': the worker died or ran past its visibility timeout',
    available_at = ?, lease_token = NULL, lease_expires_at = NULL, updated_at = ?
WHERE queue = ? AND status = 'running' AND lease_expires_at <= ?
"""

_LEASE = """
UPDATE jobs SET status = 'running', attempts = attempts + 1, lease_token = ?,
    lease_expires_at = ?, updated_at = ?
WHERE seq IN (
    SELECT seq FROM jobs WHERE queue = ? AND status = 'queued' AND available_at <= ?
    ORDER BY available_at, seq LIMIT ?
)
RETURNING *
"""

_HELD = "id = ? AND lease_token = ? AND status = 'running'"


def sqlite_path(url: str) -> str:
    """The file of ``sqlite:///relative/jobs.db`` or ``sqlite:////absolute/jobs.db``."""
    path = url.split("///", 1)[1] if "///" in url else ""
    if not path or path == ":memory:":
        raise BadRequest(
            f"the SQLite job queue needs a file, got {url!r}; use sqlite:///path/jobs.db"
        )
    return path


class SqliteQueue(JobQueue):
    """``JobQueue`` on one SQLite file, safe for several processes on one machine."""

    def __init__(self, url: str, *, synchronous: str = "NORMAL", **options: Any) -> None:
        super().__init__(**options)
        self.path = sqlite_path(url)
        # NORMAL in WAL mode survives a crash of any process; only an OS crash or
        # power loss can drop the last commits. Pass "FULL" to fsync every commit.
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise BadRequest(f"unknown SQLite synchronous mode {synchronous!r}")
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        check_sqlite(Path(self.path))  # before a connection replays (or drops) the WAL
        self._conn().executescript(_SCHEMA)

    # -- connections -------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        # A connection must not cross fork(): a child opens its own (and leaves
        # the inherited one alone rather than closing the parent's file locks).
        if conn is None or self._local.pid != os.getpid():
            conn = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._guard:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    # -- producing ---------------------------------------------------------

    def put(
        self,
        queue: str,
        payload: Json,
        *,
        idempotency_key: str | None = None,
        max_attempts: int | None = None,
        delay_s: float = 0.0,
    ) -> Job:
        with self._tx() as c:
            return self._insert(
                c, queue, payload, key=idempotency_key, max_attempts=max_attempts, delay_s=delay_s
            )

    def put_many(
        self, queue: str, payloads: Iterable[Json], *, max_attempts: int | None = None
    ) -> list[Job]:
        with self._tx() as c:
            return [self._insert(c, queue, p, max_attempts=max_attempts) for p in payloads]

    def _insert(
        self,
        c: sqlite3.Connection,
        queue: str,
        payload: Json,
        *,
        key: str | None = None,
        max_attempts: int | None = None,
        delay_s: float = 0.0,
    ) -> Job:
        now = self.clock()
        row = c.execute(
            "INSERT INTO jobs (id, queue, payload, status, max_attempts, created_at,"
            " updated_at, available_at, idempotency_key) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?, ?)"
            " ON CONFLICT (queue, idempotency_key) DO NOTHING RETURNING *",
            (
                uuid.uuid4().hex,
                queue,
                json.dumps(payload),
                max_attempts or self.max_attempts,
                now,
                now,
                now + delay_s,
                key,
            ),
        ).fetchone()
        if row is None:  # the key was seen before: hand back the first job
            row = c.execute(
                "SELECT * FROM jobs WHERE queue = ? AND idempotency_key = ?", (queue, key)
            ).fetchone()
        return _job(row)

    # -- consuming ---------------------------------------------------------

    def lease(self, queue: str, n: int = 1, visibility_s: float = 30.0) -> list[Lease]:
        check_limits(n, visibility_s)
        token = uuid.uuid4().hex
        with self._tx() as c:
            now = self.clock()
            c.execute(_SWEEP, (now, now, queue, now))
            rows = c.execute(_LEASE, (token, now + visibility_s, now, queue, now, n)).fetchall()
        rows.sort(key=lambda r: (r["available_at"], r["seq"]))
        return [Lease(_job(r), token, now + visibility_s) for r in rows]

    def ack_many(self, acks: Iterable[tuple[Lease, Json]]) -> list[bool]:
        done: list[bool] = []
        with self._tx() as c:
            now = self.clock()
            for lease, result in acks:
                cur = c.execute(
                    "UPDATE jobs SET status = 'succeeded', result = ?, lease_token = NULL,"
                    f" lease_expires_at = NULL, updated_at = ? WHERE {_HELD}",
                    (json.dumps(result), now, lease.job_id, lease.token),
                )
                done.append(cur.rowcount == 1)
        return done

    def fail(self, lease: Lease, error: str, *, retryable: bool = True) -> bool:
        with self._tx() as c:
            row = c.execute(
                f"SELECT attempts, max_attempts FROM jobs WHERE {_HELD}",
                (lease.job_id, lease.token),
            ).fetchone()
            if row is None:
                return False
            now = self.clock()
            status, available_at = JobStatus.FAILED, now
            if retryable and row["attempts"] >= row["max_attempts"]:
                status = JobStatus.DEAD
            elif retryable:
                status, available_at = JobStatus.QUEUED, now + self.backoff_s(row["attempts"])
            c.execute(
                "UPDATE jobs SET status = ?, error = ?, available_at = ?, lease_token = NULL,"
                " lease_expires_at = NULL, updated_at = ? WHERE id = ?",
                (status.value, error, available_at, now, lease.job_id),
            )
        return True

    def nack(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        with self._tx() as c:
            now = self.clock()
            cur = c.execute(
                "UPDATE jobs SET status = 'queued', attempts = max(attempts - 1, 0),"
                " available_at = ?, lease_token = NULL, lease_expires_at = NULL,"
                f" updated_at = ? WHERE {_HELD}",
                (now + delay_s, now, lease.job_id, lease.token),
            )
            return cur.rowcount == 1

    def extend(self, lease: Lease, visibility_s: float) -> Lease | None:
        check_limits(1, visibility_s)
        with self._tx() as c:
            now = self.clock()
            row = c.execute(
                f"UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE {_HELD} RETURNING *",
                (now + visibility_s, now, lease.job_id, lease.token),
            ).fetchone()
        return None if row is None else Lease(_job(row), lease.token, now + visibility_s)

    # -- managing ----------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        return self._move(job_id, "status = 'cancelled'", (), ("queued",))

    def cancel_queue(self, queue: str, reason: str) -> int:
        with self._tx() as c:
            cur = c.execute(
                "UPDATE jobs SET status = 'cancelled', error = ?, updated_at = ?"
                " WHERE queue = ? AND status = 'queued'",
                (reason, self.clock(), queue),
            )
            return int(cur.rowcount)

    def purge(self, finished_before: float, limit: int = 1000) -> list[Job]:
        with self._tx() as c:
            rows = c.execute(
                "DELETE FROM jobs WHERE seq IN (SELECT seq FROM jobs"
                " WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled')"
                " AND updated_at < ? ORDER BY seq LIMIT ?)"
                " RETURNING *",
                (finished_before, limit),
            ).fetchall()
        return [_job(r) for r in rows]

    def retry(self, job_id: str) -> bool:
        return self._move(
            job_id,
            "status = 'queued', attempts = 0, available_at = ?",
            (self.clock(),),
            ("dead", "failed"),
        )

    def _move(
        self, job_id: str, assignments: str, args: tuple[Any, ...], from_states: tuple[str, ...]
    ) -> bool:
        marks = ", ".join("?" * len(from_states))
        with self._tx() as c:
            cur = c.execute(
                f"UPDATE jobs SET {assignments}, updated_at = ?"
                f" WHERE id = ? AND status IN ({marks})",
                (*args, self.clock(), job_id, *from_states),
            )
            if cur.rowcount == 1:
                return True
            if c.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                raise self._not_found(job_id)
            return False

    def get(self, job_id: str) -> Job:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise self._not_found(job_id)
        return _job(row)

    def list(
        self, *, status: JobStatus | None = None, queue: str | None = None, limit: int = 100
    ) -> Sequence[Job]:
        where, args = _filters(status, queue)
        rows = self._conn().execute(
            f"SELECT * FROM jobs{where} ORDER BY seq DESC LIMIT ?", (*args, limit)
        )
        return [_job(r) for r in rows]

    def depth(self, queue: str) -> int:
        (n,) = (
            self._conn()
            .execute(
                "SELECT count(*) FROM jobs WHERE queue = ? AND status IN ('queued', 'running')",
                (queue,),
            )
            .fetchone()
        )
        return int(n)

    def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        where, args = _filters(None, queue)
        rows = self._conn().execute(
            f"SELECT status, count(*) FROM jobs{where} GROUP BY status", args
        )
        counts = dict.fromkeys(JobStatus, 0)
        counts.update({JobStatus(s): n for s, n in rows})
        return counts


def _filters(status: JobStatus | None, queue: str | None) -> tuple[str, tuple[str, ...]]:
    terms = [(col, v) for col, v in (("status", status), ("queue", queue)) if v is not None]
    if not terms:
        return "", ()
    return " WHERE " + " AND ".join(f"{col} = ?" for col, _ in terms), tuple(
        str(v) for _, v in terms
    )


def _job(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        queue=row["queue"],
        payload=json.loads(row["payload"]),
        status=JobStatus(row["status"]),
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        available_at=row["available_at"],
        lease_expires_at=row["lease_expires_at"],
        idempotency_key=row["idempotency_key"],
        result=None if row["result"] is None else json.loads(row["result"]),
        error=row["error"],
    )
