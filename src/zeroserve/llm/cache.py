"""Exact-match response cache, scoped per key, with a TTL.

The cache key is a hash of the whole canonical request (model, messages, tools and
every parameter), so two requests share an answer only when they are identical.
Sampled requests (temperature > 0, or unset, which providers treat as 1) are not
cached unless the config or the request (``x-zeroserve-cache: on``) asks.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Any

import orjson

from zeroserve.llm.config import CacheConfig

JSON = dict[str, Any]


class ResponseCache:
    def __init__(self, config: CacheConfig) -> None:
        self.config = config
        self.entries: OrderedDict[bytes, tuple[float, JSON]] = OrderedDict()

    def key(self, key_id: str, body: JSON, forced: bool) -> bytes | None:
        if not self.config.enabled or self.config.max_entries == 0:
            return None
        temperature = body.get("temperature")
        sampled = temperature is None or temperature > 0
        if sampled and not (forced or self.config.sampled):
            return None
        canonical = orjson.dumps(
            {k: v for k, v in body.items() if k not in {"stream", "stream_options"}},
            option=orjson.OPT_SORT_KEYS,
        )
        return hashlib.sha256(key_id.encode() + b"\0" + canonical).digest()

    def get(self, key: bytes, now: float | None = None) -> JSON | None:
        hit = self.entries.get(key)
        if hit is None:
            return None
        expires, body = hit
        if (now or time.monotonic()) >= expires:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        return body

    def put(self, key: bytes, body: JSON, now: float | None = None) -> None:
        self.entries[key] = ((now or time.monotonic()) + self.config.ttl_s, body)
        self.entries.move_to_end(key)
        while len(self.entries) > self.config.max_entries:
            self.entries.popitem(last=False)
