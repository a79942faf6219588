"""Decode large request bodies in a worker thread, so one big body does not stall the
event loop that every other request waits on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_decoders = asyncio.Semaphore(2)
"""Large decodes at once: more would only add memory, the GIL runs one at a time."""


async def off_loop(
    threshold: int, body: bytes, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T:
    """``fn(*args)`` inline for a small ``body``, in a thread above ``threshold`` bytes."""
    if len(body) <= threshold:
        return fn(*args, **kwargs)
    async with _decoders:
        return await asyncio.to_thread(fn, *args, **kwargs)
