"""The local backend: replicas are processes forked from a zygote on this machine.

A zygote per variant holds the loaded model; a replica is forked from it in
milliseconds and talks to the gateway over a Unix socket pair (its *owner*
channel). It also listens on an abstract Unix socket, its opaque address,
where other gateway processes on this machine connect. Memory is the
replica's proportional set size; how a replica died comes from the zygote,
which reaps it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

from zeroserve.errors import NoReplicaAvailable
from zeroserve.sandbox import scrubbed_env
from zeroserve.serving.channel import STREAM_LIMIT, ReplicaChannel
from zeroserve.serving.handle import OnExit, ReplicaHandle, VariantDeployment
from zeroserve.serving.zygote import CONTROL_MAX, SINGLE_THREAD_ENV


def describe_exit(status: dict[str, Any] | None) -> str:
    if not status or not status.get("known"):
        return "exited"
    if status.get("signal"):
        try:
            name = signal.Signals(status["signal"]).name
        except ValueError:
            name = f"signal {status['signal']}"
        return f"was killed by {name}"
    return f"exited with code {status.get('code')}"


class ZygoteHandle:
    """A running zygote process and its control channel (request/reply)."""

    def __init__(self, artifact_dir: Path, name: str, env: dict[str, str] | None = None) -> None:
        self.artifact_dir = artifact_dir
        self.name = name
        self.env = env if env is not None else scrubbed_env(overrides=SINGLE_THREAD_ENV)
        """The zygote's (and so its replicas') environment: no secrets, one thread each."""
        self.process: subprocess.Popen[bytes] | None = None
        self.ctrl: socket.socket | None = None
        self.load_s = 0.0
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Spawn the zygote; call from the event loop thread (see PR_SET_PDEATHSIG)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zeroserve.serving.zygote",
                str(self.artifact_dir),
                str(theirs.fileno()),
            ],
            pass_fds=[theirs.fileno()],
            env=self.env,
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        self.ctrl = ours

    async def wait_ready(self, timeout_s: float) -> None:
        reply = await asyncio.to_thread(self._recv, timeout_s)
        if reply.get("op") != "ready":
            self.stop()
            raise NoReplicaAvailable(
                f"model {self.name} failed to load in its zygote: {reply.get('error', reply)}"
            )
        self.load_s = float(reply.get("load_s", 0.0))

    def _recv(self, timeout_s: float) -> dict[str, Any]:
        assert self.ctrl is not None
        self.ctrl.settimeout(timeout_s)
        try:
            data, fds, _flags, _addr = socket.recv_fds(self.ctrl, CONTROL_MAX, 1)
        except (TimeoutError, OSError) as exc:
            return {"op": "failed", "error": f"zygote did not answer ({exc})"}
        if not data:
            return {"op": "failed", "error": "zygote exited"}
        message: dict[str, Any] = orjson.loads(data)
        if fds:
            message["fd"] = fds[0]
        return message

    def _call(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        with self._lock:
            if self.ctrl is None or not self.alive:
                return {"op": "failed", "error": "zygote is not running"}
            try:
                self.ctrl.send(orjson.dumps(message))
            except OSError as exc:
                return {"op": "failed", "error": f"zygote channel broken ({exc})"}
            return self._recv(timeout_s)

    async def fork(
        self, memory_limit_mb: int | None = None, timeout_s: float = 10.0
    ) -> tuple[int, int]:
        """Fork a replica; returns (pid, fd of the gateway's end of its socket)."""
        message = {"op": "fork", "memory_limit_mb": memory_limit_mb}
        reply = await asyncio.to_thread(self._call, message, timeout_s)
        if reply.get("op") != "forked" or "fd" not in reply:
            raise NoReplicaAvailable(
                f"could not fork a replica of {self.name}: {reply.get('error')}"
            )
        return int(reply["pid"]), int(reply["fd"])

    async def exit_status(self, pid: int, timeout_s: float = 1.0) -> dict[str, Any] | None:
        reply = await asyncio.to_thread(
            self._call, {"op": "wait", "pid": pid, "timeout_s": timeout_s}, timeout_s + 1
        )
        return reply if reply.get("op") == "status" else None

    def stop(self) -> None:
        if self.ctrl is not None:
            with contextlib.suppress(OSError):
                self.ctrl.send(orjson.dumps({"op": "stop"}))
            self.ctrl.close()
            self.ctrl = None
        if self.process is not None:
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=2)


