"""The rollout manager: starts, ticks, promotes and rolls back canary rollouts.

Its ``tick`` is a controller manager (``Controller.extra_managers``): each tick it
adds the outcomes every gateway process recorded since the last tick to the
rollout's per-arm stats, asks ``rollout.decide`` what to do, and applies that by
writing weights to the registry and the controller. State lives in
``zs_rollouts`` (stats, step, looks, decisions), written on every tick that
changes it, so a restarted server resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import select

from zeroserve.control.rollout import ArmStats, RolloutContext, RolloutPlan, Verdict, decide
from zeroserve.control.rollout_stats import OutcomeRecorder
from zeroserve.control.rollout_tables import RolloutRow
from zeroserve.control.traffic import reweigh, with_variant
from zeroserve.errors import BadRequest, Conflict, NotFound
from zeroserve.registry.registry import Registry
from zeroserve.stats import finite
from zeroserve.types import EndpointSpec, Stage

log = logging.getLogger(__name__)
RUNNING = "running"
MAX_DECISIONS = 200

Apply = Callable[[EndpointSpec], Awaitable[Any]]
DriftCheck = Callable[[str, str], Awaitable[tuple[str, ...]]]


def row_dict(row: RolloutRow) -> dict[str, Any]:
    return finite(_row_dict(row))  # type: ignore[no-any-return]


def _row_dict(row: RolloutRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "endpoint": row.endpoint,
        "baseline": row.baseline,
        "canary": row.canary,
        "to": f"{row.canary_model}:{row.canary_version}",
        "plan": row.plan,
        "state": row.state,
        "step": row.step,
        "canary_weight": RolloutPlan.from_dict(row.plan).steps[
            min(row.step, len(row.plan["steps"]) - 1)
        ]
        if row.state == RUNNING
        else (100.0 if row.state == "promoted" else 0.0),
        "started_at": row.started_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
        "reason": row.reason,
        "fired": row.fired,
        "requests": {
            arm: int(row.stats.get(arm, {}).get("requests", 0)) for arm in ("baseline", "canary")
        },
        "errors": {
            arm: int(row.stats.get(arm, {}).get("errors", 0)) for arm in ("baseline", "canary")
        },
        "decisions": row.decisions,
    }


class RolloutManager:
    def __init__(
        self,
        registry: Registry,
        apply: Apply,
        recorder: OutcomeRecorder,
        *,
        clock: Callable[[], float] = time.time,
        drift: DriftCheck | None = None,
    ) -> None:
        self.registry = registry
        self.apply = apply
        self.recorder = recorder
        self.clock = clock
        self.drift = drift
        self._arms: dict[int, tuple[ArmStats, ArmStats]] = {}
        self._lock = asyncio.Lock()
        self.canaries: dict[str, tuple[str, str]] = {}
        """endpoint -> (baseline, canary) of running rollouts, for the data plane's retry."""

    # queries
    def _running(self, endpoint: str) -> RolloutRow | None:
        with self.registry.session() as s:
            return s.scalars(
                select(RolloutRow).where(
                    RolloutRow.endpoint == endpoint, RolloutRow.state == RUNNING
                )
            ).first()

    def status(self, endpoint: str) -> dict[str, Any]:
        """The running rollout of ``endpoint``, else its latest one."""
        with self.registry.session() as s:
            row = s.scalars(
                select(RolloutRow)
                .where(RolloutRow.endpoint == endpoint)
                .order_by(RolloutRow.id.desc())
            ).first()
            if row is None:
                raise NotFound(
                    f"endpoint {endpoint!r} has no rollout; start one with "
                    f"`zeroserve rollout start {endpoint} --to MODEL:VERSION`"
                )
            return row_dict(row)

    def list_rollouts(self, state: str | None = None) -> list[dict[str, Any]]:
        with self.registry.session() as s:
            query = select(RolloutRow).order_by(RolloutRow.id.desc())
            if state:
                query = query.where(RolloutRow.state == state)
            return [row_dict(r) for r in s.scalars(query).all()]

    # commands
    async def start(
        self, endpoint: str, model: str, ref: str | None, plan: RolloutPlan
    ) -> dict[str, Any]:
        async with self._lock:
            spec = await asyncio.to_thread(self.registry.get_endpoint, endpoint)
            if await asyncio.to_thread(self._running, endpoint) is not None:
                raise Conflict(
                    f"endpoint {endpoint!r} already has a rollout running; see "
                    f"`zeroserve rollout status {endpoint}` or abort it first"
                )
            version = (await asyncio.to_thread(self.registry.get_version, model, ref)).version
            live = [v for v in spec.variants if v.weight > 0]
            baseline = max(live or spec.variants, key=lambda v: v.weight)
            if baseline.model == model and baseline.version == version:
                raise BadRequest(
                    f"{model}:{version} already serves {endpoint!r}; roll out another version"
                )
            spec, canary = with_variant(spec, model, version)
            # The canary goes last, so sticky keys stay on it as its weight rises.
            others = [v for v in spec.variants if v.name not in (canary.name, baseline.name)]
            spec = spec.model_copy(update={"variants": [baseline, *others, canary]})
            first = plan.steps[0]
            spec = _with_canary(spec, canary.name)
            spec = reweigh(
                spec,
                {baseline.name: 100.0 - first, canary.name: first, **{v.name: 0.0 for v in others}},
            )
            now = self.clock()
            row = RolloutRow(
                endpoint=endpoint,
                baseline=baseline.name,
                canary=canary.name,
                canary_model=model,
                canary_version=version,
                plan=plan.to_dict(),
                state=RUNNING,
                step=0,
                step_started_at=now,
                looks=0,
                started_at=now,
                updated_at=now,
                reason="started",
                decisions=[{"at": now, "action": "start", "reason": f"canary at {first:g}%"}],
                stats={},
            )
            self.recorder.untrack(endpoint)
            self.recorder.track(endpoint)
            await asyncio.to_thread(self.registry.put_endpoint, spec)
            await self.apply(spec)
            await asyncio.to_thread(self._insert, row)
            self._arms[row.id] = (ArmStats(), ArmStats())
            self.canaries[endpoint] = (baseline.name, canary.name)
            return row_dict(row)

    def _insert(self, row: RolloutRow) -> None:
        with self.registry.session() as s:
            s.add(row)
            s.flush()

    async def abort(self, endpoint: str, reason: str = "aborted by request") -> dict[str, Any]:
        async with self._lock:
            row = await asyncio.to_thread(self._running, endpoint)
            if row is None:
                raise NotFound(f"endpoint {endpoint!r} has no rollout running")
            await self._finish(row, "aborted", reason, None, rollback=True)
            return row_dict(row)

    # the manager
    async def tick(self) -> None:
        """One step for every running rollout (a controller manager)."""
        async with self._lock:
            rows = await asyncio.to_thread(self.list_rows)
            for row in rows:
                try:
                    await self._tick_one(row)
                except Exception:
                    log.exception("rollout tick failed", extra={"endpoint": row.endpoint})

    def list_rows(self) -> list[RolloutRow]:
        with self.registry.session() as s:
            return list(s.scalars(select(RolloutRow).where(RolloutRow.state == RUNNING)).all())

    def _arms_of(self, row: RolloutRow) -> tuple[ArmStats, ArmStats]:
        arms = self._arms.get(row.id)
        if arms is None:  # after a restart: continue from the stored stats
            stored = row.stats or {}
            arms = tuple(
                ArmStats.from_dict(stored[a]) if a in stored else ArmStats()
                for a in ("baseline", "canary")
            )  # type: ignore[assignment]
            self._arms[row.id] = arms  # type: ignore[assignment]
            # The current step bakes again from now: time the server was down saw no traffic.
            row.step_started_at = max(row.step_started_at, self.clock())
            self.recorder.track(row.endpoint)
            self.canaries[row.endpoint] = (row.baseline, row.canary)
        return arms  # type: ignore[return-value]

    async def _tick_one(self, row: RolloutRow) -> None:
        baseline, canary = self._arms_of(row)
        deltas = self.recorder.take(row.endpoint)
        if row.baseline in deltas:
            baseline.merge(deltas[row.baseline])
        if row.canary in deltas:
            canary.merge(deltas[row.canary])
        plan = RolloutPlan.from_dict(row.plan)
        drifted: tuple[str, ...] = ()
        if self.drift is not None and canary.requests >= plan.min_requests:
            drifted = await self.drift(row.endpoint, row.canary)
        now = self.clock()
        ctx = RolloutContext(
            plan, row.step, row.step_started_at, now, baseline, canary, row.looks, drifted
        )
        verdict = decide(ctx)
        row.stats = {"baseline": baseline.to_dict(), "canary": canary.to_dict()}
        row.looks, row.updated_at = verdict.looks, now
        if verdict.action == "rollback":
            await self._finish(row, "rolled_back", verdict.reason, verdict, rollback=True)
        elif verdict.action == "promote":
            await self._finish(row, "promoted", verdict.reason, verdict, rollback=False)
        elif verdict.action == "advance":
            row.step, row.step_started_at = verdict.step, now
            self._note(row, verdict, now)
            await self._set_weights(row, verdict.canary_weight)
            await asyncio.to_thread(self._save, row)
        else:
            if verdict.reason.split(":")[0] != row.reason.split(":")[0] or verdict.guards:
                self._note(row, verdict, now)
            row.reason = verdict.reason
            await asyncio.to_thread(self._save, row)

    def _note(self, row: RolloutRow, verdict: Verdict, now: float) -> None:
        entry = {"at": now, **verdict.to_dict()}
        row.decisions = [*row.decisions, entry][-MAX_DECISIONS:]
        row.reason = verdict.reason

    async def _set_weights(
        self, row: RolloutRow, canary_weight: float, finished: bool = False
    ) -> None:
        spec = await asyncio.to_thread(self.registry.get_endpoint, row.endpoint)
        spec = reweigh(spec, {row.baseline: 100.0 - canary_weight, row.canary: canary_weight})
        spec = _with_canary(spec, None if finished else row.canary)
        await asyncio.to_thread(self.registry.put_endpoint, spec)
        await self.apply(spec)

    async def _finish(
        self, row: RolloutRow, state: str, reason: str, verdict: Verdict | None, *, rollback: bool
    ) -> None:
        now = self.clock()
        # Traffic moves first: a failing canary must stop serving before anything else.
        await self._set_weights(row, 0.0 if rollback else 100.0, finished=True)
        self.canaries.pop(row.endpoint, None)
        if not rollback:
            await asyncio.to_thread(
                self.registry.set_stage, row.canary_model, row.canary_version, Stage.PRODUCTION
            )
        row.state, row.reason, row.finished_at, row.updated_at = state, reason, now, now
        if verdict is not None:
            row.fired = verdict.fired
            self._note(row, verdict, now)
        else:
            row.decisions = [*row.decisions, {"at": now, "action": state, "reason": reason}][
                -MAX_DECISIONS:
            ]
        await asyncio.to_thread(self._save, row)
        self.recorder.untrack(row.endpoint)
        self._arms.pop(row.id, None)
        log.info(
            "rollout finished", extra={"endpoint": row.endpoint, "state": state, "reason": reason}
        )

    def _save(self, row: RolloutRow) -> None:
        with self.registry.session() as s:
            s.merge(row)


def _with_canary(spec: EndpointSpec, canary: str | None) -> EndpointSpec:
    """The spec marking ``canary`` as the variant under a rollout (the data plane, in every
    gateway process, retries its 5xx answers on the baseline)."""
    return spec.model_copy(
        update={"monitoring": spec.monitoring.model_copy(update={"canary": canary})}
    )
