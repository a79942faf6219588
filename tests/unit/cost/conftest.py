from __future__ import annotations

from datetime import date

import pytest

from zeroserve.cost.catalog import Catalog, load_catalog

TODAY = date(2026, 11, 22)  # injected "today": price-age warnings are deterministic


@pytest.fixture(scope="session")
def catalog() -> Catalog:
    return load_catalog()
