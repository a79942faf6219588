"""Token buckets and a failed-authentication counter, all in process memory."""

from __future__ import annotations

import time
from collections import deque

MAX_TRACKED = 10_000
"""Buckets or counters kept before the oldest are forgotten (bounded memory)."""


class TokenBucket:
    """``rate`` tokens a second, up to ``burst``; ``take`` says how long to wait if empty."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self) -> float:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class TokenBuckets:
    """One bucket per caller (a key digest or a client address)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.buckets: dict[bytes, TokenBucket] = {}

    def take(self, who: bytes) -> float:
        bucket = self.buckets.get(who)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED:
                self.buckets.pop(next(iter(self.buckets)))
            bucket = self.buckets[who] = TokenBucket(self.rate, max(1.0, self.rate))
        return bucket.take()


class FailureCounter:
    """Failed authentications per client address in a sliding window."""

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit, self.window_s = limit, window_s
        self.failures: dict[str, deque[float]] = {}

    def add(self, client: str) -> None:
        times = self.failures.get(client)
        if times is None:
            if len(self.failures) >= MAX_TRACKED:
                self.failures.pop(next(iter(self.failures)))
            times = self.failures[client] = deque(maxlen=self.limit)
        times.append(time.monotonic())

    def blocked_for(self, client: str) -> float:
        """Seconds until ``client`` may try again (0 when it may now)."""
        times = self.failures.get(client)
        if times is None or len(times) < self.limit:
            return 0.0
        wait = times[0] + self.window_s - time.monotonic()
        if wait <= 0:
            del self.failures[client]
            return 0.0
        return wait
