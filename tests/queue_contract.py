"""One contract for every JobQueue implementation, as a class each backend's tests subclass.

A subclass provides the ``queue`` fixture (built with ``OPTIONS`` and the ``clock``):
``tests/unit/jobs/test_queue_contract.py`` runs it on SQLite in-process, and
``tests/integration/test_queue_postgres.py`` on the PostgreSQL server. Time is a fake clock
injected into the queue, so expiry and backoff are tested without sleeping.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from zeroserve.errors import BadRequest, JobNotFound
from zeroserve.jobs.queue import JobQueue, JobStatus

Q = "endpoint:fraud"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def queue_options(clock: FakeClock) -> dict[str, Any]:
    """What every queue under the contract is opened with."""
    return {"max_attempts": 3, "backoff_base_s": 1.0, "clock": clock}


class QueueContract:
    """The behaviour every JobQueue must show; subclasses define the ``queue`` fixture."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock()

    def test_put_lease_ack(self, queue: JobQueue) -> None:
        jobs = [queue.put(Q, {"i": i}) for i in range(3)]
        assert all(j.status is JobStatus.QUEUED and j.attempts == 0 for j in jobs)

        leases = queue.lease(Q, n=2, visibility_s=30)
        assert [lease.job.payload for lease in leases] == [{"i": 0}, {"i": 1}]  # oldest first
        assert all(
            lease.job.status is JobStatus.RUNNING and lease.job.attempts == 1 for lease in leases
        )
        assert queue.get(jobs[0].id).status is JobStatus.RUNNING

        assert queue.ack(leases[0], "file:///results/0.json")
        done = queue.get(jobs[0].id)
        assert (done.status, done.result) == (JobStatus.SUCCEEDED, "file:///results/0.json")
        assert not queue.ack(leases[0], "again")  # a second ack is a no-op

        assert [lease.job.id for lease in queue.lease(Q, n=5)] == [jobs[2].id]
        assert queue.lease(Q, n=5) == []  # job 1 is still held, job 0 is done

    def test_payload_and_inline_result_round_trip(self, queue: JobQueue) -> None:
        payload = {"inputs": {"x": [[1.5, 2.0], [3.0, -1e300]]}, "note": "ünïcode ✓", "n": None}
        job = queue.put(Q, payload)
        (lease,) = queue.lease(Q)
        assert lease.job.payload == payload
        assert queue.ack(lease, {"outputs": [0.1, 0.9]})
        assert queue.get(job.id).result == {"outputs": [0.1, 0.9]}

    def test_queues_are_separate(self, queue: JobQueue) -> None:
        queue.put("endpoint:a", 1)
        queue.put("batch:run-1", 2)
        assert [lease.job.payload for lease in queue.lease("batch:run-1", n=10)] == [2]
        assert [lease.job.queue for lease in queue.lease("endpoint:a", n=10)] == ["endpoint:a"]

    def test_expired_lease_is_redelivered_and_stale_worker_is_refused(
        self, queue: JobQueue, clock: FakeClock
    ) -> None:
        job = queue.put(Q, "work")
        (first,) = queue.lease(Q, visibility_s=10)
        clock.advance(9.9)
        assert queue.lease(Q) == []  # still held
        clock.advance(0.2)
        (second,) = queue.lease(Q, visibility_s=10)
        assert second.job.id == job.id
        assert second.job.attempts == 2
        assert second.token != first.token

        assert not queue.ack(first, "stale")
        assert not queue.fail(first, "stale", retryable=False)
        assert not queue.nack(first)
        assert queue.extend(first, 60) is None
        assert queue.get(job.id).status is JobStatus.RUNNING

        assert queue.ack(second, "fresh")
        assert queue.get(job.id).result == "fresh"

    def test_extend_keeps_the_lease(self, queue: JobQueue, clock: FakeClock) -> None:
        queue.put(Q, "long")
        (lease,) = queue.lease(Q, visibility_s=10)
        clock.advance(8)
        extended = queue.extend(lease, 10)
        assert extended is not None
        assert extended.expires_at == pytest.approx(clock.now + 10)
        clock.advance(8)  # past the first expiry, inside the extension
        assert queue.lease(Q) == []
        assert queue.ack(extended)

    def test_retryable_failure_backs_off_then_dead_letters(
        self, queue: JobQueue, clock: FakeClock
    ) -> None:
        job = queue.put(Q, "flaky")  # max_attempts=3, backoff 1 s, 2 s
        for attempt, delay in ((1, 1.0), (2, 2.0)):
            (lease,) = queue.lease(Q)
            assert lease.job.attempts == attempt
            assert queue.fail(lease, f"boom {attempt}")
            queued = queue.get(job.id)
            assert queued.status is JobStatus.QUEUED
            assert queued.error == f"boom {attempt}"
            assert queued.available_at == pytest.approx(clock.now + delay)
            clock.advance(delay - 0.01)
            assert queue.lease(Q) == []  # still backing off
            clock.advance(0.01)

        (lease,) = queue.lease(Q)
        assert queue.fail(lease, "boom 3")
        dead = queue.get(job.id)
        assert (dead.status, dead.attempts, dead.error) == (JobStatus.DEAD, 3, "boom 3")
        assert [j.id for j in queue.dead_letters(Q)] == [job.id]
        assert queue.depth(Q) == 0
        clock.advance(3600)
        assert queue.lease(Q) == []

    def test_expired_leases_use_up_attempts(self, queue: JobQueue, clock: FakeClock) -> None:
        job = queue.put(Q, "kills its worker", max_attempts=2)
        for _ in range(2):
            assert len(queue.lease(Q, visibility_s=5)) == 1
            clock.advance(6)
        assert queue.lease(Q) == []
        dead = queue.get(job.id)
        assert dead.status is JobStatus.DEAD
        assert dead.error is not None
        assert "lease expired" in dead.error

    def test_non_retryable_failure_is_final(self, queue: JobQueue, clock: FakeClock) -> None:
        job = queue.put(Q, {"wrong": "shape"})
        (lease,) = queue.lease(Q)
        assert queue.fail(lease, "input 'x' is missing", retryable=False)
        failed = queue.get(job.id)
        assert (failed.status, failed.error) == (JobStatus.FAILED, "input 'x' is missing")
        clock.advance(3600)
        assert queue.lease(Q) == []
        assert queue.dead_letters() == []

    def test_nack_gives_the_job_back_without_using_an_attempt(
        self, queue: JobQueue, clock: FakeClock
    ) -> None:
        job = queue.put(Q, "x", max_attempts=1)
        (lease,) = queue.lease(Q)
        assert queue.nack(lease, delay_s=5)
        assert queue.get(job.id).attempts == 0
        assert queue.lease(Q) == []
        clock.advance(5)
        (again,) = queue.lease(Q)
        assert again.job.attempts == 1

    def test_delayed_put(self, queue: JobQueue, clock: FakeClock) -> None:
        queue.put(Q, "later", delay_s=10)
        now = queue.put(Q, "now")
        assert [lease.job.id for lease in queue.lease(Q, n=5)] == [now.id]
        clock.advance(10)
        assert [lease.job.payload for lease in queue.lease(Q, n=5)] == ["later"]

    def test_cancel(self, queue: JobQueue) -> None:
        queued = queue.put(Q, 1)
        running = queue.put(Q, 2)
        assert queue.cancel(queued.id)
        assert queue.get(queued.id).status is JobStatus.CANCELLED
        (lease,) = queue.lease(Q, n=5)  # the cancelled job is never leased
        assert lease.job.id == running.id
        assert not queue.cancel(running.id)
        assert queue.ack(lease)
        assert not queue.cancel(running.id)
        assert not queue.cancel(queued.id)
        with pytest.raises(JobNotFound):
            queue.cancel("no-such-job")

    def test_idempotency_key_returns_the_existing_job(self, queue: JobQueue) -> None:
        first = queue.put(Q, {"v": 1}, idempotency_key="req-42")
        again = queue.put(Q, {"v": 2}, idempotency_key="req-42")
        assert again.id == first.id
        assert again.payload == {"v": 1}
        assert queue.depth(Q) == 1
        other_queue = queue.put("endpoint:other", {"v": 3}, idempotency_key="req-42")
        assert other_queue.id != first.id
        (lease,) = queue.lease(Q)
        assert queue.ack(lease, "r")
        done = queue.put(Q, {"v": 4}, idempotency_key="req-42")  # still the same job once done
        assert (done.id, done.status, done.result) == (first.id, JobStatus.SUCCEEDED, "r")

    def test_depth_and_counts(self, queue: JobQueue) -> None:
        for i in range(4):
            queue.put("endpoint:a", i)
        queue.put("endpoint:b", 9)
        leases = queue.lease("endpoint:a", n=2)
        assert queue.depth("endpoint:a") == 4
        queue.ack(leases[0])
        queue.fail(leases[1], "bad", retryable=False)
        assert queue.depth("endpoint:a") == 2
        assert queue.depth("endpoint:b") == 1
        assert queue.depth("endpoint:none") == 0
        counts = queue.counts("endpoint:a")
        assert counts == {
            JobStatus.QUEUED: 2,
            JobStatus.RUNNING: 0,
            JobStatus.SUCCEEDED: 1,
            JobStatus.FAILED: 1,
            JobStatus.DEAD: 0,
            JobStatus.CANCELLED: 0,
        }
        assert queue.counts()[JobStatus.QUEUED] == 3

    def test_list_filters_newest_first(self, queue: JobQueue) -> None:
        a = [queue.put("endpoint:a", i) for i in range(3)]
        b = queue.put("endpoint:b", "b")
        (lease,) = queue.lease("endpoint:a")
        assert [j.id for j in queue.list()] == [b.id, a[2].id, a[1].id, a[0].id]
        assert [j.id for j in queue.list(queue="endpoint:a", limit=2)] == [a[2].id, a[1].id]
        assert [j.id for j in queue.list(status=JobStatus.RUNNING)] == [lease.job.id]
        assert [j.id for j in queue.list(status=JobStatus.QUEUED, queue="endpoint:b")] == [b.id]
        assert queue.list(status=JobStatus.DEAD) == []

    def test_retry_moves_a_dead_job_back(self, queue: JobQueue) -> None:
        job = queue.put(Q, "x", max_attempts=1)
        (lease,) = queue.lease(Q)
        assert queue.fail(lease, "boom")
        assert queue.get(job.id).status is JobStatus.DEAD
        assert queue.retry(job.id)
        retried = queue.get(job.id)
        assert (retried.status, retried.attempts) == (JobStatus.QUEUED, 0)
        assert not queue.retry(job.id)  # only dead or failed jobs
        (again,) = queue.lease(Q)
        assert again.job.id == job.id
        assert queue.ack(again)
        assert queue.dead_letters() == []
        with pytest.raises(JobNotFound):
            queue.retry("no-such-job")

    def test_ack_many_reports_each_lease(self, queue: JobQueue, clock: FakeClock) -> None:
        for i in range(3):
            queue.put(Q, i)
        stale = queue.lease(Q, n=1, visibility_s=1)[0]
        clock.advance(2)
        fresh = queue.lease(Q, n=3)
        assert len(fresh) == 3
        assert queue.ack_many([(fresh[0], 0), (stale, "old"), (fresh[1], 1), (fresh[2], 2)]) == [
            True,
            False,
            True,
            True,
        ]
        assert queue.counts(Q)[JobStatus.SUCCEEDED] == 3
        assert queue.ack_many([]) == []

    def test_put_many(self, queue: JobQueue) -> None:
        jobs = queue.put_many("batch:run-7", [{"shard": i} for i in range(5)], max_attempts=7)
        assert [j.payload for j in jobs] == [{"shard": i} for i in range(5)]
        assert {j.max_attempts for j in jobs} == {7}
        leased = queue.lease("batch:run-7", n=10)
        assert [lease.job.id for lease in leased] == [j.id for j in jobs]

    def test_threads_never_share_a_lease(self, queue: JobQueue) -> None:
        queue.put_many(Q, list(range(120)))
        leased: list[str] = []
        guard = threading.Lock()

        def work() -> None:
            while leases := queue.lease(Q, n=3, visibility_s=300):
                assert all(queue.ack_many([(lease, None) for lease in leases]))
                with guard:
                    leased.extend(lease.job_id for lease in leases)

        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert len(leased) == len(set(leased)) == 120
        assert queue.counts(Q)[JobStatus.SUCCEEDED] == 120

    def test_get_unknown_job(self, queue: JobQueue) -> None:
        with pytest.raises(JobNotFound):
            queue.get("no-such-job")

    def test_lease_arguments_are_checked(self, queue: JobQueue) -> None:
        with pytest.raises(BadRequest):
            queue.lease(Q, n=0)
        with pytest.raises(BadRequest):
            queue.lease(Q, visibility_s=0)

    def test_cancel_queue_records_the_reason(self, queue: JobQueue) -> None:
        first, second = queue.put(Q, 1), queue.put(Q, 2)
        other = queue.put("endpoint:other", 3)
        (lease,) = queue.lease(Q, n=1)
        assert queue.cancel_queue(Q, "endpoint deleted") == 1
        assert queue.get(second.id).status is JobStatus.CANCELLED
        assert queue.get(second.id).error == "endpoint deleted"
        assert queue.get(first.id).status is JobStatus.RUNNING  # a running job finishes
        assert lease.job.id == first.id
        assert queue.get(other.id).status is JobStatus.QUEUED

    def test_purge_deletes_only_old_finished_jobs(self, queue: JobQueue, clock: FakeClock) -> None:
        done, cancelled, waiting = queue.put(Q, 1), queue.put(Q, 2), queue.put(Q, 3)
        (lease,) = queue.lease(Q, n=1)
        assert queue.ack(lease, {"r": 1})
        assert queue.cancel(cancelled.id)
        clock.advance(100)
        fresh = queue.put(Q, 4)
        (fresh_lease,) = [x for x in queue.lease(Q, n=5) if x.job.id == fresh.id] or [None]
        assert fresh_lease is not None and queue.ack(fresh_lease)  # finished, but recently
        purged = queue.purge(finished_before=clock() - 50)
        assert sorted(j.id for j in purged) == sorted([done.id, cancelled.id])
        assert {j.status for j in purged} == {JobStatus.SUCCEEDED, JobStatus.CANCELLED}
        with pytest.raises(JobNotFound):
            queue.get(done.id)
        assert queue.get(fresh.id).status is JobStatus.SUCCEEDED
        assert queue.get(waiting.id).status is JobStatus.RUNNING  # leased above, never purged
        assert queue.purge(finished_before=clock() - 50) == []
