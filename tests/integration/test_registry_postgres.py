"""The registry contract (``tests/registry_contract.py``) on the PostgreSQL server.

Tests share the session's throwaway database (``postgres_url``); each starts from empty tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry_contract import RegistryContract
from zeroserve.db import Base
from zeroserve.registry.registry import Registry

pytestmark = pytest.mark.postgres


class TestPostgresRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, postgres_url: str, tmp_path: Path) -> Iterator[Registry]:
        reg = Registry.open(postgres_url, (tmp_path / "artifacts").as_uri())
        Base.metadata.drop_all(reg.engine)
        Base.metadata.create_all(reg.engine)
        yield reg
        reg.engine.dispose()
