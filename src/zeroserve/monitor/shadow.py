"""Shadow traffic: a bounded queue off the request path and an output comparison.

The data plane offers a copy of each sampled request to ``ShadowQueue.offer``,
which never waits: when the queue is full the copy is dropped and counted. A few
worker tasks send copies to the shadow variant and compare its answer with the
primary's, per request, in a ``ShadowComparison``. A shadow that fails or is slow
costs the primary nothing but the append.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zeroserve.outputs import label_and_score
from zeroserve.sketch import QuantileSketch
from zeroserve.stats import wilson
from zeroserve.types import Arrays

log = logging.getLogger(__name__)
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


@dataclass
class ShadowComparison:
    """How a shadow's outputs compare with the primary's on the same requests."""

    requests: int = 0
    rows: int = 0
    labelled: int = 0
    agree: int = 0
    scored: int = 0
    abs_diff_sum: float = 0.0
    diffs: QuantileSketch = field(default_factory=QuantileSketch)
    shadow_errors: int = 0
    mismatched: int = 0  # answers whose rows could not be paired

    def observe(self, primary: Arrays, shadow: Arrays) -> None:
        self.requests += 1
        p_label, p_score = label_and_score(primary)
        s_label, s_score = label_and_score(shadow)
        n = None
        if p_label is not None and s_label is not None:
            if len(p_label) != len(s_label):
                self.mismatched += 1
                return
            n = len(p_label)
            self.labelled += n
            self.agree += int(
                np.sum(np.asarray(p_label).astype(str) == np.asarray(s_label).astype(str))
            )
        if p_score is not None and s_score is not None and len(p_score) == len(s_score):
            diff = np.asarray(s_score, dtype=np.float64) - np.asarray(p_score, dtype=np.float64)
            n = len(diff)
            self.scored += n
            self.abs_diff_sum += float(np.abs(diff).sum())
            self.diffs.add(diff)
        self.rows += n or 0

    def failed(self) -> None:
        self.shadow_errors += 1

    def merge(self, other: ShadowComparison) -> None:
        for name in (
            "requests",
            "rows",
            "labelled",
            "agree",
            "scored",
            "shadow_errors",
            "mismatched",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.abs_diff_sum += other.abs_diff_sum
        self.diffs.merge(other.diffs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "rows": self.rows,
            "labelled": self.labelled,
            "agree": self.agree,
            "scored": self.scored,
            "abs_diff_sum": self.abs_diff_sum,
            "diffs": self.diffs.to_dict(),
            "shadow_errors": self.shadow_errors,
            "mismatched": self.mismatched,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShadowComparison:
        out = cls(**{k: v for k, v in data.items() if k != "diffs"})
        out.diffs = QuantileSketch.from_dict(data["diffs"])
        return out

    def report(self) -> dict[str, Any]:
        """Agreement rate (with a 95% interval), mean |score difference| and the
        distribution of differences (shadow minus primary)."""
        out: dict[str, Any] = {
            "requests_compared": self.requests,
            "rows_compared": self.rows,
            "shadow_errors": self.shadow_errors,
            "unpaired": self.mismatched,
        }
        if self.labelled:
            low, high = wilson(self.agree, self.labelled)
            out["label_agreement"] = {
                "rate": self.agree / self.labelled,
                "ci95": [low, high],
                "rows": self.labelled,
            }
        if self.scored:
            qs = self.diffs.quantiles(np.array(QUANTILES))
            out["score_difference"] = {
                "mean_abs": self.abs_diff_sum / self.scored,
                "mean": self.diffs.moments.mean,
                "std": self.diffs.moments.std,
                "quantiles": {
                    f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs, strict=True)
                },
                "rows": self.scored,
            }
        return out


@dataclass
class ShadowJob:
    endpoint: str
    shadow: str
    inputs: Arrays
    primary: Arrays


Send = Callable[[str, str, Arrays], Awaitable[Arrays]]


@dataclass
class ShadowQueue:
    """A bounded queue of shadow copies with a per-shadow sample rate."""

    send: Send
    max_queue: int = 1024
    workers: int = 4
    rates: dict[tuple[str, str], float] = field(default_factory=dict)
    draw: Callable[[], float] = random.random
    comparisons: dict[tuple[str, str], ShadowComparison] = field(default_factory=dict)
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)
    sent: int = 0

    def __post_init__(self) -> None:
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(self.max_queue)
        self._tasks: list[asyncio.Task[None]] = []

    def set_rate(self, endpoint: str, shadow: str, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError("a shadow rate is in [0, 1]")
        self.rates[(endpoint, shadow)] = rate

    def offer(self, endpoint: str, shadow: str, inputs: Arrays, primary: Arrays) -> bool:
        """Queue a copy if sampled and there is room. Never waits, never raises."""
        key = (endpoint, shadow)
        rate = self.rates.get(key, 1.0)
        if rate <= 0.0 or (rate < 1.0 and self.draw() >= rate):
            return False
        try:
            self._queue.put_nowait(ShadowJob(endpoint, shadow, inputs, primary))
        except asyncio.QueueFull:
            self.dropped[key] = self.dropped.get(key, 0) + 1
            return False
        return True

    def comparison(self, endpoint: str, shadow: str) -> ShadowComparison:
        key = (endpoint, shadow)
        found = self.comparisons.get(key)
        if found is None:
            found = self.comparisons[key] = ShadowComparison()
        return found

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._work()) for _ in range(self.workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def drain(self) -> None:
        await self._queue.join()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            cmp = self.comparison(job.endpoint, job.shadow)
            try:
                answer = await self.send(job.endpoint, job.shadow, job.inputs)
                cmp.observe(job.primary, answer)
                self.sent += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failing shadow is counted, never propagated
                cmp.failed()
                log.debug("shadow %s/%s failed: %s", job.endpoint, job.shadow, exc)
            finally:
                self._queue.task_done()

    def report(self, endpoint: str) -> dict[str, Any]:
        return {
            shadow: {
                **cmp.report(),
                "dropped": self.dropped.get((ep, shadow), 0),
                "rate": self.rates.get((ep, shadow), 1.0),
            }
            for (ep, shadow), cmp in self.comparisons.items()
            if ep == endpoint
        }
