"""In-process stand-ins for replicas and backends: a model is a plain function."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from zeroserve.serving.handle import NotSent, OnExit, ReplicaHandle, ReplyMeta, VariantDeployment
from zeroserve.types import Arrays

Model = Callable[[Arrays], Any]


def doubling(arrays: Arrays) -> Arrays:
    """Each row's answer is twice its input: easy to check that nobody got another's row."""
    return {"y": next(iter(arrays.values())) * 2}


class FakeReplica:
    """A ``ReplicaHandle`` whose model runs in-process; records each batch it was sent."""

    def __init__(self, model: Model = doubling, on_exit: OnExit | None = None) -> None:
        self.model = model
        self.on_exit = on_exit
        self.address = f"fake-{id(self)}"
        self.busy = False
        self.started_at = self.last_used = time.monotonic()
        self.closing = False
        self.retired = False
        self.killed: str | None = None
        self.batches: list[int] = []
        self._pending: set[asyncio.Future[Any]] = set()

    async def predict(self, arrays: Arrays) -> tuple[ReplyMeta, Arrays]:
        if self.closing:
            raise NotSent("retired")
        self.batches.append(len(next(iter(arrays.values()))))
        await asyncio.sleep(0)
        outputs = self.model(arrays)
        if isinstance(outputs, asyncio.Future):  # a model that never answers (hung)
            self._pending.add(outputs)
            return await outputs  # type: ignore[no-any-return]
        if isinstance(outputs, str):
            return {"op": "error", "message": outputs}, {}
        return {"op": "result", "compute_s": 0.001}, outputs

    def retire(self) -> None:
        self.retired = True
        self.closing = True

    def close(self) -> None:
        if not self.closing or self.on_exit is not None:
            self.closing = True
            on_exit, self.on_exit = self.on_exit, None
            if on_exit is not None:
                on_exit(self)

    def fail_pending(self, exc: Exception) -> None:
        for fut in self._pending:
            if not fut.done():
                fut.set_exception(exc)

    @property
    def has_pending(self) -> bool:
        return any(not f.done() for f in self._pending)

    def kill(self, reason: str) -> None:
        self.killed = reason
        self.close()

    async def exit_reason(self) -> str:
        return self.killed or "stopped"

    def memory_mb(self) -> float:
        return 0.0

    def info(self) -> dict[str, Any]:
        return {"fake": True}


class FakeBackend:
    """A backend whose replicas are ``FakeReplica``s; ``prepare`` can wait or fail on cue."""

    name = "fake"

    def __init__(self, model: Model = doubling) -> None:
        self.model = model
        self.started: list[FakeReplica] = []
        self.prepare_gate: dict[str, asyncio.Event] = {}
        self.prepare_error: dict[str, Exception] = {}
        self.released: list[tuple[str, str, str, int]] = []

    async def prepare(self, variant: VariantDeployment) -> None:
        gate = self.prepare_gate.get(variant.endpoint)
        if gate is not None:
            await gate.wait()
        error = self.prepare_error.get(variant.endpoint)
        if error is not None:
            raise error

    async def start_replica(self, variant: VariantDeployment, on_exit: OnExit) -> ReplicaHandle:
        await self.prepare(variant)
        replica = FakeReplica(self.model, on_exit)
        self.started.append(replica)
        return replica

    async def stop_replica(self, handle: ReplicaHandle) -> None:
        handle.retire()

    def replicas(self, variant: VariantDeployment) -> list[ReplicaHandle]:
        return [r for r in self.started if not r.closing]

    async def connect(self, address: str, on_exit: OnExit, timeout_s: float) -> ReplicaHandle:
        return FakeReplica(self.model, on_exit)

    def is_warm(self, variant: VariantDeployment) -> bool:
        return True

    def evict(self, variant: VariantDeployment) -> None:
        pass

    async def release(self, variant: VariantDeployment) -> None:
        self.released.append(variant.key)

    def describe(self, variant: VariantDeployment) -> dict[str, Any]:
        return {"backend": self.name}


def rows(n: int, width: int = 3, start: float = 0.0) -> Arrays:
    return {"x": (np.arange(n * width, dtype=np.float32) + start).reshape(n, width)}
