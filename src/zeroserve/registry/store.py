"""The artifact store: files by key under one fsspec URL.

The embedded default is a local directory; ``s3://bucket/prefix`` (with the
``s3`` extra) or any other fsspec URL works the same way. Runtimes read from
a local directory, so ``materialize`` copies a remote artifact into a cache.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path
from typing import IO, Any

import fsspec

from zeroserve.digests import verify_artifact
from zeroserve.errors import NotFound


class ArtifactStore:
    """Put, get, open and test files by key below a base URL."""

    def __init__(self, base_url: str, cache_dir: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.fs: Any
        self.fs, self._root = fsspec.core.url_to_fs(self.base_url)
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        self.is_local = "file" in protocols
        self.cache_dir = cache_dir

    def url(self, key: str) -> str:
        return f"{self.base_url}/{key.lstrip('/')}"

    def _path(self, key: str) -> str:
        return f"{self._root}/{key.lstrip('/')}"

    def put(self, key: str, local_path: Path) -> str:
        """Copy a local file or directory under ``key``; returns its URL."""
        target = self._path(key)
        if self.is_local:
            dest = Path(target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if local_path.is_dir():
                shutil.copytree(local_path, dest, dirs_exist_ok=True)
            else:
                shutil.copy2(local_path, dest)
        else:
            self.fs.put(str(local_path), target, recursive=local_path.is_dir())
        return self.url(key)

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` under ``key``; locally via a temporary file and a rename, so a
        full disk leaves the old file or none, never half of one."""
        target = self._path(key)
        if self.is_local:
            dest = Path(target)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex[:8]}.tmp")
            try:
                with tmp.open("wb") as fh:
                    fh.write(data)
                tmp.replace(dest)
            finally:
                tmp.unlink(missing_ok=True)
            return self.url(key)
        with self.fs.open(target, "wb") as fh:
            fh.write(data)
        return self.url(key)

    def get(self, key: str, local_path: Path) -> Path:
        if not self.exists(key):
            raise NotFound(f"artifact {self.url(key)} does not exist in the store")
        self.fs.get(self._path(key), str(local_path), recursive=True)
        return local_path

    def open(self, key: str, mode: str = "rb") -> IO[bytes]:
        if "r" in mode and not self.exists(key):
            raise NotFound(f"artifact {self.url(key)} does not exist in the store")
        if "w" in mode and self.is_local:
            Path(self._path(key)).parent.mkdir(parents=True, exist_ok=True)
        handle: IO[bytes] = self.fs.open(self._path(key), mode)
        return handle

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        if self.exists(key):
            self.fs.rm(self._path(key), recursive=True)

    def materialize(self, key: str) -> Path:
        """A local directory holding ``key``: the store itself when local, else a cached copy.

        Its files are checked against the digests recorded at registration
        (``ArtifactChanged`` if one differs)."""
        if self.is_local:
            path = Path(self._path(key))
            if not path.exists():
                raise NotFound(f"artifact {self.url(key)} does not exist in the store")
            verify_artifact(path, key)
            return path
        if self.cache_dir is None:
            raise NotFound("a remote artifact store needs a local cache directory")
        local = self.cache_dir / key
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            self.get(key, local)
        verify_artifact(local, key)  # the cached copy too: it lives on local disk
        return local