class LocalReplica(ReplicaChannel):
    """A replica forked on this machine: its owner channel, its pid and its zygote."""

    def __init__(
        self,
        pid: int,
        zygote: ZygoteHandle,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_exit: OnExit,
        memory_limit_mb: int | None = None,
    ) -> None:
        super().__init__(reader, writer, on_exit, f"replica {pid}")
        self.pid = pid
        self.zygote = zygote
        self.memory_limit_mb = memory_limit_mb

    def kill(self, reason: str) -> None:
        self.kill_reason = reason
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    async def exit_reason(self) -> str:
        status = await self.zygote.exit_status(self.pid)
        if self.kill_reason:
            return self.kill_reason
        if status is not None and status.get("known") and status.get("code") == OOM_EXIT_CODE:
            return (
                f"went over its memory limit of {self.memory_limit_mb} MB (the kernel refused "
                "it more) and exited"
            )
        return describe_exit(status)

    def memory_mb(self) -> float:
        return proportional_memory_mb(self.pid)

    def info(self) -> dict[str, Any]:
        return {"pid": self.pid}


OOM_EXIT_CODE = 137
"""The worker exits with this code when the kernel refuses it memory (RLIMIT_AS)."""


class LocalBackend:
    """Replicas as processes forked from one zygote per variant."""

    name = "local"

    def __init__(
        self, env_passthrough: list[str] | None = None, default_memory_limit_mb: int | None = None
    ) -> None:
        self.env = scrubbed_env(env_passthrough or (), overrides=SINGLE_THREAD_ENV)
        self.default_memory_limit_mb = default_memory_limit_mb
        self._zygotes: dict[tuple[str, str, str, int], ZygoteHandle] = {}
        self._replicas: dict[tuple[str, str, str, int], list[LocalReplica]] = {}
        self._starting: dict[tuple[str, str, str, int], asyncio.Lock] = {}

    def _zygote(self, variant: VariantDeployment) -> ZygoteHandle:
        zygote = self._zygotes.get(variant.key)
        if zygote is None:
            zygote = self._zygotes[variant.key] = ZygoteHandle(
                variant.artifact_dir, variant.name or variant.spec.model, self.env
            )
        return zygote

    async def prepare(self, variant: VariantDeployment) -> None:
        zygote = self._zygote(variant)
        # One start at a time: a fork sent while the zygote loads would be read as its answer.
        lock = self._starting.setdefault(variant.key, asyncio.Lock())
        async with lock:
            if not zygote.alive:
                zygote.start()
                await zygote.wait_ready(variant.start_timeout_s)

    async def start_replica(self, variant: VariantDeployment, on_exit: OnExit) -> ReplicaHandle:
        await self.prepare(variant)
        zygote = self._zygote(variant)
        limit = variant.spec.memory_limit_mb or self.default_memory_limit_mb
        pid, fd = await zygote.fork(limit)
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
        live = self._replicas.setdefault(variant.key, [])

        def exited(handle: ReplicaHandle) -> None:
            with contextlib.suppress(ValueError):
                live.remove(replica)
            on_exit(handle)

        replica = LocalReplica(pid, zygote, reader, writer, exited, limit)
        await replica.handshake(variant.start_timeout_s)
        live.append(replica)
        return replica

    async def stop_replica(self, handle: ReplicaHandle) -> None:
        handle.retire()

    def replicas(self, variant: VariantDeployment) -> list[ReplicaHandle]:
        return [r for r in self._replicas.get(variant.key, []) if not r.closing]

    async def connect(self, address: str, on_exit: OnExit, timeout_s: float) -> ReplicaHandle:
        # Connected here, not by the event loop: uvloop cannot name an abstract socket,
        # and a Unix connect to a listening socket does not wait.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(min(timeout_s, 1.0))  # blocks only if its backlog is full
            sock.connect(address)
            sock.setblocking(False)
            reader, writer = await asyncio.open_unix_connection(sock=sock, limit=STREAM_LIMIT)
        except OSError as exc:
            sock.close()
            raise NoReplicaAvailable(f"cannot reach replica at {address!r}: {exc}") from exc
        channel = ReplicaChannel(reader, writer, on_exit, "replica")
        await channel.handshake(timeout_s)
        return channel

    def is_warm(self, variant: VariantDeployment) -> bool:
        zygote = self._zygotes.get(variant.key)
        return zygote is not None and zygote.alive

    def evict(self, variant: VariantDeployment) -> None:
        zygote = self._zygotes.get(variant.key)
        if zygote is not None:
            zygote.stop()

    async def release(self, variant: VariantDeployment) -> None:
        zygote = self._zygotes.pop(variant.key, None)
        self._replicas.pop(variant.key, None)
        self._starting.pop(variant.key, None)
        if zygote is not None:
            await asyncio.to_thread(zygote.stop)

    def describe(self, variant: VariantDeployment) -> dict[str, Any]:
        zygote = self._zygotes.get(variant.key)
        return {
            "backend": self.name,
            "zygote_alive": zygote is not None and zygote.alive,
            "zygote_load_s": round(zygote.load_s, 3) if zygote is not None else 0.0,
        }


def proportional_memory_mb(pid: int) -> float:
    """The replica's proportional set size: its own pages plus its share of the zygote's."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as fh:
            for line in fh:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return 0.0
    return 0.0
