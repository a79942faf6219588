"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import modelkit

REQUIRE_SERVICES = os.environ.get("ZEROSERVE_REQUIRE_SERVICES") == "1"
PG_ADMIN_URL = os.environ.get("ZEROSERVE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not available ({exc}); run scripts/services.sh"
    if REQUIRE_SERVICES:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test session."""
    try:
        import psycopg
    except ImportError as exc:  # skips locally, fails in CI like a server that is down
        unavailable("psycopg (pip install -e '.[postgres]')", exc)
    name = f"zs_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except Exception as exc:
        unavailable("PostgreSQL", exc)
    admin.execute(f"CREATE DATABASE {name}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small models of every flavor, trained once per session."""
    return modelkit.build_all(tmp_path_factory.mktemp("models"))
