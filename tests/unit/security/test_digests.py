"""Artifacts are hashed at registration and checked at load: a changed file is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zeroserve.digests import DIGESTS_FILE, ArtifactChanged, sha256_file
from zeroserve.registry.packaging import PackageRequest, package
from zeroserve.registry.store import ArtifactStore


@pytest.fixture
def stored(models_dir: Path, tmp_path: Path) -> tuple[ArtifactStore, Path]:
    work = tmp_path / "work"
    package(PackageRequest(source=models_dir / "ridge.skops", dest=work))
    store = ArtifactStore((tmp_path / "store").as_uri())
    store.put("models/ridge/1", work)
    return store, tmp_path / "store" / "models" / "ridge" / "1"


def test_every_file_is_recorded(stored: tuple[ArtifactStore, Path]) -> None:
    store, path = stored
    digests = json.loads((path / DIGESTS_FILE).read_text())
    assert set(digests) == {"model.skops", "zeroserve.json"}
    assert digests["model.skops"] == sha256_file(path / "model.skops")
    assert store.materialize("models/ridge/1") == path


def test_a_changed_model_file_is_refused(stored: tuple[ArtifactStore, Path]) -> None:
    store, path = stored
    data = bytearray((path / "model.skops").read_bytes())
    data[-10] ^= 0xFF
    (path / "model.skops").write_bytes(bytes(data))
    with pytest.raises(ArtifactChanged) as info:
        store.materialize("models/ridge/1")
    assert "model.skops" in info.value.message
    assert "changed on disk since it was registered" in info.value.message
    assert info.value.status_code == 409


def test_an_added_or_removed_file_is_refused(stored: tuple[ArtifactStore, Path]) -> None:
    store, path = stored
    (path / "extra.py").write_text("import os")
    with pytest.raises(ArtifactChanged, match=r"extra\.py"):
        store.materialize("models/ridge/1")
    (path / "extra.py").unlink()
    (path / "zeroserve.json").unlink()
    with pytest.raises(ArtifactChanged, match=r"zeroserve\.json"):
        store.materialize("models/ridge/1")
