"""Refuse to start on damaged SQLite state instead of serving a silently older one.

SQLite ignores a write-ahead log from the first frame whose checksum fails:
that is how it survives a torn last write, but garbage in the middle of the
WAL then rolls back every commit after it, silently (the review started a
server with an empty registry that way). Before any connection opens a file
(opening would checkpoint and delete the evidence), ``check_sqlite`` reads the
WAL itself: a bad header, or frames of the current generation after a bad
one, mean committed data would be lost. Then ``PRAGMA quick_check`` checks
the database pages.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import struct
from pathlib import Path

from zeroserve.errors import ZeroserveError

WAL_MAGIC = (0x377F0682, 0x377F0683)
WAL_HEADER = 32
FRAME_HEADER = 24


class StateCorrupted(ZeroserveError):
    """A state file is damaged; the server stops rather than run on part of it."""

    status_code = 500
    code = "state_corrupted"


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack((">" if big_endian else "<") + f"{len(data) // 4}I", data)
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & 0xFFFFFFFF
        s1 = (s1 + words[i + 1] + s0) & 0xFFFFFFFF
    return s0, s1


def wal_problem(wal: Path) -> str | None:
    """Why SQLite would drop committed frames of ``wal``, or None if it would not."""
    data = wal.read_bytes()
    if not data:
        return None
    if len(data) < WAL_HEADER:
        return "its write-ahead log is truncated inside its header"
    magic, _version, page_size, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC or page_size < 512 or page_size & (page_size - 1):
        return "its write-ahead log has a damaged header"
    big = bool(magic & 1)
    s0, s1 = _checksum(data[:24], big, 0, 0)
    if (s0, s1) != (c1, c2):
        return "its write-ahead log has a damaged header"
    frame = FRAME_HEADER + page_size
    frames = (len(data) - WAL_HEADER) // frame
    bad_at: int | None = None
    for i in range(frames):
        start = WAL_HEADER + i * frame
        head = data[start : start + FRAME_HEADER]
        _page, _commit, f1, f2, k1, k2 = struct.unpack(">6I", head)
        current = (f1, f2) == (salt1, salt2)
        if bad_at is None:
            if not current:
                break  # an older generation's frame: the log ends here, normally
            s0, s1 = _checksum(head[:8] + data[start + FRAME_HEADER : start + frame], big, s0, s1)
            if (s0, s1) != (k1, k2):
                bad_at = i
        elif current:
            # A frame of this generation after a bad one: not a torn last write.
            return f"its write-ahead log is damaged at frame {bad_at + 1} of {frames}"
    return None


def check_sqlite(path: Path) -> None:
    """Raise ``StateCorrupted`` if ``path`` (and its WAL) cannot be trusted whole."""
    if not path.exists():
        return
    wal = path.with_name(path.name + "-wal")
    problem = wal_problem(wal) if wal.exists() else None
    if problem is None:
        try:
            conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, timeout=30)
            try:
                rows = conn.execute("PRAGMA quick_check").fetchall()
            finally:
                conn.close()
            if [r[0] for r in rows] != ["ok"]:
                problem = f"its pages fail PRAGMA quick_check ({rows[0][0]})"
        except sqlite3.DatabaseError as exc:
            problem = f"SQLite cannot read it ({exc})"
    if problem is not None:
        raise StateCorrupted(
            f"{path} is damaged: {problem}. zeroserve will not start on it, because it "
            "would run on missing or older state. Restore the data directory from a "
            f"backup, or move {path.name} and its -wal/-shm files aside to start empty"
        )


def secure_data_dir(data_dir: Path) -> None:
    """Create ``data_dir`` 0700, tighten its top-level files to 0600, set umask 077.

    The umask makes every file the server writes from now on private to its
    user (databases, the webhook secret, artifacts, job payloads).
    """
    os.umask(0o077)
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for entry in data_dir.iterdir():
        mode = entry.lstat().st_mode
        if stat.S_ISREG(mode) and mode & 0o077:
            entry.chmod(0o600)
        elif stat.S_ISDIR(mode) and mode & 0o077:
            entry.chmod(0o700)
