"""A pre-warmed process that forks replicas in milliseconds.

Started once per model version (``python -m zeroserve.serving.zygote DIR FD``)
with the runtime's libraries imported and the artifact loaded. On each
``fork`` request it forks a child, which becomes a replica on one end of a
fresh socket pair; the other end goes back to the gateway over the control
channel (SCM_RIGHTS). The zygote reaps its children and reports how they
died, so a crash can be explained to the client.

What must not cross a fork is handled here: the zygote stays single-threaded
(one-thread settings for every numeric library, set before they load),
children reseed their random generators, and each child closes every socket
but its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import random
import resource  # here, not in each child: an import after fork costs every cold start
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson

CONTROL_MAX = 65536
SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "VECLIB_MAXIMUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to kill us when our parent dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def limit_memory(limit_mb: int | None) -> None:
    """In a fresh replica: let the OOM killer take it before the gateway, and cap its growth.

    The cap is the kernel's (``RLIMIT_AS``): the address space at fork plus the
    limit. An allocation past it fails at once, where a poll would notice late.
    """
    with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as fh:
        fh.write("1000")
    if not limit_mb:
        return
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/statm") as fh:
            size_bytes = int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        cap = size_bytes + limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))


def _send(ctrl: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    data = orjson.dumps(message)
    if fds:
        socket.send_fds(ctrl, [data], fds)
    else:
        ctrl.send(data)


class Zygote:
    def __init__(self, artifact_dir: Path, ctrl: socket.socket) -> None:
        self.artifact_dir = artifact_dir
        self.ctrl = ctrl
        self.exits: dict[int, int] = {}
        self.children: set[int] = set()

    def load(self) -> float:
        from zeroserve.digests import verify_artifact
        from zeroserve.runtimes import create_runtime
        from zeroserve.runtimes.base import ArtifactMeta

        started = time.perf_counter()
        # Checked here too: a zygote rebuilt after eviction must not load a changed file.
        verify_artifact(self.artifact_dir)
        meta = ArtifactMeta.read(self.artifact_dir)
        self.runtime = create_runtime(meta)
        self.runtime.load(self.artifact_dir)
        if meta.signature is not None:
            self._warm_up(meta)
        # What a replica runs must be imported here, not after each fork
        # (numpy.random alone costs a child ~25 ms to import).
        import numpy.random  # noqa: F401

        import zeroserve.serving.worker  # noqa: F401

        # Freeze what exists now into the permanent generation: collections in
        # the children then never walk (and copy-on-write) the zygote's objects.
        gc.collect()
        gc.freeze()
        return time.perf_counter() - started

    def _warm_up(self, meta: Any) -> None:
        """One prediction so lazy imports and caches land in the shared pages."""
        import numpy as np

        inputs = {
            s.name: np.zeros([1 if d < 0 else d for d in s.shape], dtype=s.dtype)
            for s in meta.signature.inputs
        }
        with contextlib.suppress(Exception):
            self.runtime.predict(inputs)

    def _reap(self, _signum: int, _frame: Any) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.exits[pid] = status

    def fork(self, replica_id: str, memory_limit_mb: int | None = None) -> None:
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        pid = os.fork()
        if pid == 0:
            self._become_replica(child_end, parent_end, memory_limit_mb)
        child_end.close()
        self.children.add(pid)
        threads = threading.active_count()
        _send(
            self.ctrl,
            {"op": "forked", "pid": pid, "replica": replica_id, "threads": threads},
            [parent_end.fileno()],
        )
        parent_end.close()

    def _become_replica(
        self, sock: socket.socket, other: socket.socket, memory_limit_mb: int | None
    ) -> None:
        code = 0
        try:
            limit_memory(memory_limit_mb)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            self.ctrl.close()
            other.close()
            random.seed()
            with contextlib.suppress(ImportError):
                import numpy as np

                np.random.seed(int.from_bytes(os.urandom(4), "little"))
            self.runtime.after_fork()
            from zeroserve.serving.worker import serve_replica

            serve_replica(sock, self.runtime)
        except BaseException:
            code = 1
        finally:
            os._exit(code)

    def wait(self, pid: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while pid not in self.exits and time.monotonic() < deadline:
            time.sleep(0.005)
        status = self.exits.pop(pid, None)
        if status is None:
            _send(self.ctrl, {"op": "status", "pid": pid, "known": False})
            return
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None
        _send(self.ctrl, {"op": "status", "pid": pid, "known": True, "signal": sig, "code": code})

    def serve(self) -> None:
        signal.signal(signal.SIGCHLD, self._reap)
        while True:
            try:
                data = self.ctrl.recv(CONTROL_MAX)
            except OSError:
                break
            if not data:
                break
            message = orjson.loads(data)
            op = message.get("op")
            if op == "fork":
                limit = message.get("memory_limit_mb")
                self.fork(str(message.get("replica", "")), int(limit) if limit else None)
            elif op == "wait":
                self.wait(int(message["pid"]), float(message.get("timeout_s", 2.0)))
            elif op == "stop":
                break
        for pid in list(self.children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def main() -> None:
    artifact_dir, fd = Path(sys.argv[1]), int(sys.argv[2])
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctrl = socket.socket(fileno=fd)
    zygote = Zygote(artifact_dir, ctrl)
    try:
        load_s = zygote.load()
    except Exception as exc:
        _send(ctrl, {"op": "failed", "error": f"{type(exc).__name__}: {exc}"[:2000]})
        return
    _send(
        ctrl,
        {"op": "ready", "pid": os.getpid(), "load_s": load_s, "threads": threading.active_count()},
    )
    zygote.serve()


if __name__ == "__main__":
    os.environ.update(SINGLE_THREAD_ENV)
    main()
