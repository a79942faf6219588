"""Server processes for the benchmark: start in a new session, measure CPU, stop by id.

Also the per-target virtual environments, created once under the cache and reused.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 15.0
PIP_TIMEOUT_S = 1200.0
VENV_MARKER = "bench-requirements.txt"


class TargetError(Exception):
    """A target cannot run here. The message says why and, where it can, how to fix it."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, CPU ticks of the process and its reaped children)."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
        table[int(entry.name)] = (int(fields[1]), ticks)
    return table


def process_tree(root_pid: int) -> list[int]:
    """root_pid and every live descendant of it."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        if pid in table:
            tree.append(pid)
            todo.extend(children.get(pid, []))
    return tree


def tree_cpu_s(root_pid: int) -> float:
    """User plus system CPU seconds used so far by root_pid's live process tree."""
    table = _proc_table()
    return sum(table[pid][1] for pid in process_tree(root_pid) if pid in table) / CLOCK_TICKS_PER_S


class ServerProcess:
    """One server command, run in its own session so that it can be stopped as a group."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str], log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.popen = subprocess.Popen(
            command,
            cwd=cwd,
            env={**os.environ, **env},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, n_chars: int = 2000) -> str:
        self._log.flush()
        return self.log_path.read_bytes()[-n_chars:].decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM the group and any descendant that left it, then SIGKILL what is left."""
        try:
            tree = process_tree(self.pid)
            self._signal_all(tree, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=STOP_GRACE_S)
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and any(_exists(pid) for pid in tree[1:]):
                time.sleep(0.1)
            self._signal_all(tree, signal.SIGKILL)
            self.popen.wait(timeout=STOP_GRACE_S)
        finally:
            self._log.close()

    def _signal_all(self, tree: list[int], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # the group is ours: start_new_session made pgid == pid
        for pid in tree:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _exists(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def ensure_venv(venvs_dir: Path, name: str, requirements: list[str]) -> Path:
    """The python of venvs_dir/name with requirements installed from PyPI (made once, reused)."""
    venv = venvs_dir / name
    python = venv / "bin" / "python"
    marker = venv / VENV_MARKER
    wanted = "\n".join(requirements) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"[venv] {name}: installing {' '.join(requirements)} (once; reused later)", flush=True)
    log = venvs_dir / f"{name}-install.log"
    venvs_dir.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        with log.open("wb") as out:
            subprocess.run(
                [str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements],
                check=True,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=PIP_TIMEOUT_S,
            )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        raise TargetError(f"could not install {requirements} into {venv}: {exc}\n{tail}") from exc
    marker.write_text(wanted)
    return python


def pip_freeze(python: Path) -> list[str]:
    result = subprocess.run(
        [str(python), "-m", "pip", "freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return sorted(line for line in result.stdout.splitlines() if line and "==" in line)
