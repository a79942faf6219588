"""The registry contract (``tests/registry_contract.py``) on SQLite, in-process.

The same contract runs against PostgreSQL in ``tests/integration/test_registry_postgres.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.registry_contract import RegistryContract
from zeroserve.registry.registry import Registry


class TestSQLiteRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path: Path) -> Iterator[Registry]:
        reg = Registry.open(
            f"sqlite:///{tmp_path / 'registry.db'}", (tmp_path / "artifacts").as_uri()
        )
        yield reg
        reg.engine.dispose()
