"""One LLM call: admit, reserve, try deployments (retries, fallbacks, breakers), settle.

A non-streaming call returns an ``Outcome``. A streaming call returns a ``LiveStream``
once the first chunk is in hand: until then a failure moves to the next deployment;
after it, the client has seen output and the stream can only end (cleanly or cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from zeroserve.errors import RequestTimeout, ServiceUnavailable, TooManyRequests, ZeroserveError
from zeroserve.llm import router
from zeroserve.llm.providers.base import JSON, StreamState, UpstreamError
from zeroserve.llm.router import DeploymentState
from zeroserve.llm.usage import Usage
from zeroserve.llm.validate import InvalidRequest, max_output, prompt_bytes

if TYPE_CHECKING:
    from zeroserve.llm.service import Caller, LLMService, ModelEntry

MIN_BYTES_PER_TOKEN = 8
"""No tokenizer packs more bytes than this in a token: ``bytes / 8`` is a floor on tokens."""


class UpstreamFailed(ZeroserveError):
    status_code = 502
    code = "upstream_error"


class PassedOn(ZeroserveError):
    """An upstream's 4xx about the request itself, scrubbed, with the upstream's status."""

    code = "invalid_request_error"

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status_code = status


@dataclass(slots=True)
class Call:
    """What every step of one call needs to know."""

    svc: LLMService
    caller: Caller
    body: JSON
    kind: str
    entry: ModelEntry
    started: float
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    reservation: str | None = None
    reserved: int = 0
    upstream_s: float = 0.0
    state: DeploymentState | None = None
    served_model: str = ""
    attempts: int = 0


@dataclass(slots=True)
class Outcome:
    body: JSON
    usage: Usage
    call: Call
    cache_hit: bool = False


async def prepare(svc: LLMService, caller: Caller, body: JSON, kind: str, started: float) -> Call:
    entry = svc.model(body["model"])
    if entry.spec.kind != kind:
        want = "/v1/embeddings" if entry.spec.kind == "embedding" else "/v1/chat/completions"
        raise InvalidRequest(
            f"model {entry.spec.name!r} is a {entry.spec.kind} model; call {want}", "model"
        )
    svc.admit(caller, entry.spec.name, time.monotonic())
    call = Call(svc, caller, body, kind, entry, started)
    if kind == "chat":
        _check_context(call)
    if caller.budgeted:
        call.reserved = worst_case(call)
        call.reservation = await svc.reserve(caller, call.reserved)
    return call


def chain(call: Call) -> list[ModelEntry]:
    svc = call.svc
    out = [call.entry]
    for name in call.entry.spec.fallbacks:
        fallback = svc.models.get(name)
        if fallback is not None and fallback not in out:
            out.append(fallback)
    return out


def worst_case(call: Call) -> int:
    size = prompt_bytes(call.body) if call.kind == "chat" else len(str(call.body.get("input")))
    out_tokens = (
        max_output(call.body, call.entry.spec.max_output_tokens) if call.kind == "chat" else 0
    )
    return max(
        (s.rates.worst_case(size, out_tokens) for e in chain(call) for s in e.states), default=0
    )


def _check_context(call: Call) -> None:
    windows = [w for w in (_window(e) for e in chain(call)) if w is not None]
    if not windows or len(windows) < len(chain(call)):
        return
    floor = prompt_bytes(call.body) // MIN_BYTES_PER_TOKEN
    if floor > max(windows):
        raise InvalidRequest(
            f"the prompt is at least {floor:,} tokens, over the largest context window of "
            f"model {call.entry.spec.name!r} and its fallbacks ({max(windows):,}); shorten the "
            "messages or add a fallback model with a larger context_window",
            "messages",
        )


def _window(entry: ModelEntry) -> int | None:
    windows = [s.spec.context_window for s in entry.states if s.spec.context_window]
    return entry.spec.context_window or (max(windows) if windows else None)


def candidates(call: Call) -> list[tuple[ModelEntry, DeploymentState]]:
    svc = call.svc
    res = svc.config.resilience
    now = time.monotonic()
    out: list[tuple[ModelEntry, DeploymentState]] = []
    for i, entry in enumerate(chain(call)):
        ordered = router.order(
            entry.states, entry.spec.routing, now, res.breaker_cooldown_s, svc.rng.random()
        )
        if i == 0 and ordered:
            tries = [ordered[j % len(ordered)] for j in range(max(len(ordered), res.retries + 1))]
        else:
            tries = ordered
        out.extend((entry, s) for s in tries)
    return out


async def complete(call: Call) -> Outcome:
    svc = call.svc
    res = svc.config.resilience
    tried = candidates(call)
    if not tried:
        raise _all_down(call)
    last: UpstreamError | None = None
    skip_model: ModelEntry | None = None
    for i, (entry, state) in enumerate(tried):
        if entry is skip_model:
            continue
        if i > 0:
            state.metrics.fallbacks.inc() if tried[i - 1][
                1
            ] is not state else state.metrics.retries.inc()
        provider = svc.provider(state.spec)
        state.begin(time.monotonic(), res.breaker_cooldown_s)
        began = time.perf_counter()
        try:
            if call.kind == "chat":
                done = await provider.complete(call.body, state.spec)
            else:
                done = await provider.embed(call.body, state.spec)
        except UpstreamError as exc:
            elapsed = time.perf_counter() - began
            call.upstream_s += elapsed
            last = exc
            state.metrics.error(svc.metrics, entry.spec.name, state.name, exc.kind)
            if exc.kind == "context_window":
                state.released()
                skip_model = entry
                continue
            if not exc.retryable:
                state.released()
                raise PassedOn(
                    exc.message, exc.status if 400 <= exc.status < 500 else 400
                ) from None
            state.failed(time.monotonic(), res, elapsed if exc.kind == "timeout" else None)
            state.metrics.breaker.set(1 if state.breaker == "open" else 0)
            nxt = tried[i + 1][1] if i + 1 < len(tried) else None
            if nxt is state or exc.retry_after_s is not None:
                wait = router.backoff_s(call.attempts, res, exc.retry_after_s, svc.rng)
                call.attempts += 1
                began_wait = time.perf_counter()
                await asyncio.sleep(wait)
                call.upstream_s += time.perf_counter() - began_wait
            continue
        except BaseException:
            state.released()
            raise
        elapsed = time.perf_counter() - began
        call.upstream_s += elapsed
        state.succeeded(elapsed, elapsed, res.ewma_alpha)
        state.metrics.breaker.set(0)
        call.state = state
        call.served_model = entry.spec.name
        return Outcome(done.body, done.usage, call)
    raise _exhausted(call, last)


@dataclass(slots=True)
class LiveStream:
    call: Call
    first: JSON
    rest: AsyncIterator[JSON]
    state: StreamState
    began: float
    ttft_s: float


async def open_stream(call: Call) -> LiveStream:
    svc = call.svc
    res = svc.config.resilience
    tried = candidates(call)
    if not tried:
        raise _all_down(call)
    last: UpstreamError | None = None
    skip_model: ModelEntry | None = None
    for i, (entry, dstate) in enumerate(tried):
        if entry is skip_model:
            continue
        if i > 0:
            dstate.metrics.fallbacks.inc()
        provider = svc.provider(dstate.spec)
        stream_state = StreamState()
        gen = provider.stream(call.body, dstate.spec, stream_state)
        dstate.begin(time.monotonic(), res.breaker_cooldown_s)
        began = time.perf_counter()
        limit = dstate.spec.first_token_timeout_s or dstate.spec.timeout_s
        try:
            async with asyncio.timeout(limit):
                first = await anext(gen)
        except (UpstreamError, StopAsyncIteration, TimeoutError) as exc:
            await _close(gen)
            elapsed = time.perf_counter() - began
            call.upstream_s += elapsed
            err = (
                exc
                if isinstance(exc, UpstreamError)
                else UpstreamError(
                    "timeout", f"{dstate.name} sent no first token in {limit} s", 504
                )
                if isinstance(exc, TimeoutError)
                else UpstreamError("protocol", f"{dstate.name} sent an empty stream")
            )
            last = err
            dstate.metrics.error(svc.metrics, entry.spec.name, dstate.name, err.kind)
            if err.kind == "context_window":
                dstate.released()
                skip_model = entry
                continue
            if not err.retryable:
                dstate.released()
                raise PassedOn(
                    err.message, err.status if 400 <= err.status < 500 else 400
                ) from None
            dstate.failed(time.monotonic(), res, elapsed if err.kind == "timeout" else None)
            nxt = tried[i + 1][1] if i + 1 < len(tried) else None
            if nxt is dstate or err.retry_after_s is not None:
                wait = router.backoff_s(call.attempts, res, err.retry_after_s, svc.rng)
                call.attempts += 1
                t0 = time.perf_counter()
                await asyncio.sleep(wait)
                call.upstream_s += time.perf_counter() - t0
            continue
        except BaseException:
            await _close(gen)
            dstate.released()
            raise
        ttft = time.perf_counter() - began
        call.upstream_s += ttft
        call.state = dstate
        call.served_model = entry.spec.name
        dstate.metrics.ttft.observe(ttft)
        return LiveStream(call, first, gen, stream_state, began, ttft)
    raise _exhausted(call, last)


def finish_stream(live: LiveStream, error: str | None) -> tuple[Usage, bool]:
    """Settle a stream that ended: on the reported usage, else on what was delivered."""
    call = live.call
    state = call.state
    assert state is not None
    res = call.svc.config.resilience
    total = time.perf_counter() - live.began
    usage = live.state.usage
    complete_usage = (
        usage is not None
        and error is None
        and (usage.output_tokens > 0 or live.state.delivered_chars == 0)
    )
    if error is None:
        state.succeeded(live.ttft_s, total, res.ewma_alpha)
    elif error == "client_disconnected":
        state.released()
    else:
        state.failed(time.monotonic(), res)
        state.metrics.error(call.svc.metrics, call.served_model, state.name, "mid_stream")
    if not complete_usage:
        usage = estimate(live, usage)
    assert usage is not None
    cost = state.rates.cost(usage)
    call.svc.settle(
        call.caller,
        call.reservation,
        call.reserved,
        call.served_model,
        state,
        usage,
        cost,
        call.request_id,
        estimated=not complete_usage,
        status="ok" if error is None else "cut",
    )
    (state.metrics.ok if error is None else state.metrics.failed).inc()
    state.metrics.latency.observe(total)
    return usage, not complete_usage


def estimate(live: LiveStream, reported: Usage | None) -> Usage:
    """What a cut stream delivered: reported figures where there are some, else counted."""
    delivered_out = -(-live.state.delivered_chars // 4)
    if reported is not None and reported.prompt_tokens > 0:
        return Usage(
            input_tokens=reported.input_tokens,
            output_tokens=max(reported.output_tokens, delivered_out),
            cache_read_tokens=reported.cache_read_tokens,
            cache_write_tokens=reported.cache_write_tokens,
        )
    return Usage(input_tokens=-(-prompt_bytes(live.call.body) // 4), output_tokens=delivered_out)


def release(call: Call, status: str) -> None:
    """A call that produced nothing: free its reservation, record the failure."""
    if call.reservation is not None:
        call.svc.settle(
            call.caller,
            call.reservation,
            call.reserved,
            call.entry.spec.name,
            None,
            Usage(),
            0,
            call.request_id,
            status=status,
        )


async def _close(gen: AsyncIterator[Any]) -> None:
    aclose = getattr(gen, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _all_down(call: Call) -> ZeroserveError:
    return ServiceUnavailable(
        f"every deployment of model {call.entry.spec.name!r} (and its fallbacks) is failing; "
        f"their circuit breakers reopen after {call.svc.config.resilience.breaker_cooldown_s:g} s",
    )


def _exhausted(call: Call, last: UpstreamError | None) -> ZeroserveError:
    if last is None:
        return _all_down(call)
    if last.kind == "rate_limit":
        return TooManyRequests(
            f"every deployment is rate-limited; last: {last.message}",
            retry_after_s=last.retry_after_s or 1.0,
        )
    if last.kind == "timeout":
        return RequestTimeout(f"no deployment answered in time; last: {last.message}")
    if last.kind == "context_window":
        return InvalidRequest(
            f"the request is over the context window of every deployment; last: {last.message}",
            "messages",
        )
    return UpstreamFailed(f"every deployment failed; last: {last.message}")
