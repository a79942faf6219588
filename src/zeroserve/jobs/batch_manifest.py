"""The batch manifest: shards, their state, and where it is stored.

The manifest (``manifest.json`` in the output directory) is the truth about a
batch run. It is only ever replaced whole (temp file + ``os.replace`` locally,
a single PUT on object stores), and a shard's entry turns ``done`` only after
its output file was renamed into place, so a run killed at any moment can be
resumed from it. Local commits are serialised by an ``flock`` on a lock file
beside the manifest, so several worker processes may share one output dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from zeroserve.errors import BadRequest, NotFound

MANIFEST_FILE = "manifest.json"
LOCK_FILE = ".manifest.lock"
MANIFEST_VERSION = 1

Format = Literal["csv", "jsonl", "parquet"]
ShardStatus = Literal["pending", "done", "failed"]
FORMATS: tuple[Format, ...] = ("csv", "jsonl", "parquet")


class BatchInputNotFound(NotFound):
    """The batch input does not exist (or cannot be seen with these credentials)."""

    code = "batch_input_not_found"


class BatchNotFound(NotFound):
    """No batch run (no ``manifest.json``) at this output location."""

    code = "batch_not_found"


class BadBatchInput(BadRequest):
    """The input cannot be read as given: format, columns or a malformed row."""

    code = "bad_batch_input"


@dataclass(slots=True)
class Shard:
    """One unit of work: a contiguous range of data rows of the input."""

    index: int
    start_row: int
    """0-based position of the shard's first data row in the input."""
    rows: int
    """Data rows in the shard (blank lines excluded)."""
    byte_start: int | None = None
    """CSV/JSONL: byte range ``[byte_start, byte_end)``, aligned to line starts."""
    byte_end: int | None = None
    first_line: int | None = None
    """CSV/JSONL: 1-based line number of the line at ``byte_start``."""
    row_groups: list[int] | None = None
    """Parquet: the row groups the shard spans; it starts ``skip_rows`` into the first."""
    skip_rows: int = 0
    status: ShardStatus = "pending"
    output: str | None = None
    rows_written: int | None = None
    bad_rows: int = 0
    checksum: str | None = None
    """``sha256:<hex>`` of the output file."""
    error: str | None = None
    adopted: bool = False

    @property
    def id(self) -> str:
        return f"{self.index:05d}"


@dataclass(slots=True)
class Manifest:
    """A planned batch transform: input, output, columns and shards."""

    input_uri: str
    output_uri: str
    input_format: Format
    output_format: Format
    fingerprint: dict[str, Any]
    feature_columns: list[str]
    id_column: str | None
    id_type: str
    """Arrow type name of the ids (``int64``, ``string``, ...) fixed at plan time."""
    shard_rows: int
    total_rows: int
    shards: list[Shard] = field(default_factory=list)
    header: str | None = None
    """CSV: the header line, prepended to each shard's byte range when parsing."""
    cancelled: bool = False
    created_at: float = 0.0
    version: int = MANIFEST_VERSION

    @property
    def output_id_column(self) -> str:
        """The id column in the output: the input's, or ``row`` (0-based row position)."""
        return self.id_column or "row"

    def shard(self, index: int) -> Shard:
        return self.shards[index]

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        raw = json.loads(data)
        if raw.get("version") != MANIFEST_VERSION:
            raise BadRequest(
                f"manifest version {raw.get('version')} is not supported "
                f"(this zeroserve writes version {MANIFEST_VERSION}); plan the run again"
            )
        names = {f.name for f in fields(Shard)}
        raw["shards"] = [Shard(**{k: v for k, v in s.items() if k in names}) for s in raw["shards"]]
        return cls(**raw)


# One in-process lock per output root, shared by every Store of that root.
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class Store:
    """An output directory on any fsspec filesystem, with atomic writes."""

    def __init__(self, uri: str) -> None:
        import fsspec

        self.uri = uri
        self.fs, self.root = fsspec.core.url_to_fs(uri)
        self.local = _is_local(self.fs)
        with _LOCKS_GUARD:
            self._lock = _LOCKS.setdefault(self.root, threading.Lock())

    def path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def exists(self, name: str) -> bool:
        return bool(self.fs.exists(self.path(name)))

    def read_bytes(self, name: str) -> bytes:
        data: bytes = self.fs.cat_file(self.path(name))
        return data

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self.path(name))

    def names(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return [posixpath.basename(p) for p in self.fs.ls(self.root, detail=False)]

    def write_atomic(self, name: str, data: bytes) -> None:
        """Write ``name`` so that readers see either the old file or the new, whole one."""
        final = self.path(name)
        if not self.local:
            # An object store PUT is atomic: the object appears whole or not at all.
            self.fs.pipe_file(final, data)
            return
        Path(self.root).mkdir(parents=True, exist_ok=True)
        tmp = Path(self.path(f".{name}.{uuid.uuid4().hex}.tmp"))
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def clean_temps(self) -> None:
        """Drop temp files that a killed writer left behind."""
        for name in self.names():
            if name.startswith(".") and name.endswith(".tmp"):
                self.remove(name)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise manifest read-modify-write across threads and (locally) processes."""
        with self._lock:
            if not self.local:
                # No cross-process lock on object stores: the driver commits from one
                # process, and an output without its entry is adopted on resume.
                yield
                return
            import fcntl

            Path(self.root).mkdir(parents=True, exist_ok=True)
            with open(self.path(LOCK_FILE), "a+b") as handle:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def load_manifest(output_uri: str) -> Manifest:
    """Read the manifest of the batch run at ``output_uri``."""
    store = Store(output_uri)
    try:
        return Manifest.from_json(store.read_bytes(MANIFEST_FILE))
    except FileNotFoundError:
        raise BatchNotFound(
            f"no batch run at {output_uri} (no {MANIFEST_FILE}); start one with plan()",
            output_uri=output_uri,
        ) from None


def save_manifest(manifest: Manifest) -> None:
    Store(manifest.output_uri).write_atomic(MANIFEST_FILE, manifest.to_json())


def update_manifest(manifest: Manifest, change: Callable[[Manifest], None]) -> Manifest:
    """Apply ``change`` to the stored manifest under the lock and write it back.

    The stored copy is re-read first so that commits from other workers are kept;
    ``manifest`` (the caller's copy) is refreshed from the result.
    """
    store = Store(manifest.output_uri)
    with store.locked():
        try:
            current = Manifest.from_json(store.read_bytes(MANIFEST_FILE))
        except FileNotFoundError:
            current = manifest
        change(current)
        store.write_atomic(MANIFEST_FILE, current.to_json())
    for name in (f.name for f in fields(Manifest)):
        setattr(manifest, name, getattr(current, name))
    return manifest
