"""The JobQueue contract (``tests/queue_contract.py``) on the PostgreSQL server.

Each test gets its own table in the session's throwaway database (``postgres_url``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tests.queue_contract import FakeClock, QueueContract, queue_options
from zeroserve.jobs.queue import JobQueue, open_queue

pytestmark = pytest.mark.postgres


class TestPostgresQueue(QueueContract):
    @pytest.fixture
    def queue(self, postgres_url: str, clock: FakeClock) -> Iterator[JobQueue]:
        table = f"jobs_test_{uuid.uuid4().hex[:12]}"
        q = open_queue(postgres_url, table=table, **queue_options(clock))
        try:
            yield q
        finally:
            q.drop()  # type: ignore[attr-defined]
            q.close()
