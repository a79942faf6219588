"""The LLM ledger on real SQLite files and the local PostgreSQL: keys hashed at rest,
reserve/settle, concurrent reservations from two ledgers (as two processes hold)."""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from zeroserve.errors import Forbidden
from zeroserve.llm.ledger import BudgetExceeded, Ledger, Settlement, digest, usage_row


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'llm.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture()
def ledger(url: str) -> Iterator[Ledger]:
    led = Ledger(url)
    yield led
    led.close()


def _settle(
    led: Ledger, rid: str | None, key: str, team: str | None, reserved: int, cost: int
) -> None:
    row = usage_row(uuid.uuid4().hex, key, team, "m", "d", 1, 2, 0, 0, 0, cost, False, False, "ok")
    led.settle([Settlement(rid, key, team, reserved, row)])


def test_keys_are_hashed_at_rest(tmp_path: Path) -> None:
    led = Ledger(f"sqlite:///{tmp_path / 'k.db'}")
    record, secret = led.create_key("alice", budget_micros=1000)
    led.close()
    raw = (
        (tmp_path / "k.db").read_bytes() + (tmp_path / "k.db-wal").read_bytes()
        if (tmp_path / "k.db-wal").exists()
        else (tmp_path / "k.db").read_bytes()
    )
    assert secret.encode() not in raw
    rows = (
        sqlite3.connect(tmp_path / "k.db").execute("select digest, prefix from llm_keys").fetchall()
    )
    assert rows == [(digest(secret), record.prefix)]
    assert secret.startswith(record.prefix) and len(record.prefix) < len(secret) // 3


def test_reserve_settle_and_budget(ledger: Ledger) -> None:
    key, _ = ledger.create_key("k", budget_micros=100)
    ledger.reserve(key.id, None, 60, "r1")
    with pytest.raises(BudgetExceeded) as exc:
        ledger.reserve(key.id, None, 60, "r2")  # 60 held + 60 > 100
    assert "lower max_tokens" in exc.value.message
    _settle(ledger, "r1", key.id, None, 60, 25)
    k = next(r for r in ledger.list_keys() if r.id == key.id)
    assert (k.spent_micros, k.reserved_micros) == (25, 0)
    ledger.reserve(key.id, None, 60, "r3")  # 25 + 60 <= 100
    ledger.revoke(key.id)
    with pytest.raises(Forbidden):
        ledger.reserve(key.id, None, 1, "r4")


def test_team_budget_binds_every_key(ledger: Ledger) -> None:
    a, _ = ledger.create_key("a", team="ml")
    b, _ = ledger.create_key("b", team="ml")
    ledger.set_team_budget("ml", 100)
    ledger.reserve(a.id, "ml", 70, "ra")
    with pytest.raises(BudgetExceeded) as exc:
        ledger.reserve(b.id, "ml", 70, "rb")
    assert "team 'ml'" in exc.value.message
    b_after = next(r for r in ledger.list_keys() if r.id == b.id)
    assert b_after.reserved_micros == 0  # the key's hold was rolled back with the team's refusal


def test_usage_grouping(ledger: Ledger) -> None:
    key, _ = ledger.create_key("g")
    _settle(ledger, None, key.id, None, 0, 10)
    _settle(ledger, None, key.id, None, 0, 32)
    by_key = [r for r in ledger.usage("key") if r["key_id"] == key.id]
    assert by_key[0]["requests"] == 2 and by_key[0]["cost_micros"] == 42
    assert ledger.usage("day", key=key.id)[0]["output_tokens"] == 4
    assert ledger.usage("model", key=key.id)[0]["model"] == "m"


def test_stale_reservation_is_spent_in_full(ledger: Ledger) -> None:
    key, _ = ledger.create_key("s", budget_micros=1000)
    ledger.reserve(key.id, None, 300, "lost")
    assert ledger.sweep(older_than_s=-1) >= 1  # others may be left by earlier tests
    k = next(r for r in ledger.list_keys() if r.id == key.id)
    assert (k.spent_micros, k.reserved_micros) == (300, 0)
    _settle(
        ledger, "lost", key.id, None, 300, 100
    )  # the dead process's late settle changes nothing
    k = next(r for r in ledger.list_keys() if r.id == key.id)
    assert (k.spent_micros, k.reserved_micros) == (300, 0)


def test_concurrent_reservations_never_overrun(url: str) -> None:
    """Two ledgers (as two processes would hold) and 16 threads race for a 20-call budget."""
    worst, actual = 1_000, 900
    setup = Ledger(url)
    key, _ = setup.create_key("race", budget_micros=20 * worst)
    ledgers = [setup, Ledger(url)]
    admitted = []
    lock = threading.Lock()

    def worker(led: Ledger, n: int) -> None:
        for _ in range(n):
            rid = uuid.uuid4().hex
            try:
                led.reserve(key.id, None, worst, rid)
            except BudgetExceeded:
                continue
            with lock:
                admitted.append(rid)
            _settle(led, rid, key.id, None, worst, actual)

    threads = [threading.Thread(target=worker, args=(ledgers[i % 2], 25)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    k = next(r for r in setup.list_keys() if r.id == key.id)
    assert k.reserved_micros == 0
    assert k.spent_micros == len(admitted) * actual
    assert k.spent_micros <= 20 * worst
    assert len(admitted) == 22  # 22 * 900 <= 20_000 < 23 * 900: every admissible call got in
    for led in ledgers:
        led.close()
