"""Anthropic Messages upstream: requests, responses and streams translated both ways.

Usage: ``message_start`` carries the input side (uncached input, cache reads, cache
writes); every ``message_delta`` carries the *cumulative* output count, so the last
one wins and nothing is summed.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import replace

import orjson

from zeroserve.llm.anthropic_codec import (
    STOP_TO_FINISH,
    from_anthropic_response,
    to_anthropic_request,
)
from zeroserve.llm.config import Deployment
from zeroserve.llm.providers.base import (
    JSON,
    Completion,
    Provider,
    StreamState,
    UpstreamError,
    read_json,
    sse_events,
)
from zeroserve.llm.usage import Usage

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096


class AnthropicProvider(Provider):
    kind = "anthropic"

    def _headers(self, dep: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        key = self.credentials.api_key(dep)
        if key:
            headers["x-api-key"] = key
        return headers

    def _url(self, dep: Deployment) -> str:
        base = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        return base + ("/messages" if base.endswith("/v1") else "/v1/messages")

    def _request(self, body: JSON, dep: Deployment) -> JSON:
        return to_anthropic_request(body, dep.model, dep.max_output_tokens or DEFAULT_MAX_TOKENS)

    async def complete(self, body: JSON, dep: Deployment) -> Completion:
        payload = orjson.dumps(self._request(body, dep))
        response = await self.post(self._url(dep), payload, self._headers(dep), dep)
        data = await read_json(response, dep)
        if data.get("type") == "error":
            raise UpstreamError("server", f"{dep.name} answered an error object")
        if data.get("type") != "message":
            raise UpstreamError("protocol", f"{dep.name} answered something that is not a message")
        out, usage = from_anthropic_response(data)
        return Completion(out, usage)

    async def stream(self, body: JSON, dep: Deployment, state: StreamState) -> AsyncIterator[JSON]:
        request = self._request(body, dep)
        request["stream"] = True
        headers = self._headers(dep)
        headers["accept"] = "text/event-stream"
        response = await self.post(self._url(dep), orjson.dumps(request), headers, dep)
        chunk_id, model, created = "", dep.model, int(time.time())
        tool_index: dict[int, int] = {}

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        stopped = False
        async for event, data in sse_events(response, dep):
            if stopped:
                continue  # read to the end so the connection goes back to the pool
            try:
                ev = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamError("protocol", f"{dep.name} streamed malformed JSON") from None
            kind = ev.get("type") or event
            if kind == "message_start":
                msg = ev.get("message") or {}
                chunk_id = "chatcmpl-" + str(msg.get("id", "")).removeprefix("msg_")
                model = msg.get("model") or model
                state.usage = Usage.from_anthropic(msg.get("usage")) or Usage()
                yield chunk({"role": "assistant", "content": ""})
            elif kind == "content_block_start":
                block = ev.get("content_block") or {}
                if block.get("type") == "tool_use":
                    idx = tool_index.setdefault(int(ev.get("index", 0)), len(tool_index))
                    yield chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": idx,
                                    "id": block.get("id", ""),
                                    "type": "function",
                                    "function": {"name": block.get("name", ""), "arguments": ""},
                                }
                            ]
                        }
                    )
            elif kind == "content_block_delta":
                delta = ev.get("delta") or {}
                if delta.get("type") == "text_delta":
                    text = delta.get("text", "")
                    state.delivered_chars += len(text)
                    yield chunk({"content": text})
                elif delta.get("type") == "input_json_delta":
                    part = delta.get("partial_json", "")
                    state.delivered_chars += len(part)
                    idx = tool_index.get(int(ev.get("index", 0)), 0)
                    yield chunk({"tool_calls": [{"index": idx, "function": {"arguments": part}}]})
            elif kind == "message_delta":
                state.usage = _merge_delta_usage(state.usage, ev.get("usage"))
                stop = (ev.get("delta") or {}).get("stop_reason")
                if stop:
                    state.finish_reason = STOP_TO_FINISH.get(stop, "stop")
                    yield chunk({}, state.finish_reason)
            elif kind == "message_stop":
                stopped = True
            elif kind == "error":
                err = ev.get("error") or {}
                message = self.credentials.scrub(str(err.get("message", "error")))
                raise UpstreamError("server", f"{dep.name} failed mid-stream: {message}", 529)
        if not stopped:
            raise UpstreamError("protocol", f"{dep.name} closed the stream before message_stop")

    async def health(self, dep: Deployment) -> bool:
        base = (dep.base_url or DEFAULT_BASE_URL).rstrip("/")
        url = base + ("/models" if base.endswith("/v1") else "/v1/models")
        try:
            async with self.session.get(
                url, headers=self._headers(dep), timeout=self.timeout(dep)
            ) as response:
                return response.status < 500
        except Exception:
            return False


def _merge_delta_usage(current: Usage | None, raw: object) -> Usage | None:
    """``message_delta`` usage is cumulative: its fields replace, never add."""
    if not isinstance(raw, dict):
        return current
    base = current or Usage()
    changes: dict[str, int] = {}
    for field, key in (
        ("output_tokens", "output_tokens"),
        ("input_tokens", "input_tokens"),
        ("cache_read_tokens", "cache_read_input_tokens"),
        ("cache_write_tokens", "cache_creation_input_tokens"),
    ):
        value = raw.get(key)
        if isinstance(value, int) and value >= 0:
            changes[field] = value
    return replace(base, **changes)
