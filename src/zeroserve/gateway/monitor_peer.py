"""Monitoring in a secondary gateway process: its own prediction-log files, and the
outcomes and shadow comparisons it saw, sent to the control process as deltas.

The control process adds them (``MonitorService.add_peer_report``), so rollouts
judge every process's traffic and shadow reports cover all of it.
"""

from __future__ import annotations

import random
from typing import Any

from zeroserve.control.assignment import canary_failure
from zeroserve.control.rollout_stats import OutcomeRecorder
from zeroserve.monitor.predlog import PredictionLog
from zeroserve.monitor.shadow import ShadowComparison
from zeroserve.registry.store import ArtifactStore
from zeroserve.types import Arrays, EndpointSpec, Signature


class PeerMonitor:
    """The ``MonitorHook`` of a secondary process."""

    def __init__(self, artifact_url: str) -> None:
        self.predlog = PredictionLog(ArtifactStore(artifact_url), draw=random.random)
        self.recorder = OutcomeRecorder()
        self.comparisons: dict[tuple[str, str], ShadowComparison] = {}

    def after_answer(
        self,
        spec: EndpointSpec,
        variant: str,
        version: int,
        signature: Signature,
        request_id: str,
        inputs: Arrays,
        outputs: Arrays | None,
        status: int,
        latency_ms: float,
    ) -> None:
        if spec.monitoring.canary is not None:
            self.recorder.track(spec.name)
            self.recorder.observe(spec.name, variant, status, latency_ms, outputs)
        rate = spec.monitoring.log_sample_rate
        if rate > 0 and outputs is not None:
            self.predlog.record(
                spec.name, variant, request_id, inputs, outputs, latency_ms,
                status=status, version=version, signature=signature, rate=rate,
            )  # fmt: skip

    def after_error(
        self, endpoint: str, variant: str, status: int, latency_ms: float, cause: str | None
    ) -> None:
        failed = 500 if canary_failure(status, cause) else status
        self.recorder.observe(endpoint, variant, failed, latency_ms, None)

    def shadow_compared(
        self, endpoint: str, shadow: str, primary: Arrays, shadow_outputs: Arrays
    ) -> None:
        self.comparisons.setdefault((endpoint, shadow), ShadowComparison()).observe(
            primary, shadow_outputs
        )

    def shadow_failed(self, endpoint: str, shadow: str) -> None:
        self.comparisons.setdefault((endpoint, shadow), ShadowComparison()).failed()

    def report(self) -> dict[str, Any] | None:
        """Deltas since the last report (``op: monitor``), or None when there are none."""
        rollouts = {k: v for k, v in self.recorder.snapshot().items() if v}
        shadows = [[ep, sh, cmp.to_dict()] for (ep, sh), cmp in self.comparisons.items()]
        self.comparisons = {}
        if not rollouts and not shadows:
            return None
        return {"op": "monitor", "rollouts": rollouts, "shadows": shadows}

    def start(self) -> None:
        self.predlog.start()

    def stop(self) -> None:
        self.predlog.stop()
