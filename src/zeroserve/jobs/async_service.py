"""Asynchronous inference: accept now, predict when a replica is free, never lose a job.

``POST /v1/endpoints/{name}/async`` streams the payload into the artifact store
(never holding it whole), enqueues a job in the durable queue and answers 202
with its id. A worker per endpoint leases jobs, predicts through the same pool
as synchronous traffic, writes the result under a key derived from the job id
(so a redelivery rewrites the same result instead of adding one) and only then
acks. Bad payloads fail at once with the reason; crashes and timeouts retry
with backoff until the dead-letter queue. Queued jobs count as demand for the
autoscaler, so an endpoint at zero replicas wakes when work arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import fsspec
import orjson

from zeroserve.egress import HTTP_SCHEMES, EgressPolicy, fetch_http, layers
from zeroserve.errors import (
    BadRequest,
    Conflict,
    EndpointNotFound,
    Forbidden,
    InvalidInput,
    MalformedPayload,
    ModelError,
    NotFound,
    PayloadTooLarge,
    TooManyRequests,
    ZeroserveError,
)
from zeroserve.jobs.queue import Job, JobQueue, JobStatus, Lease, keep_leased, open_queue
from zeroserve.jobs.webhooks import WebhookSender, endpoint_secret, load_master_secret
from zeroserve.protocols import jsonproto
from zeroserve.protocols.validation import rows_of

if TYPE_CHECKING:
    from zeroserve.jobs.deployments import Deployments
    from zeroserve.metrics import Metrics
    from zeroserve.registry.registry import Registry
    from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.async")

INLINE_RESULT_BYTES = 1024 * 1024
ENVELOPE_PEEK_BYTES = 64 * 1024
PURGE_BATCH = 1000
PERMANENT = (InvalidInput, MalformedPayload, ModelError, EndpointNotFound, NotFound, BadRequest)


def queue_name(endpoint: str) -> str:
    return f"endpoint:{endpoint}"


class AsyncService:
    def __init__(
        self, controller: Deployments, registry: Registry, settings: Settings, metrics: Metrics
    ) -> None:
        self.controller = controller
        self.store = registry.store
        self.settings = settings
        self.metrics = metrics
        url = settings.queue_url or f"sqlite:///{(settings.data_dir / 'jobs.db').resolve()}"
        self.queue: JobQueue = open_queue(url, max_attempts=settings.job_max_attempts)
        self.master = load_master_secret(settings.data_dir)
        self.callbacks = EgressPolicy.from_settings(settings, [], schemes=sorted(HTTP_SCHEMES))
        self.webhooks = WebhookSender(registry.sessions, self.master, self.callbacks)
        self.max_bytes = int(settings.max_async_payload_mb * 1024 * 1024)
        self.roots = [
            Path(settings.data_dir).resolve(),
            *(Path(r).resolve() for r in settings.async_input_roots),
        ]
        self.inputs = EgressPolicy.from_settings(settings, self.roots)
        self.queued: dict[str, int] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._in_flight: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # submission
    async def submit(
        self, name: str, scope: dict[str, Any], receive: Any, headers: dict[bytes, bytes]
    ) -> tuple[int, dict[str, Any]]:
        if name not in self.controller.routes:
            known = ", ".join(sorted(self.controller.routes)) or "none deployed"
            raise EndpointNotFound(f"no endpoint named {name!r} (endpoints: {known})")
        query = parse_qs(scope.get("query_string", b"").decode())
        callback = (
            headers.get(b"x-callback-url", b"").decode() or query.get("callback_url", [None])[0]
        )
        key = headers.get(b"idempotency-key", b"").decode() or None
        declared = headers.get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise self._too_large(int(declared))
        # Refuse what we can before storing a byte of the body.
        await self._check_callback(callback)
        await asyncio.to_thread(self._check_room, name)
        input_uri, envelope = await self._receive_payload(receive)
        try:
            if envelope is not None:
                if "callback_url" in envelope:
                    callback = envelope["callback_url"]
                    await self._check_callback(callback)
                key = envelope.get("idempotency_key", key)
            if key is not None and not isinstance(key, str):
                raise BadRequest("idempotency_key must be a string")
            payload = {"endpoint": name, "input_uri": input_uri, "callback_url": callback}
            job = await asyncio.to_thread(self._put, name, payload, key)
        except BaseException:
            if envelope is None:  # the body we stored belongs to no job
                await asyncio.to_thread(self.store.delete, self._own_key(input_uri))
            raise
        if envelope is None and job.payload.get("input_uri") != input_uri:
            # An idempotent repeat: the first submission's body is the job's.
            await asyncio.to_thread(self.store.delete, self._own_key(input_uri))
        self.wake(name)
        return 202, self.describe(job)

    async def _check_callback(self, callback: Any) -> None:
        if callback is None:
            return
        if not isinstance(callback, str):
            raise BadRequest("callback_url must be an http(s) URL string")
        await asyncio.to_thread(self.callbacks.http_target, callback)

    def _own_key(self, uri: str) -> str:
        return uri.removeprefix(self.store.base_url + "/")

    def _check_room(self, name: str) -> None:
        queued = self.queue.counts(queue_name(name))[JobStatus.QUEUED]
        if queued >= self.settings.max_queued_jobs:
            raise TooManyRequests(
                f"endpoint {name!r} has {queued:,} queued jobs, its limit "
                f"(ZEROSERVE_MAX_QUEUED_JOBS); retry later",
                retry_after_s=5.0,
            )

    def _put(self, name: str, payload: dict[str, Any], key: str | None) -> Job:
        """Enqueue unless the endpoint already has ``max_queued_jobs`` waiting."""
        self._check_room(name)  # again: others may have queued while the body arrived
        return self.queue.put(queue_name(name), payload, idempotency_key=key)

    async def _receive_payload(self, receive: Any) -> tuple[str, dict[str, Any] | None]:
        """Store the body under a fresh key, or take ``input_uri`` from a small envelope."""
        head = b""
        message: dict[str, Any] = {"more_body": True}
        while message.get("more_body") and len(head) < ENVELOPE_PEEK_BYTES:
            message = await receive()
            head += message.get("body", b"")
        if not message.get("more_body") and head.lstrip()[:1] == b"{" and b'"input_uri"' in head:
            envelope = jsonproto.load_json(head)
            if "input_uri" in envelope:
                uri = envelope["input_uri"]
                if not isinstance(uri, str):
                    raise BadRequest("input_uri must be a URL string")
                await asyncio.to_thread(self._check_uri, uri)
                return uri, envelope
        key = f"async/inputs/{uuid.uuid4().hex}.json"
        size = len(head)
        with self.store.open(key, "wb") as out:
            out.write(head)
            while message.get("more_body"):
                message = await receive()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.max_bytes:
                    out.close()
                    self.store.delete(key)
                    raise self._too_large(size)
                out.write(chunk)
        if size == 0:
            self.store.delete(key)
            raise MalformedPayload(
                "the request body is empty; send the inference request "
                '(e.g. {"instances": [...]}) or {"input_uri": "s3://..."}'
            )
        return self.store.url(key), None

    def _check_uri(self, uri: str) -> None:
        self.inputs.check_uri(uri)
        if any(layer.scheme in HTTP_SCHEMES for layer in layers(uri)):
            return  # fetched (once, pinned) when the job runs, not probed now
        try:
            fs, path = fsspec.core.url_to_fs(uri)
            exists = fs.exists(path)
        except (ImportError, ValueError) as exc:
            raise BadRequest(f"input_uri cannot be opened here: {type(exc).__name__}") from None
        if not exists:
            raise NotFound(
                f"input_uri {uri} does not exist; upload the payload first or "
                "send it inline as the request body"
            )

    def _too_large(self, size: int) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"async payload of {size:,} bytes is over the {self.max_bytes:,}"
            "-byte limit (ZEROSERVE_MAX_ASYNC_PAYLOAD_MB)"
        )

    # status
    def describe(self, job: Job) -> dict[str, Any]:
        result = job.result or {}
        body: dict[str, Any] = {
            "job_id": job.id,
            "endpoint": job.payload.get("endpoint"),
            "status": job.status.value,
            "attempts": job.attempts,
            "max_attempts": job.max_attempts,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "status_url": f"/v1/jobs/{job.id}",
        }
        if "run" in job.payload:  # a shard of a batch transform, not an async request
            body["batch_run"] = job.payload["run"]
            body["shard"] = job.payload.get("shard")
        if job.error:
            body["error"] = job.error
        if result.get("result_uri"):
            body["result_uri"] = result["result_uri"]
        return body

    async def status(self, job_id: str) -> dict[str, Any]:
        job = await asyncio.to_thread(self.queue.get, job_id)
        body = self.describe(job)
        result = job.result or {}
        inline = result.get("result_uri") and result.get("bytes", 0) <= INLINE_RESULT_BYTES
        if job.status == JobStatus.SUCCEEDED and inline:
            with contextlib.suppress(ZeroserveError, OSError):
                body["result"] = orjson.loads(
                    await asyncio.to_thread(self._read, result["result_uri"])
                )
        webhook = await asyncio.to_thread(self.webhooks.status, job_id)
        if webhook:
            body["webhook"] = webhook
        return body

    async def cancel(self, job_id: str) -> dict[str, Any]:
        if not await asyncio.to_thread(self.queue.cancel, job_id):
            job = await asyncio.to_thread(self.queue.get, job_id)
            raise Conflict(f"job {job_id} is {job.status.value}; only queued jobs can be cancelled")
        return {"job_id": job_id, "status": "cancelled"}

    async def cancel_endpoint(self, name: str) -> int:
        """Cancel the queued jobs of a deleted endpoint, saying why (a later endpoint
        of the same name must not run them)."""
        reason = f"cancelled: endpoint {name!r} was deleted before the job ran"
        return await asyncio.to_thread(self.queue.cancel_queue, queue_name(name), reason)

    # retention
    async def purge(self) -> int:
        """Delete finished jobs older than ``job_retention_s`` with their uploaded
        inputs, results and webhook rows; returns how many jobs went."""
        cutoff = time.time() - self.settings.job_retention_s
        total = 0
        while True:
            jobs = await asyncio.to_thread(self.queue.purge, cutoff, PURGE_BATCH)
            if not jobs:
                break
            await asyncio.to_thread(self._forget, jobs)
            total += len(jobs)
            if len(jobs) < PURGE_BATCH:
                break
        forgotten = await asyncio.to_thread(self.webhooks.purge, cutoff)
        if total or forgotten:
            log.info("purged finished jobs", extra={"jobs": total, "webhooks": forgotten})
        return total

    def _forget(self, jobs: list[Job]) -> None:
        own_inputs = self.store.url("async/inputs/")
        for job in jobs:
            payload = job.payload if isinstance(job.payload, dict) else {}
            uri = str(payload.get("input_uri") or "")
            keys = [f"async/results/{job.id}.json"]
            if uri.startswith(own_inputs):
                keys.append(self._own_key(uri))
            for key in keys:
                try:
                    self.store.delete(key)
                except OSError:
                    log.warning("could not delete a purged job's file", extra={"key": key})
        self.webhooks.forget([job.id for job in jobs])

    def webhook_secret(self, endpoint: str) -> str:
        return endpoint_secret(self.master, endpoint)

    # workers
    def queued_jobs(self, endpoint: str) -> int:
        return self.queued.get(endpoint, 0)

    def wake(self, name: str) -> None:
        """Let the endpoint's worker lease now instead of at its next poll."""
        event = self._wake.get(name)
        if event is not None:
            event.set()

    async def tick(self) -> None:
        """Keep one worker per endpoint and refresh the queue depths the autoscaler reads."""
        names = set(self.controller.routes)
        for name in names - set(self._workers):
            self._wake[name] = asyncio.Event()
            self._in_flight[name] = 0
            self._workers[name] = asyncio.get_running_loop().create_task(self._work(name))
        for name in set(self._workers) - names:
            self._workers.pop(name).cancel()
        counts, dead = await asyncio.to_thread(self._depths, sorted(names))
        self.queued = counts
        self.metrics.dead_letters.set(dead)
        for name, depth in counts.items():
            self.metrics.jobs_queued.labels(name).set(depth)

    def _depths(self, names: list[str]) -> tuple[dict[str, int], int]:
        depths = {n: self.queue.counts(queue_name(n))[JobStatus.QUEUED] for n in names}
        return depths, self.queue.counts()[JobStatus.DEAD]

    def _capacity(self, name: str) -> int:
        variant = self.controller.routes[name].variants[0].spec
        return max(1, int(variant.scaling.max_replicas * variant.target_concurrency))

    async def _work(self, name: str) -> None:
        wake = self._wake[name]
        while name in self.controller.routes:
            room = self._capacity(name) - self._in_flight[name]
            leases: list[Lease] = []
            if room > 0:
                try:
                    leases = await asyncio.to_thread(
                        self.queue.lease, queue_name(name), room, self.settings.job_visibility_s
                    )
                except Exception:
                    log.exception("leasing jobs failed", extra={"endpoint": name})
            if not leases:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), 0.25)
                continue
            for lease in leases:
                self._in_flight[name] += 1
                task = asyncio.get_running_loop().create_task(self._process(name, lease))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _process(self, name: str, lease: Lease) -> None:
        job = lease.job
        holder = [lease]
        heartbeat = asyncio.get_running_loop().create_task(
            keep_leased(self.queue, holder, self.settings.job_visibility_s)
        )
        try:
            outcome = await self._predict(name, job)
        except PERMANENT as exc:
            heartbeat.cancel()
            await self._finish(name, holder[0], error=exc.message, retryable=False)
        except ZeroserveError as exc:
            heartbeat.cancel()
            await self._finish(name, holder[0], error=exc.message, retryable=True)
        except Exception as exc:
            heartbeat.cancel()
            log.exception("async job failed", extra={"job_id": job.id})
            await self._finish(
                name, holder[0], error=f"{type(exc).__name__}: {exc}", retryable=True
            )
        else:
            heartbeat.cancel()
            await self._finish(name, holder[0], result=outcome)
        finally:
            heartbeat.cancel()
            self._in_flight[name] -= 1
            self._wake[name].set()

    async def _predict(self, name: str, job: Job) -> dict[str, Any]:
        data = await asyncio.to_thread(self._read_input, job.payload["input_uri"])
        route = self.controller.routes.get(name)
        if route is None:
            raise EndpointNotFound(f"endpoint {name!r} was deleted before the job ran")
        variant = route.choose()
        arrays, as_rows = jsonproto.decode(jsonproto.load_json(data), variant.signature)
        rows = rows_of(arrays)
        result = await variant.pool.submit(arrays, rows, route.spec.request_timeout_s)
        body = jsonproto.encode(result.outputs, as_rows, variant.signature)
        uri = await asyncio.to_thread(self.store.put_bytes, f"async/results/{job.id}.json", body)
        return {
            "result_uri": uri,
            "rows": rows,
            "bytes": len(body),
            "model": f"{variant.spec.model}:{variant.spec.version}",
        }

    def _read_input(self, uri: str) -> bytes:
        """The job's input, checked against the egress policy again (it may have changed)."""
        if uri.startswith(self.store.base_url + "/async/inputs/"):
            return self._read(uri)  # our own upload
        try:
            self.inputs.check_uri(uri)
        except Forbidden as exc:
            raise BadRequest(exc.message) from None  # permanent: fail, do not retry
        if any(layer.scheme in HTTP_SCHEMES for layer in layers(uri)):
            if "::" in uri:
                raise BadRequest("input_uri: chained http inputs are not supported")
            return fetch_http(self.inputs, uri, self.max_bytes)
        return self._read(uri)

    def _read(self, uri: str) -> bytes:
        try:
            with fsspec.open(uri, "rb") as fh:
                data: bytes = fh.read()
                return data
        except FileNotFoundError:
            raise NotFound(f"input {uri} no longer exists") from None

    async def _finish(
        self,
        name: str,
        lease: Lease,
        *,
        result: dict[str, Any] | None = None,
        error: str | None = None,
        retryable: bool = False,
    ) -> None:
        job = lease.job
        if error is None:
            done = await asyncio.to_thread(self.queue.ack, lease, result)
            if done:
                self.metrics.jobs_done.labels(name, "succeeded").inc()
                self.metrics.job_latency.labels(name).observe(time.time() - job.created_at)
        else:
            done = await asyncio.to_thread(self.queue.fail, lease, error, retryable=retryable)
            if done and retryable:
                self.metrics.job_retries.labels(name).inc()
        if not done:
            return  # our lease expired; whoever holds the job now finishes it
        callback = job.payload.get("callback_url")
        if error is None and not callback:
            return  # succeeded, and nobody to tell: no need to read the job back
        final = await asyncio.to_thread(self.queue.get, job.id)
        if final.status in (JobStatus.FAILED, JobStatus.DEAD):
            self.metrics.jobs_done.labels(name, final.status.value).inc()
        if final.status.done and callback:
            body = orjson.dumps({**self.describe(final), **({"result": None} if error else {})})
            await asyncio.to_thread(self.webhooks.enqueue, job.id, name, callback, body.decode())

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        await self.webhooks.close()
        self.queue.close()
