"""Live windows of inputs and outputs per endpoint variant, for drift gauges and the
canary's input-drift guard.

``observe`` (hot path) only appends references to the request's arrays, up to a
bound (beyond it, rows are dropped and counted). ``fold`` (off the hot path, every
few seconds) adds them to sketches over the version's reference bins. Windows
roll: the current one and the previous one are kept, each ``window_s`` long, and
drift is judged on their union, so the gauges cover between one and two windows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from zeroserve.monitor.drift import DriftThresholds, FeatureDrift, compare
from zeroserve.monitor.profile import Profile, concat
from zeroserve.types import Arrays, Signature

MAX_PENDING = 10_000


@dataclass
class _Live:
    reference: Profile
    signature: Signature
    current: Profile
    previous: Profile | None = None
    started_at: float = 0.0
    pending: list[tuple[Arrays, Arrays | None]] = field(default_factory=list)


class LiveWindows:
    def __init__(self, window_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._live: dict[tuple[str, str], _Live] = {}
        self._lock = threading.Lock()
        self.dropped = 0

    def watch(self, endpoint: str, variant: str, reference: Profile, signature: Signature) -> None:
        key = (endpoint, variant)
        if key not in self._live:
            self._live[key] = _Live(reference, signature, reference.live(), started_at=self.clock())

    def forget(self, endpoint: str, variant: str | None = None) -> None:
        for key in [k for k in self._live if k[0] == endpoint and variant in (None, k[1])]:
            self._live.pop(key, None)

    def observe(self, endpoint: str, variant: str, inputs: Arrays, outputs: Arrays | None) -> None:
        """Hot path: keep references to this request's arrays until the next fold."""
        live = self._live.get((endpoint, variant))
        if live is None:
            return
        if len(live.pending) >= MAX_PENDING:
            self.dropped += 1
            return
        live.pending.append((inputs, outputs))

    def fold(self) -> None:
        """Add pending requests to the current windows; roll windows that are full."""
        now = self.clock()
        with self._lock:
            for live in list(self._live.values()):
                pending, live.pending = live.pending, []
                if pending:
                    # One observation of all pending rows: per request, 98 tiny sketch
                    # updates cost more than the requests did.
                    inputs = concat([p[0] for p in pending])
                    outputs = [p[1] for p in pending if p[1] is not None]
                    same = len(outputs) == len(pending)
                    live.current.observe(live.signature, inputs, concat(outputs) if same else None)
                if now - live.started_at >= self.window_s:
                    live.previous, live.current = live.current, live.reference.live()
                    live.started_at = now

    def window(self, endpoint: str, variant: str) -> Profile | None:
        live = self._live.get((endpoint, variant))
        if live is None:
            return None
        merged = live.reference.live()
        merged.merge(live.current)
        if live.previous is not None:
            merged.merge(live.previous)
        return merged

    def drift(
        self, endpoint: str, variant: str, thresholds: DriftThresholds | None = None
    ) -> list[FeatureDrift]:
        live = self._live.get((endpoint, variant))
        window = self.window(endpoint, variant)
        if live is None or window is None:
            return []
        return compare(live.reference.inputs, window.inputs, thresholds)

    def watched(self) -> list[tuple[str, str]]:
        return list(self._live)
