"""M9: damaged SQLite state stops the server with a message, never an empty registry."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from pathlib import Path

import pytest

from zeroserve.db import make_engine
from zeroserve.integrity import StateCorrupted, check_sqlite, secure_data_dir, wal_problem
from zeroserve.jobs.sqlite_queue import SqliteQueue


def crashed_copy(tmp_path: Path, rows: int = 200) -> Path:
    """A database whose commits are all still in its WAL, copied as a SIGKILL leaves it."""
    live = tmp_path / "live" / "registry.db"
    live.parent.mkdir()
    conn = sqlite3.connect(live)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE models (name TEXT, blob TEXT)")
    for i in range(rows):
        conn.execute("INSERT INTO models VALUES (?, ?)", (f"m{i}", "x" * 500))
        conn.commit()
    copy = tmp_path / "copy"
    copy.mkdir()
    for suffix in ("", "-wal"):
        shutil.copy(f"{live}{suffix}", copy / f"registry.db{suffix}")
    conn.close()
    return copy / "registry.db"


def test_an_intact_crashed_copy_passes(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path)
    assert wal_problem(db.with_name("registry.db-wal")) is None
    check_sqlite(db)
    assert sqlite3.connect(db).execute("SELECT count(*) FROM models").fetchone() == (200,)


def test_garbage_in_the_middle_of_the_wal_is_refused(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path)
    wal = db.with_name("registry.db-wal")
    size = wal.stat().st_size
    with wal.open("r+b") as fh:
        fh.seek(size // 2)
        fh.write(os.urandom(4096))
    # Without the check, SQLite would silently drop every commit after the damage.
    with pytest.raises(StateCorrupted) as info:
        check_sqlite(db)
    message = info.value.message
    assert str(db) in message and "write-ahead log is damaged" in message
    assert "Restore the data directory from a backup" in message
    assert wal.stat().st_size == size  # nothing opened it, so the evidence is still there


def test_a_garbage_wal_header_is_refused(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path)
    with db.with_name("registry.db-wal").open("r+b") as fh:
        fh.write(os.urandom(32))
    with pytest.raises(StateCorrupted, match="damaged header"):
        check_sqlite(db)


def test_a_torn_last_write_is_what_sqlite_recovers_from(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path)
    wal = db.with_name("registry.db-wal")
    with wal.open("r+b") as fh:  # the last frame half written
        fh.truncate(wal.stat().st_size - 2000)
    check_sqlite(db)


def test_a_truncated_database_is_refused(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path, rows=400)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    db.with_name("registry.db-wal").unlink(missing_ok=True)
    with db.open("r+b") as fh:
        fh.truncate(db.stat().st_size // 2)
    with pytest.raises(StateCorrupted, match=r"quick_check|cannot read"):
        check_sqlite(db)


def test_not_a_database(tmp_path: Path) -> None:
    db = tmp_path / "registry.db"
    db.write_bytes(os.urandom(8192))
    with pytest.raises(StateCorrupted, match="SQLite cannot read it"):
        check_sqlite(db)


def test_registry_engine_and_job_queue_check_before_opening(tmp_path: Path) -> None:
    db = crashed_copy(tmp_path)
    wal = db.with_name("registry.db-wal")
    with wal.open("r+b") as fh:
        fh.seek(wal.stat().st_size // 2)
        fh.write(os.urandom(4096))
    with pytest.raises(StateCorrupted):
        make_engine(f"sqlite:///{db}")
    jobs = db.with_name("jobs.db")
    shutil.copy(db, jobs)
    shutil.copy(wal, jobs.with_name("jobs.db-wal"))
    with pytest.raises(StateCorrupted):
        SqliteQueue(f"sqlite:///{jobs}")


def test_data_dir_is_private(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    (data / "registry.db").write_text("x")
    (data / "registry.db").chmod(0o644)
    old = os.umask(0o022)
    try:
        secure_data_dir(data)
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        assert stat.S_IMODE((data / "registry.db").stat().st_mode) == 0o600
        (data / "new.json").write_text("{}")
        assert stat.S_IMODE((data / "new.json").stat().st_mode) == 0o600
    finally:
        os.umask(old)
