"""Poll for a condition instead of sleeping and hoping.

The suite runs on two shared cores, so timeouts are generous; a condition that is
already true returns at once, so generous timeouts cost nothing when things work.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T],
    timeout_s: float,
    what: str | Callable[[], object] = "the condition",
    interval_s: float = 0.05,
) -> T:
    """Call ``predicate`` until it returns something truthy, and return that.

    Fails the test with ``what`` (a description, or a callable giving the state worth
    showing) and the last value seen if it is still falsy after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            shown = what() if callable(what) else what
            raise AssertionError(
                f"timed out after {timeout_s} s waiting for {shown} (last value: {value!r})"
            )
        time.sleep(interval_s)
