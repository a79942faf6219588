"""The JobQueue contract (``tests/queue_contract.py``) on SQLite, in-process.

The same contract runs against PostgreSQL in ``tests/integration/test_queue_postgres.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.queue_contract import FakeClock, QueueContract, queue_options
from zeroserve.errors import BadRequest
from zeroserve.jobs.queue import JobQueue, backoff_s, open_queue


class TestSQLiteQueue(QueueContract):
    @pytest.fixture
    def queue(self, tmp_path: Path, clock: FakeClock) -> Iterator[JobQueue]:
        q = open_queue(f"sqlite:///{tmp_path}/jobs.db", **queue_options(clock))
        yield q
        q.close()


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_s(n, 1.0, 5.0) for n in (1, 2, 3, 4, 5)] == [1.0, 2.0, 4.0, 5.0, 5.0]


def test_open_queue_rejects_unknown_urls(tmp_path: Path) -> None:
    with pytest.raises(BadRequest):
        open_queue("mysql://localhost/jobs")
    with pytest.raises(BadRequest):
        open_queue("sqlite:///:memory:")
    with pytest.raises(BadRequest):
        open_queue(f"sqlite:///{tmp_path}/jobs.db", max_attempts=0)
