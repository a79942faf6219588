"""The cluster job queue on PostgreSQL, leasing with ``FOR UPDATE SKIP LOCKED``.

Workers on many machines lease from one table: ``SKIP LOCKED`` lets each
transaction take rows no other transaction holds, without waiting, so leases
never overlap and never queue behind each other. Timestamps come from the
queue's clock (epoch seconds), not the server's, so tests can inject one.
"""

from __future__ import annotations

import json
import os
import re
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from zeroserve.errors import BadRequest, require
from zeroserve.jobs.queue import Job, JobQueue, JobStatus, Json, Lease, check_limits

_SCHEMA = """
CREATE TABLE IF NOT EXISTS {t} (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    available_at DOUBLE PRECISION NOT NULL,
    lease_expires_at DOUBLE PRECISION,
    lease_token TEXT,
    idempotency_key TEXT,
    result TEXT,
    error TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS {t}_idempotency ON {t} (queue, idempotency_key);
CREATE INDEX IF NOT EXISTS {t}_ready ON {t} (queue, status, available_at, seq);
CREATE INDEX IF NOT EXISTS {t}_status ON {t} (status)
"""

_SWEEP = """
WITH expired AS (
    SELECT seq FROM {t} WHERE queue = %s AND status = 'running' AND lease_expires_at <= %s
    FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS j SET
    status = CASE WHEN j.attempts >= j.max_attempts THEN 'dead' ELSE 'queued' END,
    error = 'lease expired on attempt ' || j.attempts
        || ': the worker died or ran past its visibility timeout',
    available_at = %s, lease_token = NULL, lease_expires_at = NULL, updated_at = %s
FROM expired WHERE j.seq = expired.seq
"""

_LEASE = """
WITH picked AS (
    SELECT seq FROM {t} WHERE queue = %s AND status = 'queued' AND available_at <= %s
    ORDER BY available_at, seq LIMIT %s
    FOR UPDATE SKIP LOCKED
)
UPDATE {t} AS j SET status = 'running', attempts = j.attempts + 1, lease_token = %s,
    lease_expires_at = %s, updated_at = %s
FROM picked WHERE j.seq = picked.seq
RETURNING j.*
"""

_ACK = """
UPDATE {t} AS j SET status = 'succeeded', result = a.result, lease_token = NULL,
    lease_expires_at = NULL, updated_at = %s
FROM unnest(%s::text[], %s::text[], %s::text[]) AS a(id, token, result)
WHERE j.id = a.id AND j.lease_token = a.token AND j.status = 'running'
RETURNING a.id, a.token
"""

_PUT_MANY = """
INSERT INTO {t} (id, queue, payload, status, max_attempts, created_at, updated_at, available_at)
SELECT a.id, %s, a.payload, 'queued', %s, %s, %s, %s
FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS a(id, payload, ord) ORDER BY a.ord
RETURNING *
"""

_HELD = "id = %s AND lease_token = %s AND status = 'running'"
_TABLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,40}")


