"""M9/M11 against a real server: private data dir; a damaged WAL stops the start with one
message instead of serving an empty registry."""

from __future__ import annotations

import stat
import struct
from pathlib import Path

import pytest

from tests.integration.conftest import Api
from zeroserve.process import ServerProcess


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def damage_first_frame(wal: Path) -> None:
    data = bytearray(wal.read_bytes())
    page_size = struct.unpack(">I", data[8:12])[0]
    assert (len(data) - 32) // (24 + page_size) >= 2, "need frames after the damaged one"
    data[32 + 24 + 100 : 32 + 24 + 164] = b"\xa5" * 64  # inside frame 1's page
    wal.write_bytes(bytes(data))


def test_private_files_and_a_damaged_wal_refuses_to_start(tmp_path: Path, models_dir: Path) -> None:
    data_dir = tmp_path / "state"
    with ServerProcess(data_dir) as server:
        api = Api(server.url)
        api.register("ridge", models_dir / "ridge.skops")
        assert mode(data_dir) == 0o700
        for name in ("registry.db", "jobs.db", "webhook.secret"):
            assert mode(data_dir / name) == 0o600, name
        artifact = data_dir / "artifacts" / "models" / "ridge" / "1" / "model.skops"
        assert mode(artifact) == 0o600
        server.kill()  # SIGKILL: the registry's commits are still in its WAL
    wal = data_dir / "registry.db-wal"
    assert wal.stat().st_size > 0
    damage_first_frame(wal)
    with pytest.raises(RuntimeError) as info:
        ServerProcess(data_dir, log_path=tmp_path / "second.log").start(timeout_s=30)
    log = (tmp_path / "second.log").read_text()
    assert "exited with 3" in str(info.value)
    assert f"error: {data_dir / 'registry.db'} is damaged" in log
    assert "Restore the data directory from a backup" in log
    assert "Traceback" not in log
