"""Per-variant outcomes for endpoints under a rollout, collected on the request path.

``observe`` only appends (a dict lookup and a list append; nothing for endpoints
without a rollout). ``take`` folds what was appended into ``ArmStats`` and resets,
so every gateway process can send its deltas to the control process, which adds
them up (``add``) before the rollout manager reads them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zeroserve.control.rollout import ArmStats
from zeroserve.outputs import label_and_score
from zeroserve.types import Arrays

Pending = list[tuple[str, int, float, Arrays | None]]


class OutcomeRecorder:
    def __init__(self) -> None:
        self._pending: dict[str, Pending] = {}
        self._folded: dict[str, dict[str, ArmStats]] = {}

    def track(self, endpoint: str) -> None:
        self._pending.setdefault(endpoint, [])
        self._folded.setdefault(endpoint, {})

    def untrack(self, endpoint: str) -> None:
        self._pending.pop(endpoint, None)
        self._folded.pop(endpoint, None)

    @property
    def endpoints(self) -> list[str]:
        return list(self._pending)

    def observe(
        self, endpoint: str, variant: str, status: int, latency_ms: float, outputs: Arrays | None
    ) -> None:
        """Record one answer (hot path). Cheap no-op for endpoints not under a rollout."""
        pending = self._pending.get(endpoint)
        if pending is not None:
            pending.append((variant, status, latency_ms, outputs))

    def add(self, endpoint: str, deltas: dict[str, ArmStats]) -> None:
        """Add another process's deltas (see ``snapshot``)."""
        folded = self._folded.get(endpoint)
        if folded is None:
            return
        for variant, arm in deltas.items():
            folded.setdefault(variant, ArmStats()).merge(arm)

    def take(self, endpoint: str) -> dict[str, ArmStats]:
        """Everything observed (and added) since the last take, per variant."""
        pending = self._pending.get(endpoint)
        if pending is None:
            return {}
        self._pending[endpoint] = []
        folded = self._folded.get(endpoint, {})
        self._folded[endpoint] = {}
        by_variant: dict[str, Pending] = {}
        for item in pending:
            by_variant.setdefault(item[0], []).append(item)
        for variant, items in by_variant.items():
            arm = folded.setdefault(variant, ArmStats())
            statuses = np.fromiter((i[1] for i in items), dtype=np.int64, count=len(items))
            latencies = np.fromiter((i[2] for i in items), dtype=np.float64, count=len(items))
            labels: list[np.ndarray[Any, Any]] = []
            scores: list[np.ndarray[Any, Any]] = []
            for _, status, _, outputs in items:
                if outputs is None or status >= 400:
                    continue
                label, score = label_and_score(outputs)
                if label is not None:
                    labels.append(np.asarray(label).astype(str))
                if score is not None:
                    scores.append(np.asarray(score, dtype=np.float64))
            arm.observe(
                errors=int((statuses >= 500).sum()),
                latencies_ms=latencies,
                scores=np.concatenate(scores) if scores else None,
                labels=np.concatenate(labels) if labels else None,
            )
        return folded

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Every tracked endpoint's deltas as JSON (what a secondary sends)."""
        return {
            endpoint: {v: arm.to_dict() for v, arm in self.take(endpoint).items()}
            for endpoint in self.endpoints
        }

    def add_snapshot(self, snapshot: dict[str, dict[str, Any]]) -> None:
        for endpoint, arms in snapshot.items():
            self.add(endpoint, {v: ArmStats.from_dict(d) for v, d in arms.items()})
