"""The monitoring side of the server in one object: prediction log, live windows,
shadow queue, rollout manager, and the reports built from them.

``MonitorService.install`` is the whole wiring the composition root needs (see
``gateway/monitor_api.py`` for the routes); the data-plane hooks are methods here
(``after_answer``) so the request path calls one function.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from zeroserve.control.assignment import canary_failure
from zeroserve.control.rollout_manager import RolloutManager
from zeroserve.control.rollout_stats import OutcomeRecorder
from zeroserve.errors import BadRequest, NotFound
from zeroserve.monitor.abtest import ab_report
from zeroserve.monitor.drift import DriftThresholds
from zeroserve.monitor.evaluate import Requirement, evaluation_key, gate
from zeroserve.monitor.live import LiveWindows
from zeroserve.monitor.predlog import PredictionLog
from zeroserve.monitor.profile import PROFILE_FILE, Profile, write_profile
from zeroserve.monitor.query import connect
from zeroserve.monitor.report import drift_report
from zeroserve.monitor.shadow import ShadowComparison
from zeroserve.registry.inspection import PACKAGE_TIMEOUT_S, limits_from
from zeroserve.registry.registry import Registry
from zeroserve.sandbox import run_sandboxed
from zeroserve.settings import Settings
from zeroserve.types import Arrays, EndpointSpec, Signature, Stage

log = logging.getLogger(__name__)
FEEDBACK_RETENTION_S = 7 * 86400


class MonitorService:
    def __init__(
        self,
        registry: Registry,
        apply: Any,
        *,
        metrics_registry: CollectorRegistry | None = None,
        clock: Any = time.time,
        settings: Settings | None = None,
    ) -> None:
        self.registry = registry
        self.settings = settings or Settings()
        self.clock = clock
        self.predlog = PredictionLog(registry.store, clock=clock)
        self.live = LiveWindows(clock=clock)
        self.recorder = OutcomeRecorder()
        self.rollouts = RolloutManager(
            registry, apply, self.recorder, clock=clock, drift=self.canary_drift
        )
        self.comparisons: dict[tuple[str, str], ShadowComparison] = {}
        self.shadow_dropped: Any = lambda: 0
        """Shadow copies the data plane dropped (set by the app: the gateway's counter)."""
        self._profiles: dict[tuple[str, int], Profile | None] = {}
        r = metrics_registry
        self.drift_gauge = Gauge(
            "zeroserve_drift_score",
            "Drift of a feature's live window from the version's reference (normed "
            "Wasserstein or Jensen-Shannon)",
            ["endpoint", "variant", "feature"],
            registry=r,
        )
        self.drifted_gauge = Gauge(
            "zeroserve_drift_features_drifted",
            "Features over their drift threshold",
            ["endpoint", "variant"],
            registry=r,
        )
        self.log_dropped = Gauge(
            "zeroserve_prediction_log_dropped", "Logged requests dropped (buffer full)", registry=r
        )
        registry.on_register.append(write_profile)

    # lifecycle
    def start(self) -> None:
        self.predlog.start()

    async def stop(self) -> None:
        await asyncio.to_thread(self.predlog.stop)

    def managers(self) -> list[tuple[str, float, Any]]:
        """Controller managers: (name, interval_s, coroutine function)."""
        return [("rollouts", 0.25, self.rollouts.tick), ("drift-gauges", 60.0, self.refresh_gauges)]

    # the request path
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
        """Everything monitoring needs from one answered request. Appends only."""
        self.recorder.observe(spec.name, variant, status, latency_ms, outputs)
        if outputs is not None:
            self.live.observe(spec.name, variant, inputs, outputs)
            rate = spec.monitoring.log_sample_rate
            if rate > 0:
                self.predlog.record(
                    spec.name, variant, request_id, inputs, outputs, latency_ms,
                    status=status, version=version, signature=signature, rate=rate,
                )  # fmt: skip

    def after_error(
        self, endpoint: str, variant: str, status: int, latency_ms: float, cause: str | None
    ) -> None:
        # A model that raises is the variant's failure (a 422 to the client); bad input
        # (invalid_input, 4xx before the model runs) is not.
        failed = 500 if canary_failure(status, cause) else status
        self.recorder.observe(endpoint, variant, failed, latency_ms, None)

    def shadow_compared(
        self, endpoint: str, shadow: str, primary: Arrays, shadow_outputs: Arrays
    ) -> None:
        self._comparison(endpoint, shadow).observe(primary, shadow_outputs)

    def shadow_failed(self, endpoint: str, shadow: str) -> None:
        self._comparison(endpoint, shadow).failed()

    def _comparison(self, endpoint: str, shadow: str) -> ShadowComparison:
        key = (endpoint, shadow)
        found = self.comparisons.get(key)
        if found is None:
            found = self.comparisons[key] = ShadowComparison()
        return found

    def add_peer_report(self, message: dict[str, Any]) -> None:
        """A secondary process's deltas (``PeerMonitor.report``)."""
        self.recorder.add_snapshot(message.get("rollouts", {}))
        for endpoint, shadow, data in message.get("shadows", []):
            self._comparison(endpoint, shadow).merge(ShadowComparison.from_dict(data))

    # profiles and drift
    def profile(self, model: str, version: int) -> Profile | None:
        key = (model, version)
        if key not in self._profiles:
            store_key = f"models/{model}/{version}/{PROFILE_FILE}"
            if self.registry.store.exists(store_key):
                with self.registry.store.open(store_key) as fh:
                    self._profiles[key] = Profile.from_dict(json.loads(fh.read()))
            else:
                self._profiles[key] = None
        return self._profiles[key]

    def watch(self, spec: EndpointSpec) -> None:
        """Keep live windows for every variant of ``spec`` that has a profile."""
        for v in spec.variants:
            profile = self.profile(v.model, v.version)
            if profile is not None:
                version = self.registry.get_version(v.model, v.version)
                self.live.watch(spec.name, v.name, profile, version.signature)

    async def canary_drift(self, endpoint: str, variant: str) -> tuple[str, ...]:
        spec = await asyncio.to_thread(self.registry.get_endpoint, endpoint)
        await asyncio.to_thread(self.watch, spec)
        await asyncio.to_thread(self.live.fold)
        t = DriftThresholds(
            wasserstein=spec.monitoring.drift_threshold,
            jensen_shannon=spec.monitoring.drift_threshold,
        )
        results = await asyncio.to_thread(self.live.drift, endpoint, variant, t)
        return tuple(r.feature for r in results if r.drifted)

    async def refresh_gauges(self) -> None:
        specs = await asyncio.to_thread(self.registry.list_endpoints)
        for spec in specs:
            await asyncio.to_thread(self.watch, spec)
        await asyncio.to_thread(self.live.fold)
        for endpoint, variant in self.live.watched():
            results = await asyncio.to_thread(self.live.drift, endpoint, variant)
            for r in results:
                self.drift_gauge.labels(endpoint, variant, r.feature).set(r.score)
            self.drifted_gauge.labels(endpoint, variant).set(sum(r.drifted for r in results))
        self.log_dropped.set(self.predlog.stats.dropped)

    def drift(self, endpoint: str, window_s: float, variant: str | None) -> dict[str, Any]:
        spec = self.registry.get_endpoint(endpoint)
        variants = [v for v in spec.variants if variant in (None, v.name)]
        if not variants:
            raise NotFound(f"endpoint {endpoint!r} has no variant {variant!r}")
        self.predlog.flush()
        now = self.clock()
        t = DriftThresholds(
            wasserstein=spec.monitoring.drift_threshold,
            jensen_shannon=spec.monitoring.drift_threshold,
        )
        reports = []
        for v in variants:
            profile = self.profile(v.model, v.version)
            if profile is None:
                reports.append(
                    {"variant": v.name, "error": f"{v.model}:{v.version} has no reference profile; "
                     "register it with --sample to get drift reports"}
                )  # fmt: skip
                continue
            reports.append(
                drift_report(profile, self.registry.store, endpoint, variant=v.name,
                             since_ts=now - window_s, until_ts=now + 1, thresholds=t)
            )  # fmt: skip
        return {"endpoint": endpoint, "window_s": window_s, "variants": reports}

    # registry gates
    async def evaluate(self, model: str, version: int) -> dict[str, float]:
        """Score a version on the model's evaluation set, in a sandboxed child."""
        key = evaluation_key(model)
        if not await asyncio.to_thread(self.registry.store.exists, key):
            raise NotFound(
                f"model {model!r} has no evaluation set; upload one with "
                f"PUT /api/models/{model}/evaluation (an .npz with arrays x and y)"
            )
        info = await asyncio.to_thread(self.registry.get_version, model, version)
        artifact = await asyncio.to_thread(self.registry.artifact_dir, info)
        evaluation = await asyncio.to_thread(self.registry.store.materialize, key)
        with tempfile.TemporaryDirectory(prefix="zs-evaluate-") as work:
            request = json.dumps({"artifact_dir": str(artifact), "evaluation": str(evaluation)})
            outcome = await run_sandboxed(
                [sys.executable, "-m", "zeroserve.monitor.evaluate", request],
                cwd=Path(work),
                limits=limits_from(self.settings),
                extra_env=self.settings.sandbox_env_passthrough,
                timeout_s=PACKAGE_TIMEOUT_S,
                user=self.settings.sandbox_user,
            )
        lines = outcome.stdout.decode(errors="replace").strip().splitlines()
        reply: dict[str, Any] = (
            json.loads(lines[-1]) if lines else {"ok": False, "error": "no output"}
        )
        if not reply["ok"]:
            raise BadRequest(f"{model}:{version} could not be evaluated: {reply['error']}")
        return dict(reply["metrics"])

    async def gate(self, model: str, version: int, requirements: list[str]) -> dict[str, Any]:
        reqs = [Requirement.parse(r) for r in requirements]
        candidate = await self.evaluate(model, version)
        info = await asyncio.to_thread(self.registry.get_model, model)
        current = next((v for v in info.versions if v.stage == Stage.PRODUCTION), None)
        theirs = None
        if current is not None and current.version != version:
            theirs = await self.evaluate(model, current.version)
        ok, reasons = gate(candidate, theirs, reqs)
        return {
            "model": model,
            "candidate": {"version": version, "metrics": candidate},
            "production": None
            if theirs is None
            else {"version": current.version, "metrics": theirs},  # type: ignore[union-attr]
            "passed": ok,
            "reasons": reasons,
        }

    # feedback and A/B
    def feedback(self, endpoint: str, request_id: str, outcomes: list[Any]) -> dict[str, Any]:
        self.registry.get_endpoint(endpoint)
        known = self.predlog.recent.get(request_id)
        if (known is None or known[0] != endpoint) and not self._logged(endpoint, request_id):
            raise NotFound(
                f"unknown or expired request id {request_id!r} for endpoint {endpoint!r}: "
                "feedback joins requests in the prediction log (raise the endpoint's "
                "log_sample_rate to log more of them; ids expire after 7 days)"
            )
        for row, outcome in enumerate(outcomes):
            value = (
                float(outcome)
                if isinstance(outcome, int | float) and not isinstance(outcome, bool)
                else None
            )
            label = int(outcome) if isinstance(outcome, bool) else outcome
            self.predlog.record_feedback(endpoint, request_id, label, value, row=row)
        return {"request_id": request_id, "accepted": len(outcomes)}

    def _logged(self, endpoint: str, request_id: str) -> bool:
        self.predlog.flush()
        try:
            con = connect(self.registry.store, endpoint, self.clock() - FEEDBACK_RETENTION_S)
        except NotFound:
            return False
        try:
            found = con.execute(
                "SELECT count(*) FROM predictions WHERE request_id = ?", [request_id]
            ).fetchone()
        finally:
            con.close()
        return bool(found and found[0])

    def ab(self, endpoint: str, window_s: float) -> dict[str, Any]:
        spec = self.registry.get_endpoint(endpoint)
        self.predlog.flush()
        con = connect(self.registry.store, endpoint, self.clock() - window_s)
        try:
            counts = dict(
                con.execute(
                    "SELECT variant, count(DISTINCT request_id) FROM predictions GROUP BY 1"
                ).fetchall()
            )
            cols = {d[0] for d in con.execute("SELECT * FROM predictions LIMIT 0").description}
            label = "p.label" if "label" in cols else "NULL"
            score = "p.score" if "score" in cols else "NULL"
            rows = con.execute(
                f"SELECT p.variant, {label}, {score}, f.label, f.value FROM predictions p "
                "JOIN feedback f ON p.request_id = f.request_id AND p.row = f.row"
            ).fetchall()
        finally:
            con.close()
        arms: dict[str, dict[str, Any]] = {}
        by: dict[str, list[tuple[Any, ...]]] = {}
        for r in rows:
            by.setdefault(str(r[0]), []).append(r)
        for variant, items in by.items():
            if items[0][1] is not None:
                arms[variant] = {
                    "y": np.array([str(i[3]) for i in items]),
                    "label": np.array([str(i[1]) for i in items]),
                    "score": None
                    if items[0][2] is None
                    else np.array([float(i[2]) for i in items]),
                }
                if arms[variant]["score"] is None:
                    arms[variant].pop("score")
            else:
                arms[variant] = {
                    "y": np.array([math.nan if i[4] is None else float(i[4]) for i in items]),
                    "prediction": np.array([float(i[2]) for i in items]),
                }
        order = [v.name for v in spec.variants if v.name in arms]
        arms = {v: arms[v] for v in order + [v for v in arms if v not in order]}
        report = ab_report(
            arms,
            {str(k): int(v) for k, v in counts.items()},
            {v.name: v.weight for v in spec.variants},
        )
        report["endpoint"] = endpoint
        report["joined_rows"] = len(rows)
        return report

    def shadow(self, endpoint: str) -> dict[str, Any]:
        spec = self.registry.get_endpoint(endpoint)
        comparisons = {
            shadow: {**cmp.report(), "dropped": int(self.shadow_dropped())}
            for (ep, shadow), cmp in self.comparisons.items()
            if ep == endpoint
        }
        return {
            "endpoint": endpoint,
            "shadow": spec.shadow.name if spec.shadow else None,
            "rate": spec.monitoring.shadow_rate,
            "comparisons": comparisons,
        }
