"""Python models as directories: the entry module, sibling files, ``requirements.txt``.

Requirements are checked against what is installed where the server runs,
never installed: a missing package is named with the command that fixes it.
"""

from __future__ import annotations

import shutil
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

from zeroserve.errors import InvalidArtifact
from zeroserve.runtimes.base import META_FILE, REFERENCE_FILE

ARCHIVES = (".zip", ".tar.gz", ".tgz", ".tar")


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(ARCHIVES)


def unpack(archive: Path, dest: Path) -> Path:
    """Extract a model directory uploaded as an archive; refuses paths that escape it."""
    dest.mkdir(parents=True, exist_ok=True)
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    _inside(dest, name)
                zf.extractall(dest)
        else:
            with tarfile.open(archive) as tf:
                tf.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError) as exc:
        raise InvalidArtifact(f"{archive.name} is not a readable archive: {exc}") from None
    entries = [p for p in dest.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]  # the archive held the directory itself
    return dest


def _inside(root: Path, name: str) -> None:
    target = (root / name).resolve()
    if not target.is_relative_to(root.resolve()):
        raise InvalidArtifact(f"the archive entry {name!r} points outside the model directory")


def pack(directory: Path, archive: Path) -> Path:
    """A model directory as a ``.tar.gz`` for upload (the CLI and the client use this)."""
    with tarfile.open(archive, "w:gz") as tf:
        for path in sorted(directory.rglob("*")):
            if "__pycache__" in path.parts or path.name.startswith(".") or not path.is_file():
                continue
            tf.add(path, arcname=str(path.relative_to(directory)))
    return archive


def entry_module(directory: Path, entrypoint: str | None) -> tuple[str, str]:
    """The module file and class: ``--entrypoint module:Class``, ``Class``, or model.py:Model."""
    module, _, cls = (entrypoint or "").rpartition(":")
    if not entrypoint or ":" not in entrypoint:
        cls = entrypoint or "Model"
        module = ""
    if module:
        path = module.replace(".", "/") + ".py"
        if not (directory / path).is_file():
            raise InvalidArtifact(f"the model directory has no module {path} (--entrypoint)")
        return path, cls
    if (directory / "model.py").is_file():
        return "model.py", cls
    candidates = sorted(p.name for p in directory.glob("*.py"))
    if len(candidates) == 1:
        return candidates[0], cls
    raise InvalidArtifact(
        "the model directory has no model.py; name the module and class with "
        f"--entrypoint module:Class (python files here: {', '.join(candidates) or 'none'})"
    )


def check_requirements(directory: Path) -> list[str]:
    """The requirement lines of ``requirements.txt``; refuses any that is not installed."""
    path = directory / "requirements.txt"
    if not path.is_file():
        return []
    from packaging.requirements import InvalidRequirement, Requirement

    lines = [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()]
    problems, kept = [], []
    for line in lines:
        if not line or line.startswith("-"):
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise InvalidArtifact(
                f"requirements.txt: {line!r} is not a requirement: {exc}"
            ) from None
        if req.marker is not None and not req.marker.evaluate():
            continue
        kept.append(line)
        try:
            installed = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            problems.append(f"{req.name} is not installed")
            continue
        if req.specifier and not req.specifier.contains(installed, prereleases=True):
            problems.append(f"{req.name} {installed} is installed, the model needs {req.specifier}")
    if problems:
        needed = " ".join(f"'{line}'" for line in kept)
        raise InvalidArtifact(
            "requirements.txt is not met on the server: "
            + "; ".join(problems)
            + f". zeroserve never installs packages: run `pip install {needed}` in the "
            "server's environment, then register again"
        )
    return kept


def copy_tree(source: Path, dest: Path) -> None:
    """Copy the user's files into the artifact directory, refusing names zeroserve uses."""
    for reserved in (META_FILE, REFERENCE_FILE):
        if (source / reserved).exists():
            raise InvalidArtifact(f"the model directory has a file named {reserved}; rename it")
    shutil.copytree(
        source, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".*")
    )
