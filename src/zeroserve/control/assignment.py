"""Sticky variant assignment and the canary's retry on the baseline. Pure functions.

A request key (the ``X-Zeroserve-Key`` header, or a named input field) is hashed
to a point in [0, 1) that depends only on the endpoint and the key. The point is
used in place of a random draw against the cumulative weights, so a key always
lands on the same variant while weights stay put, across restarts and gateway
processes. The canary is the *last* variant, so its range is the top of [0, 1):
as its weight rises the range grows downwards and every key already on the canary
stays on it (``[0.9, 1)`` at 10% lies inside ``[0.5, 1)`` at 50%).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from zeroserve.control.policy import pick

KEY_HEADER = b"x-zeroserve-key"
RETRY_STATUSES = frozenset({500, 502, 503, 504})


def key_point(endpoint: str, key: str) -> float:
    """A stable point in [0, 1) for ``key`` on ``endpoint`` (64 bits of BLAKE2b)."""
    digest = hashlib.blake2b(f"{endpoint}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def request_key(
    headers: Mapping[bytes, bytes], body: Mapping[str, Any] | None = None, field: str | None = None
) -> str | None:
    """The sticky key: the header if sent, else the named top-level body field."""
    raw = headers.get(KEY_HEADER)
    if raw:
        return raw.decode("utf-8", "replace")
    if field and body is not None:
        value = body.get(field)
        if value is not None and not isinstance(value, dict | list):
            return str(value)
    return None


def choose(endpoint: str, cum_weights: Sequence[float], key: str | None, draw: float) -> int:
    """The variant index: by the key's point when there is a key, else by ``draw``."""
    return pick(cum_weights, key_point(endpoint, key) if key is not None else draw)


def canary_failure(status: int, cause: str | None) -> bool:
    """An answer that counts against a variant: a 5xx, or its model raising on input
    that matched the signature (``model_error``, a 422 for the client)."""
    return status >= 500 or cause == "model_error"


def retry_on_baseline(
    status: int, chosen: str, canary: str | None, idempotent: bool, cause: str | None = None
) -> bool:
    """Whether a failed answer from the canary should be sent once more, to the baseline.

    Only during a rollout (``canary`` set), only for the canary's failures (5xx, or its
    model raising), and only when the request may be repeated (sync inference is;
    async submissions and streams that have started are not).
    """
    failed = status in RETRY_STATUSES or cause == "model_error"
    return canary is not None and chosen == canary and idempotent and failed
