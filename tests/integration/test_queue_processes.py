"""Several worker processes lease from one queue: every job is done exactly once.

Workers are spawned (not forked) so each opens its own connections, as a real
worker fleet does. Visibility is long, so any job leased twice means two
workers held it at the same time.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue as stdlib_queue
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from zeroserve.jobs.queue import JobStatus, open_queue

QUEUE = "endpoint:fraud"
WORKERS = 4
JOBS = 500


def _work(url: str, options: dict[str, Any], start: Any, results: Any) -> None:
    q = open_queue(url, **options)
    start.wait(30)  # every worker is connected before any leases
    leased: list[str] = []
    acked = 0
    while True:
        leases = q.lease(QUEUE, n=5, visibility_s=300)
        if not leases:
            if q.counts(QUEUE)[JobStatus.QUEUED] == 0:
                break
            continue
        leased += [lease.job_id for lease in leases]
        time.sleep(0.002)  # a little work per batch, so the processes interleave
        acked += sum(q.ack_many([(lease, {"pid": os.getpid()}) for lease in leases]))
    q.close()
    results.put((leased, acked))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def target(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db", {}
        return
    url = request.getfixturevalue("postgres_url")  # the session's throwaway database
    options = {"table": f"jobs_test_{uuid.uuid4().hex[:12]}"}
    yield url, options
    q = open_queue(url, **options)
    q.drop()  # type: ignore[attr-defined]
    q.close()


@pytest.mark.timeout(120)
def test_processes_lease_each_job_exactly_once(target: tuple[str, dict[str, Any]]) -> None:
    url, options = target
    q = open_queue(url, **options)
    jobs = q.put_many(QUEUE, [{"i": i} for i in range(JOBS)])

    ctx = mp.get_context("spawn")
    start, results = ctx.Barrier(WORKERS + 1), ctx.Queue()
    procs = [ctx.Process(target=_work, args=(url, options, start, results)) for _ in range(WORKERS)]
    for p in procs:
        p.start()
    try:
        start.wait(30)  # release them together, so they contend
        reports = [results.get(timeout=90) for _ in procs]
    except stdlib_queue.Empty:
        pytest.fail("a worker process did not finish")
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()

    leased = Counter(job_id for ids, _ in reports for job_id in ids)
    assert [job_id for job_id, n in leased.items() if n > 1] == []
    assert set(leased) == {j.id for j in jobs}
    assert sum(acked for _, acked in reports) == JOBS
    assert q.counts(QUEUE)[JobStatus.SUCCEEDED] == JOBS
    assert {j.attempts for j in q.list(queue=QUEUE, limit=JOBS)} == {1}
    assert sum(1 for ids, _ in reports if ids) > 1  # the work really was shared
    q.close()
