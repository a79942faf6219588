"""Inspect an uploaded artifact in a sandboxed child (``zeroserve.registry.packaging``).

Inspecting means loading, and loading a hostile file may run its code, so
the packager runs with a scrubbed environment (no API keys or credentials),
rlimits on memory, CPU and file size, and a private working directory
outside the data directory. Its one line of JSON on stdout is the answer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from zeroserve.errors import InvalidArtifact, ZeroserveError
from zeroserve.registry.packaging import PackageRequest, PackageResult
from zeroserve.sandbox import Limits, run_sandboxed
from zeroserve.settings import Settings

PACKAGE_TIMEOUT_S = 600


def limits_from(settings: Settings) -> Limits:
    return Limits(
        memory_mb=settings.sandbox_memory_mb,
        cpu_s=settings.sandbox_cpu_s,
        file_mb=settings.sandbox_file_mb,
    )


async def inspect_artifact(req: PackageRequest, settings: Settings, work: Path) -> PackageResult:
    """Package ``req`` in a sandboxed child whose working directory is ``work``."""
    try:
        outcome = await run_sandboxed(
            [sys.executable, "-m", "zeroserve.registry.packaging", req.model_dump_json()],
            cwd=work,
            limits=limits_from(settings),
            extra_env=settings.sandbox_env_passthrough,
            timeout_s=PACKAGE_TIMEOUT_S,
            user=settings.sandbox_user,
        )
    except (OSError, KeyError) as exc:  # the server's setup, not the artifact
        raise ZeroserveError(
            f"cannot start the artifact inspector as user {settings.sandbox_user!r} "
            f"({type(exc).__name__}: {exc}); the user must exist and be able to run "
            f"{sys.executable} and read zeroserve's code"
        ) from None
    if outcome.timed_out:
        raise InvalidArtifact(f"inspecting the artifact took over {PACKAGE_TIMEOUT_S} s")
    lines = outcome.stdout.decode(errors="replace").strip().splitlines()
    try:
        reply = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise InvalidArtifact(_crash_message(outcome.signal_name, outcome.stderr)) from None
    if not reply["ok"]:
        error = ZeroserveError(reply["error"], **reply.get("details", {}))
        error.status_code, error.code = reply["status"], reply["code"]
        raise error
    return PackageResult.model_validate(reply["result"])


def _crash_message(signal_name: str | None, stderr: bytes) -> str:
    if signal_name in ("SIGXCPU", "SIGKILL"):
        return (
            "inspecting the artifact used more than its CPU-time limit "
            "(ZEROSERVE_SANDBOX_CPU_S) and was stopped"
        )
    tail = stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
    if "MemoryError" in tail[0] or "Cannot allocate memory" in tail[0]:
        return (
            "inspecting the artifact needed more memory than its limit "
            "(ZEROSERVE_SANDBOX_MEMORY_MB)"
        )
    if signal_name == "SIGXFSZ" or "File too large" in tail[0]:
        return "the artifact wrote a file over the limit (ZEROSERVE_SANDBOX_FILE_MB)"
    return f"the artifact could not be inspected: {tail[0]}"
