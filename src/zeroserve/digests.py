"""SHA-256 of every file of an artifact, recorded at registration, checked at load.

The packager writes ``digests.json`` (path -> sha256) beside the model; the
store checks it before handing the directory to a zygote, so a model file
changed on disk after registration (by hand, by a bad copy, by someone with
write access to the data directory but not the wit to rewrite the manifest)
is refused by name instead of served. A check is remembered per file
(inode, size, mtime), so a cold start does not rehash a large model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from pathlib import Path

from zeroserve.errors import ZeroserveError

DIGESTS_FILE = "digests.json"
CHUNK = 1024 * 1024

log = logging.getLogger("zeroserve.registry")


class ArtifactChanged(ZeroserveError):
    """A stored artifact no longer matches what was registered."""

    status_code = 409
    code = "artifact_changed"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(artifact_dir: Path) -> list[Path]:
    return sorted(p for p in artifact_dir.rglob("*") if p.is_file() and p.name != DIGESTS_FILE)


def write_digests(artifact_dir: Path) -> dict[str, str]:
    """Hash every file under ``artifact_dir`` into its ``digests.json``."""
    digests = {p.relative_to(artifact_dir).as_posix(): sha256_file(p) for p in _files(artifact_dir)}
    (artifact_dir / DIGESTS_FILE).write_text(json.dumps(digests, indent=2, sort_keys=True))
    return digests


_verified: dict[tuple[str, int, int, int], str] = {}
_lock = threading.Lock()


def _hash_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns)
    with _lock:
        known = _verified.get(key)
    if known is None:
        known = sha256_file(path)
        with _lock:
            _verified[key] = known
    return known


def verify_artifact(artifact_dir: Path, name: str = "") -> None:
    """Raise ``ArtifactChanged`` unless every recorded file has its recorded digest
    and no file was added. Artifacts registered before digests existed pass, with
    a warning."""
    label = name or str(artifact_dir)
    manifest = artifact_dir / DIGESTS_FILE
    if not manifest.exists():
        log.warning(
            "artifact has no digests.json; register it again to protect it",
            extra={"artifact": label},
        )
        return
    try:
        recorded: dict[str, str] = json.loads(manifest.read_text())
    except (OSError, ValueError):
        raise ArtifactChanged(f"artifact {label}: its digests.json is unreadable") from None
    present = {p.relative_to(artifact_dir).as_posix() for p in _files(artifact_dir)}
    changed = sorted(set(recorded) ^ present)
    changed += sorted(
        rel for rel in set(recorded) & present if _hash_cached(artifact_dir / rel) != recorded[rel]
    )
    if changed:
        raise ArtifactChanged(
            f"artifact {label} changed on disk since it was registered "
            f"({', '.join(changed)} differ from their recorded SHA-256); it will not be "
            "loaded. Restore the file, or register the model again as a new version"
        )
