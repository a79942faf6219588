"""Requests-per-minute and tokens-per-minute windows, per key and per deployment.

Counted in each gateway process (like the data plane's concurrency limits); a limit
of N with P gateway processes is enforced as N/P in each, rounded up.
"""

from __future__ import annotations

import math
from collections import deque

from zeroserve.errors import TooManyRequests

WINDOW_S = 60.0


class RateWindow:
    def __init__(self) -> None:
        self.events: deque[tuple[float, int]] = deque()
        self.total = 0

    def _trim(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - WINDOW_S:
            self.total -= self.events.popleft()[1]

    def count(self, now: float) -> int:
        self._trim(now)
        return self.total

    def add(self, now: float, amount: int = 1) -> None:
        self.events.append((now, amount))
        self.total += amount

    def retry_after_s(self, now: float) -> float:
        return max(1.0, self.events[0][0] + WINDOW_S - now) if self.events else 1.0


class Limiter:
    def __init__(self, processes: int = 1) -> None:
        self.processes = max(1, processes)
        self.requests: dict[str, RateWindow] = {}
        self.tokens: dict[str, RateWindow] = {}

    def share(self, limit: int) -> int:
        return math.ceil(limit / self.processes)

    def admit(self, scope: str, rpm: int | None, tpm: int | None, now: float) -> None:
        """Count one request for ``scope``, or raise 429 with the wait in Retry-After."""
        if tpm is not None:
            tokens = self.tokens.setdefault(scope, RateWindow())
            if tokens.count(now) >= self.share(tpm):
                raise TooManyRequests(
                    f"{scope} is over its limit of {tpm} tokens a minute; retry later",
                    retry_after_s=tokens.retry_after_s(now),
                )
        if rpm is not None:
            window = self.requests.setdefault(scope, RateWindow())
            if window.count(now) >= self.share(rpm):
                raise TooManyRequests(
                    f"{scope} is over its limit of {rpm} requests a minute; retry later",
                    retry_after_s=window.retry_after_s(now),
                )
            window.add(now)

    def spend_tokens(self, scope: str, tokens: int, now: float) -> None:
        if tokens > 0:
            self.tokens.setdefault(scope, RateWindow()).add(now, tokens)
