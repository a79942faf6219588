"""Child processes that run model code: a scrubbed environment and resource limits.

Model code (a hostile artifact included) runs in children of the server: the
packager that inspects an upload, and the zygotes and replicas that serve it.
None of them needs the server's API keys, database URLs or cloud credentials,
so they get an environment built from an allowlist (``scrubbed_env``), and
the packager also runs under rlimits on address space, CPU time and file size
in a private working directory (``run_sandboxed``).

What this does not do: it is not a jail. The child runs as the server's user
and can read what that user can read; run the server in a container, or as a
user that owns nothing but its data directory, when artifacts come from
people you do not trust (see docs/security.md).
"""

from __future__ import annotations

import asyncio
import os
import pwd
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

SAFE_NAMES = frozenset(
    {
        "PATH",
        "HOME",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "USER",
        "LOGNAME",
        "TERM",
        "PYTHONPATH",
        "PYTHONHASHSEED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONUNBUFFERED",
        "PYTHONWARNINGS",
        "VIRTUAL_ENV",
        "LD_LIBRARY_PATH",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "CUDA_VISIBLE_DEVICES",
        "COVERAGE_PROCESS_START",
    }
)
"""Variables a model process may inherit: locale, paths, the interpreter's own."""
SAFE_PREFIXES = ("LC_", "OMP_", "MKL_", "OPENBLAS_", "NUMEXPR_", "VECLIB_", "KMP_")
"""Locale and numeric-library threading knobs."""


def scrubbed_env(
    extra_allowed: Iterable[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The server's environment reduced to an allowlist, for a child that runs model code.

    ``extra_allowed`` names further variables the operator chose to pass (the
    ``sandbox_env_passthrough`` setting, e.g. ``AWS_PROFILE``); they are the only
    way a secret (``ZEROSERVE_*_KEYS``, ``AWS_*``, ``GOOGLE_*``, ``AZURE_*``,
    database URLs) reaches model code. ``overrides`` are set last.
    """
    source = os.environ if environ is None else environ
    extra = frozenset(extra_allowed)
    env = {
        name: value
        for name, value in source.items()
        if name in SAFE_NAMES or name in extra or name.startswith(SAFE_PREFIXES)
    }
    env.update(overrides or {})
    return env


@dataclass(frozen=True, slots=True)
class Limits:
    """rlimits for one child; None leaves that limit as inherited."""

    memory_mb: int | None = 4096
    cpu_s: int | None = 600
    file_mb: int | None = 8192

    def apply(self) -> None:
        """Set the limits on the calling process (run in the child before exec)."""
        if self.memory_mb is not None:
            size = self.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (size, size))
        if self.cpu_s is not None:
            # The soft limit sends SIGXCPU; the hard one, a second later, SIGKILL.
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_s, self.cpu_s + 1))
        if self.file_mb is not None:
            size = self.file_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core dumps of model memory

    def preexec(self) -> Callable[[], None]:
        return self.apply


@dataclass(frozen=True, slots=True)
class Outcome:
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    @property
    def signal_name(self) -> str | None:
        """The signal that ended the child (SIGKILL, SIGXCPU ...), if one did."""
        if self.returncode >= 0:
            return None
        import signal

        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


async def run_sandboxed(
    argv: list[str],
    *,
    cwd: Path,
    limits: Limits,
    extra_env: Iterable[str] = (),
    timeout_s: float,
    user: str | None = None,
) -> Outcome:
    """Run ``argv`` in ``cwd`` with a scrubbed environment and ``limits``; never raises
    on the child's failure (read ``Outcome``).

    ``user`` (only when we are root) runs the child as that user, with ``cwd``
    handed to it; it then cannot read the data directory (0700, ours).
    """
    env = scrubbed_env(extra_env, overrides={"HOME": str(cwd), "TMPDIR": str(cwd)})
    as_user: dict[str, object] = {}
    if user is not None and os.geteuid() == 0:
        _hand_over(cwd, user)
        as_user = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        preexec_fn=limits.preexec(),
        start_new_session=True,
        **as_user,  # type: ignore[arg-type]
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return Outcome(proc.returncode or -9, b"", b"", timed_out=True)
    return Outcome(proc.returncode if proc.returncode is not None else -1, out, err)


def _hand_over(root: Path, user: str) -> None:
    """Give ``root`` and everything under it to ``user`` (the child writes there)."""
    entry = pwd.getpwnam(user)
    for path in [root, *root.rglob("*")]:
        os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