class PostgresQueue(JobQueue):
    """``JobQueue`` on a PostgreSQL table (``table``, created if missing)."""

    def __init__(self, url: str, *, table: str = "zeroserve_jobs", **options: Any) -> None:
        super().__init__(**options)
        require("psycopg", "postgres")
        if not _TABLE_NAME.fullmatch(table):
            raise BadRequest(f"job table name {table!r} must match {_TABLE_NAME.pattern}")
        self.url = url
        self.table = table
        self._local = threading.local()
        self._all: list[Any] = []
        self._guard = threading.Lock()
        with self._tx() as cur:
            # Concurrent CREATE ... IF NOT EXISTS can still collide; serialise it.
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (table,))
            for statement in self._sql(_SCHEMA).split(";"):
                cur.execute(statement)

    def _sql(self, template: str) -> str:
        return template.replace("{t}", self.table)

    # -- connections -------------------------------------------------------

    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or self._local.pid != os.getpid():
            import psycopg
            from psycopg.rows import dict_row

            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row)
            self._local.conn, self._local.pid = conn, os.getpid()
            with self._guard:
                self._all.append(conn)
        return conn

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        conn = self._conn()
        with conn.transaction(), conn.cursor() as cur:
            yield cur

    def close(self) -> None:
        with self._guard:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def drop(self) -> None:
        """Drop the table and its indexes (tests, teardown)."""
        with self._tx() as cur:
            cur.execute(f"DROP TABLE IF EXISTS {self.table}")

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
        now = self.clock()
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "INSERT INTO {t} (id, queue, payload, status, max_attempts, created_at,"
                    " updated_at, available_at, idempotency_key)"
                    " VALUES (%s, %s, %s, 'queued', %s, %s, %s, %s, %s)"
                    " ON CONFLICT (queue, idempotency_key) DO NOTHING RETURNING *"
                ),
                (
                    uuid.uuid4().hex,
                    queue,
                    json.dumps(payload),
                    max_attempts or self.max_attempts,
                    now,
                    now,
                    now + delay_s,
                    idempotency_key,
                ),
            )
            row = cur.fetchone()
            if row is None:  # the key was seen before: hand back the first job
                cur.execute(
                    self._sql("SELECT * FROM {t} WHERE queue = %s AND idempotency_key = %s"),
                    (queue, idempotency_key),
                )
                row = cur.fetchone()
        return _job(row)

    def put_many(
        self, queue: str, payloads: Iterable[Json], *, max_attempts: int | None = None
    ) -> list[Job]:
        bodies = [json.dumps(p) for p in payloads]
        if not bodies:
            return []
        now = self.clock()
        ids = [uuid.uuid4().hex for _ in bodies]
        with self._tx() as cur:
            cur.execute(
                self._sql(_PUT_MANY),
                (queue, max_attempts or self.max_attempts, now, now, now, ids, bodies),
            )
            rows = cur.fetchall()
        return [_job(r) for r in sorted(rows, key=lambda r: r["seq"])]

    # -- consuming ---------------------------------------------------------

    def lease(self, queue: str, n: int = 1, visibility_s: float = 30.0) -> list[Lease]:
        check_limits(n, visibility_s)
        token = uuid.uuid4().hex
        now = self.clock()
        expires_at = now + visibility_s
        with self._tx() as cur:
            cur.execute(self._sql(_SWEEP), (queue, now, now, now))
            cur.execute(self._sql(_LEASE), (queue, now, n, token, expires_at, now))
            rows = cur.fetchall()
        rows.sort(key=lambda r: (r["available_at"], r["seq"]))
        return [Lease(_job(r), token, expires_at) for r in rows]

    def ack_many(self, acks: Iterable[tuple[Lease, Json]]) -> list[bool]:
        pairs = list(acks)
        if not pairs:
            return []
        ids = [lease.job_id for lease, _ in pairs]
        tokens = [lease.token for lease, _ in pairs]
        results = [json.dumps(result) for _, result in pairs]
        with self._tx() as cur:
            cur.execute(self._sql(_ACK), (self.clock(), ids, tokens, results))
            # A stale and a live lease may name the same job: match on the token too.
            acked = {(r["id"], r["token"]) for r in cur.fetchall()}
        return [(lease.job_id, lease.token) in acked for lease, _ in pairs]

    def fail(self, lease: Lease, error: str, *, retryable: bool = True) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(f"SELECT attempts, max_attempts FROM {{t}} WHERE {_HELD} FOR UPDATE"),
                (lease.job_id, lease.token),
            )
            row = cur.fetchone()
            if row is None:
                return False
            now = self.clock()
            status, available_at = JobStatus.FAILED, now
            if retryable and row["attempts"] >= row["max_attempts"]:
                status = JobStatus.DEAD
            elif retryable:
                status, available_at = JobStatus.QUEUED, now + self.backoff_s(row["attempts"])
            cur.execute(
                self._sql(
                    "UPDATE {t} SET status = %s, error = %s, available_at = %s,"
                    " lease_token = NULL, lease_expires_at = NULL, updated_at = %s WHERE id = %s"
                ),
                (status.value, error, available_at, now, lease.job_id),
            )
        return True

    def nack(self, lease: Lease, *, delay_s: float = 0.0) -> bool:
        now = self.clock()
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE {t} SET status = 'queued', attempts = greatest(attempts - 1, 0),"
                    " available_at = %s, lease_token = NULL, lease_expires_at = NULL,"
                    f" updated_at = %s WHERE {_HELD}"
                ),
                (now + delay_s, now, lease.job_id, lease.token),
            )
            return bool(cur.rowcount == 1)

    def extend(self, lease: Lease, visibility_s: float) -> Lease | None:
        check_limits(1, visibility_s)
        now = self.clock()
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    f"UPDATE {{t}} SET lease_expires_at = %s, updated_at = %s WHERE {_HELD}"
                    " RETURNING *"
                ),
                (now + visibility_s, now, lease.job_id, lease.token),
            )
            row = cur.fetchone()
        return None if row is None else Lease(_job(row), lease.token, now + visibility_s)

    # -- managing ----------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        return self._move(job_id, "status = 'cancelled'", (), ("queued",))

    def cancel_queue(self, queue: str, reason: str) -> int:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "UPDATE {t} SET status = 'cancelled', error = %s, updated_at = %s"
                    " WHERE queue = %s AND status = 'queued'"
                ),
                (reason, self.clock(), queue),
            )
            return int(cur.rowcount)

    def purge(self, finished_before: float, limit: int = 1000) -> list[Job]:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "DELETE FROM {t} WHERE seq IN (SELECT seq FROM {t}"
                    " WHERE status IN ('succeeded', 'failed', 'dead', 'cancelled')"
                    " AND updated_at < %s ORDER BY seq LIMIT %s)"
                    " RETURNING *"
                ),
                (finished_before, limit),
            )
            rows = cur.fetchall()
        return [_job(r) for r in rows]

    def retry(self, job_id: str) -> bool:
        return self._move(
            job_id,
            "status = 'queued', attempts = 0, available_at = %s",
            (self.clock(),),
            ("dead", "failed"),
        )

    def _move(
        self, job_id: str, assignments: str, args: tuple[Any, ...], from_states: tuple[str, ...]
    ) -> bool:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    f"UPDATE {{t}} SET {assignments}, updated_at = %s"
                    " WHERE id = %s AND status = ANY(%s)"
                ),
                (*args, self.clock(), job_id, list(from_states)),
            )
            if cur.rowcount == 1:
                return True
            cur.execute(self._sql("SELECT 1 FROM {t} WHERE id = %s"), (job_id,))
            if cur.fetchone() is None:
                raise self._not_found(job_id)
            return False

    def get(self, job_id: str) -> Job:
        with self._tx() as cur:
            cur.execute(self._sql("SELECT * FROM {t} WHERE id = %s"), (job_id,))
            row = cur.fetchone()
        if row is None:
            raise self._not_found(job_id)
        return _job(row)

    def list(
        self, *, status: JobStatus | None = None, queue: str | None = None, limit: int = 100
    ) -> Sequence[Job]:
        where, args = _filters(status, queue)
        with self._tx() as cur:
            cur.execute(
                self._sql(f"SELECT * FROM {{t}}{where} ORDER BY seq DESC LIMIT %s"),
                (*args, limit),
            )
            rows = cur.fetchall()
        return [_job(r) for r in rows]

    def depth(self, queue: str) -> int:
        with self._tx() as cur:
            cur.execute(
                self._sql(
                    "SELECT count(*) AS n FROM {t}"
                    " WHERE queue = %s AND status IN ('queued', 'running')"
                ),
                (queue,),
            )
            row = cur.fetchone()
        return int(row["n"])

    def counts(self, queue: str | None = None) -> dict[JobStatus, int]:
        where, args = _filters(None, queue)
        with self._tx() as cur:
            cur.execute(
                self._sql(f"SELECT status, count(*) AS n FROM {{t}}{where} GROUP BY status"), args
            )
            rows = cur.fetchall()
        counts = dict.fromkeys(JobStatus, 0)
        counts.update({JobStatus(r["status"]): int(r["n"]) for r in rows})
        return counts


def _filters(status: JobStatus | None, queue: str | None) -> tuple[str, tuple[str, ...]]:
    terms = [(col, v) for col, v in (("status", status), ("queue", queue)) if v is not None]
    if not terms:
        return "", ()
    where = " WHERE " + " AND ".join(f"{col} = %s" for col, _ in terms)
    return where, tuple(str(v) for _, v in terms)


def _job(row: dict[str, Any]) -> Job:
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
