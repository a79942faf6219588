"""Batch transform runs on the server: one durable job per shard, run by replicas.

A run plans its shards (``jobs.batch.plan``), records itself, serves the model
version on an internal serverless endpoint (``batch-<run>``) and enqueues one
job per shard in the queue ``batch:<run>``. Workers lease shard jobs and run
``run_shard`` in threads, its predictions going through the endpoint's pool at
full batch size. Shard outputs are atomic and the manifest is the truth, so a
server killed at any moment resumes on restart: leases expire, shards are
leased again, finished shards are skipped, orphaned outputs adopted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlalchemy import select

from zeroserve.egress import EgressPolicy
from zeroserve.errors import BadRequest, Conflict, NotFound, ZeroserveError
from zeroserve.jobs import batch
from zeroserve.jobs.batch_manifest import BadBatchInput, Manifest, update_manifest
from zeroserve.jobs.queue import JobQueue, JobStatus, Lease, keep_leased
from zeroserve.jobs.tables import BatchRunRow
from zeroserve.types import Arrays, EndpointSpec, Mode, ScalingSpec, VariantSpec

if TYPE_CHECKING:
    from zeroserve.jobs.deployments import Deployments
    from zeroserve.registry.registry import Registry
    from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.batch")

BATCH_ROWS = 4096
SHARD_TIMEOUT_S = 3600.0


class BatchRequest(BaseModel):
    """Start a batch transform of ``input_uri`` into ``output_uri``."""

    model: str
    ref: str | None = Field(None, description="version, alias, 'latest' or '@stage'")
    input_uri: str
    output_uri: str
    format: str | None = Field(None, description="csv, jsonl or parquet (default: extension)")
    output_format: str | None = None
    id_column: str | None = None
    shard_rows: int = Field(100_000, ge=1)
    skip_bad_rows: bool = Field(False, description="write bad rows to errors-*.jsonl instead")
    max_replicas: int = Field(2, ge=1)


def queue_name(run_id: str) -> str:
    return f"batch:{run_id}"


class BatchService:
    def __init__(
        self, controller: Deployments, registry: Registry, queue: JobQueue, settings: Settings
    ) -> None:
        self.controller = controller
        self.registry = registry
        self.queue = queue
        self.settings = settings
        self.sessions = registry.sessions
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._threads = ThreadPoolExecutor(4, thread_name_prefix="zeroserve-batch")
        self._tasks: set[asyncio.Task[Any]] = set()
        own: list[Path | str] = [settings.data_dir, *settings.batch_roots]
        self.reads = EgressPolicy.from_settings(
            settings, [*own, *settings.async_input_roots], roots_setting="ZEROSERVE_BATCH_ROOTS"
        )
        self.writes = EgressPolicy.from_settings(
            settings, own, roots_setting="ZEROSERVE_BATCH_ROOTS"
        )

    def check_uris(self, input_uri: str, output_uri: str) -> None:
        """Refuse a run whose input or output the egress policy does not allow (403)."""
        self.reads.check_uri(input_uri, "input_uri")
        self.writes.check_uri(output_uri, "output_uri")

    # runs
    async def start(self, req: BatchRequest) -> dict[str, Any]:
        self.check_uris(req.input_uri, req.output_uri)
        version = await asyncio.to_thread(self.registry.get_version, req.model, req.ref)
        signature = version.signature
        # Columns are matched by name whenever the signature names them, never by position.
        names: list[str] | None = None
        n_features: int | None = None
        if signature.columns is not None:
            names = [c.name for c in signature.columns]
        else:
            n_features = signature.inputs[0].shape[-1]
            if len(signature.inputs) != 1 or n_features < 0:
                raise BadRequest("batch transform needs a model with one [N, features] input")
            names = signature.inputs[0].names
        manifest = await asyncio.to_thread(
            batch.plan,
            req.input_uri,
            req.output_uri,
            shard_rows=req.shard_rows,
            format=req.format,
            output_format=req.output_format,
            id_column=req.id_column,
            feature_columns=names,
            n_features=n_features,
            typed=signature.columns is not None,
        )
        run_id = uuid.uuid4().hex[:12]
        row = BatchRunRow(
            id=run_id,
            model=version.model,
            version=version.version,
            endpoint=f"batch-{run_id}",
            input_uri=req.input_uri,
            output_uri=req.output_uri,
            options=json.dumps(
                {"skip_bad_rows": req.skip_bad_rows, "max_replicas": req.max_replicas}
            ),
            created_at=time.time(),
        )
        await asyncio.to_thread(self._insert, row)
        await self._serve(row)
        await asyncio.to_thread(self._enqueue, row, manifest)
        return await self.status(run_id)

    def _insert(self, row: BatchRunRow) -> None:
        with self.sessions.begin() as s:
            s.add(row)

    def _enqueue(self, row: BatchRunRow, manifest: Manifest) -> None:
        todo = [s for s in manifest.shards if s.status != "done"]
        for shard in todo:
            self.queue.put(
                queue_name(row.id),
                {"run": row.id, "shard": shard.index},
                idempotency_key=f"{row.id}:{row.generation}:{shard.index}",
            )

    async def _serve(self, row: BatchRunRow) -> None:
        options = json.loads(row.options)
        spec = EndpointSpec(
            name=row.endpoint,
            mode=Mode.ASYNC,
            request_timeout_s=SHARD_TIMEOUT_S,
            variants=[
                VariantSpec(
                    name=f"v{row.version}",
                    model=row.model,
                    version=row.version,
                    max_batch_size=BATCH_ROWS,
                    scaling=ScalingSpec(
                        min_replicas=0,
                        max_replicas=options["max_replicas"],
                        target_concurrency=1,
                        idle_timeout_s=30,
                        scale_down_delay_s=5,
                    ),
                )
            ],
        )
        await asyncio.to_thread(self.registry.put_endpoint, spec)
        await self.controller.apply(spec)

    def _row(self, run_id: str) -> BatchRunRow:
        with self.sessions.begin() as s:
            row = s.get(BatchRunRow, run_id)
            if row is None:
                raise NotFound(f"no batch run {run_id!r}; list them with `zeroserve batch list`")
            s.expunge(row)
            found: BatchRunRow = row
            return found

    def _update(self, run_id: str, **values: Any) -> None:
        with self.sessions.begin() as s:
            row = s.get(BatchRunRow, run_id)
            if row is not None:
                for key, value in values.items():
                    setattr(row, key, value)

    def _running(self) -> list[BatchRunRow]:
        with self.sessions.begin() as s:
            rows = list(s.scalars(select(BatchRunRow).where(BatchRunRow.state == "running")))
            s.expunge_all()
            return rows

    async def status(self, run_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self._row, run_id)
        summary = await asyncio.to_thread(batch.status, row.output_uri)
        elapsed = (row.finished_at or time.time()) - row.created_at
        return {
            "run_id": row.id,
            "model": f"{row.model}:{row.version}",
            "state": row.state,
            "input_uri": row.input_uri,
            "output_uri": row.output_uri,
            "error": row.error,
            "shards": summary.shards,
            "shards_done": summary.shards_done,
            "shards_failed": summary.shards_failed,
            "rows": summary.rows,
            "rows_done": summary.rows_done,
            "rows_written": summary.rows_written,
            "bad_rows": summary.bad_rows,
            "errors": summary.errors,
            "created_at": row.created_at,
            "elapsed_s": elapsed,
            "rows_per_s": summary.rows_done / elapsed if elapsed > 0 else 0.0,
        }

    async def list_runs(self) -> list[dict[str, Any]]:
        def ids() -> list[str]:
            with self.sessions.begin() as s:
                return list(
                    s.scalars(
                        select(BatchRunRow.id).order_by(BatchRunRow.created_at.desc()).limit(100)
                    )
                )

        return [await self.status(run_id) for run_id in await asyncio.to_thread(ids)]

    async def cancel(self, run_id: str) -> dict[str, Any]:
        row = await asyncio.to_thread(self._row, run_id)
        if row.state != "running":
            raise Conflict(f"batch run {run_id} is {row.state}")
        await asyncio.to_thread(batch.cancel, row.output_uri)
        await asyncio.to_thread(self._cancel_jobs, row.id)
        await asyncio.to_thread(self._update, run_id, state="cancelled", finished_at=time.time())
        await self._unserve(row)
        return await self.status(run_id)

    def _cancel_jobs(self, run_id: str) -> None:
        for job in self.queue.list(
            status=JobStatus.QUEUED, queue=queue_name(run_id), limit=100_000
        ):
            self.queue.cancel(job.id)

    async def resume(self, run_id: str) -> dict[str, Any]:
        """Continue a cancelled, failed or interrupted run where it stopped."""
        row = await asyncio.to_thread(self._row, run_id)
        if row.state == "done":
            raise Conflict(f"batch run {run_id} is already done")
        self.check_uris(row.input_uri, row.output_uri)
        manifest = await asyncio.to_thread(batch.plan, row.input_uri, row.output_uri)
        await asyncio.to_thread(update_manifest, manifest, _uncancel)
        generation = row.generation + 1
        await asyncio.to_thread(
            self._update,
            run_id,
            state="running",
            generation=generation,
            error=None,
            finished_at=None,
        )
        row.generation = generation
        await self._serve(row)
        await asyncio.to_thread(self._enqueue, row, batch.load_manifest(row.output_uri))
        return await self.status(run_id)

    async def _unserve(self, row: BatchRunRow) -> None:
        with contextlib.suppress(ZeroserveError):
            await asyncio.to_thread(self.registry.delete_endpoint, row.endpoint)
        await self.controller.remove(row.endpoint)

    # workers
    async def tick(self) -> None:
        running = {row.id: row for row in await asyncio.to_thread(self._running)}
        for run_id, row in running.items():
            if run_id not in self._workers or self._workers[run_id].done():
                if row.endpoint not in self.controller.routes:
                    await self._serve(row)
                self._workers[run_id] = asyncio.get_running_loop().create_task(self._work(row))
        for run_id in set(self._workers) - set(running):
            self._workers.pop(run_id).cancel()

    async def _work(self, row: BatchRunRow) -> None:
        parallel = json.loads(row.options)["max_replicas"] + 1
        in_flight: set[asyncio.Task[None]] = set()
        while True:
            room = parallel - len(in_flight)
            leases = (
                await asyncio.to_thread(
                    self.queue.lease, queue_name(row.id), room, self.settings.job_visibility_s
                )
                if room
                else []
            )
            for lease in leases:
                task = asyncio.get_running_loop().create_task(self._shard(row, lease))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
            if not leases:
                if not in_flight and await asyncio.to_thread(self._finished, row):
                    if (await asyncio.to_thread(self._row, row.id)).state == "done":
                        await self._unserve(row)
                    return
                await asyncio.sleep(0.1)

    def _finished(self, row: BatchRunRow) -> bool:
        counts = self.queue.counts(queue_name(row.id))
        if counts[JobStatus.QUEUED] or counts[JobStatus.RUNNING]:
            return False
        summary = batch.status(row.output_uri)
        if summary.shards_done == summary.shards:
            self._update(row.id, state="done", finished_at=time.time())
        else:
            failed = "; ".join(summary.errors[:3]) or "some shards did not finish"
            self._update(row.id, state="failed", error=failed, finished_at=time.time())
        return True

    async def _shard(self, row: BatchRunRow, lease: Lease) -> None:
        loop = asyncio.get_running_loop()
        holder = [lease]
        try:
            self.check_uris(row.input_uri, row.output_uri)  # the policy may have tightened
        except ZeroserveError as exc:
            await asyncio.to_thread(self.queue.fail, holder[0], exc.message, retryable=False)
            return
        heartbeat = loop.create_task(
            keep_leased(self.queue, holder, self.settings.job_visibility_s)
        )
        manifest = await asyncio.to_thread(batch.load_manifest, row.output_uri)
        shard = manifest.shards[int(lease.job.payload["shard"])]
        skip = bool(json.loads(row.options)["skip_bad_rows"])
        version = await asyncio.to_thread(self.registry.get_version, row.model, row.version)
        columns = version.signature.columns
        try:
            await loop.run_in_executor(
                self._threads,
                lambda: batch.run_shard(
                    manifest,
                    shard,
                    self._predictor(row, loop),
                    batch_rows=BATCH_ROWS,
                    skip_bad_rows=skip,
                    columns=columns,
                    input_name=version.signature.inputs[0].name,
                    allow_nan=version.signature.inputs[0].allow_nan,
                ),
            )
        except BadBatchInput as exc:
            heartbeat.cancel()
            await asyncio.to_thread(self.queue.fail, holder[0], exc.message, retryable=False)
        except Exception as exc:
            heartbeat.cancel()
            message = (
                exc.message if isinstance(exc, ZeroserveError) else f"{type(exc).__name__}: {exc}"
            )
            log.warning(
                "batch shard failed", extra={"run": row.id, "shard": shard.index, "error": message}
            )
            await asyncio.to_thread(self.queue.fail, holder[0], message, retryable=True)
        else:
            heartbeat.cancel()
            await asyncio.to_thread(self.queue.ack, holder[0], {"shard": shard.index})
        finally:
            heartbeat.cancel()

    def _predictor(self, row: BatchRunRow, loop: asyncio.AbstractEventLoop) -> batch.Predict:
        """``predict(arrays)`` for a worker thread: submits to the pool on the event loop."""

        def predict(arrays: Arrays) -> Arrays:
            async def submit() -> Arrays:
                route = self.controller.routes.get(row.endpoint)
                if route is None:
                    raise ZeroserveError(f"batch endpoint {row.endpoint} is not serving")
                rows = int(next(iter(arrays.values())).shape[0])
                result = await route.variants[0].pool.submit(arrays, rows, SHARD_TIMEOUT_S)
                return result.outputs

            return asyncio.run_coroutine_threadsafe(submit(), loop).result()

        return predict

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        self._threads.shutdown(wait=False, cancel_futures=True)


def _uncancel(manifest: Manifest) -> None:
    manifest.cancelled = False
