"""What a pool needs from a replica and from the place replicas run.

A pool never knows whether a replica is a process forked on this machine or
one on a Ray node: it holds ``ReplicaHandle``s and asks a ``Backend`` for new
ones. ``backends/`` implements these protocols; serving never imports it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from zeroserve.types import Arrays, VariantSpec

ReplyMeta = dict[str, Any]
"""A replica's answer header: ``op`` ("result" or "error"), ``compute_s``, ``message``."""


class ReplicaHandle(Protocol):
    """The gateway's handle on one replica (a worker process hosting one runtime)."""

    address: str
    """Opaque; another gateway process can ``Backend.connect`` to it."""
    busy: bool
    last_used: float
    started_at: float
    closing: bool
    """Takes no new work (retired, closed or dead)."""
    retired: bool
    """Stopped on purpose (scale-down), as opposed to died."""

    async def predict(self, arrays: Arrays) -> tuple[ReplyMeta, Arrays]:
        """Raises ``NotSent`` if the handle is closing and nothing was sent."""
        ...

    def retire(self) -> None:
        """Take no more work; the pool closes the handle after the current batch."""

    def close(self) -> None: ...

    def fail_pending(self, exc: Exception) -> None:
        """Fail every request this handle holds."""

    @property
    def has_pending(self) -> bool: ...

    def kill(self, reason: str) -> None:
        """Stop the replica at once; ``reason`` becomes its exit reason."""

    async def exit_reason(self) -> str:
        """How a dead replica died, for the requests it held ("exited with code 3")."""
        ...

    def memory_mb(self) -> float:
        """Memory the replica uses (its share of pages it holds with others)."""
        ...

    def info(self) -> dict[str, Any]:
        """Backend details for ``describe`` (a local replica's pid)."""
        ...


OnExit = Callable[[ReplicaHandle], None]


class NotSent(Exception):
    """The replica took no work (it was retired meanwhile): the batch can go to another."""


@dataclass(frozen=True)
class VariantDeployment:
    """One variant of one endpoint, as a backend needs it to run replicas."""

    endpoint: str
    spec: VariantSpec
    artifact_dir: Path
    start_timeout_s: float = 60.0
    name: str = ""
    """For messages: "fraud v3"."""

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.endpoint, self.spec.name, self.spec.model, self.spec.version)


class Backend(Protocol):
    """Where replicas run: processes forked here (``local``) or on a cluster (``ray``)."""

    name: str

    async def prepare(self, variant: VariantDeployment) -> None:
        """Get ready to start replicas quickly (load the model once); raise if it cannot load."""

    async def start_replica(self, variant: VariantDeployment, on_exit: OnExit) -> ReplicaHandle:
        """A new ready replica; ``on_exit`` is called once when its channel closes."""
        ...

    async def stop_replica(self, handle: ReplicaHandle) -> None:
        """Retire a replica: it finishes its current batch, then exits."""

    def replicas(self, variant: VariantDeployment) -> list[ReplicaHandle]:
        """The live replicas this backend runs for the variant."""
        ...

    async def connect(self, address: str, on_exit: OnExit, timeout_s: float) -> ReplicaHandle:
        """A channel of this process's own to a running replica (secondary gateways)."""
        ...

    def is_warm(self, variant: VariantDeployment) -> bool:
        """Whether the variant holds resources that make a start fast (a zygote)."""
        ...

    def evict(self, variant: VariantDeployment) -> None:
        """Free what makes starts fast; the next start rebuilds it (slower, correct)."""

    async def release(self, variant: VariantDeployment) -> None:
        """The variant is gone: free everything it holds."""

    def describe(self, variant: VariantDeployment) -> dict[str, Any]: ...
