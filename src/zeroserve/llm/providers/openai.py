"""Any OpenAI-compatible upstream: OpenAI, Groq, Together, Fireworks, vLLM, Ollama.

Streams always ask for the usage chunk (``stream_options.include_usage``) so spend
settles on what the upstream reports; the usage is read from whichever chunk carries
it (``choices: []``, ``choices: null`` or a last chunk with choices, as vLLM and some
proxies send) and removed from what the client sees unless it asked for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson

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

DEFAULT_BASE_URL = "https://api.openai.com/v1"


class OpenAIProvider(Provider):
    kind = "openai"

    def _headers(self, dep: Deployment) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        key = self.credentials.api_key(dep)
        if key:
            headers["authorization"] = f"Bearer {key}"
        return headers

    def _url(self, dep: Deployment, path: str) -> str:
        return (dep.base_url or DEFAULT_BASE_URL).rstrip("/") + path

    async def complete(self, body: JSON, dep: Deployment) -> Completion:
        payload = orjson.dumps({**body, "model": dep.model, "stream": False})
        response = await self.post(
            self._url(dep, "/chat/completions"), payload, self._headers(dep), dep
        )
        data = await read_json(response, dep)
        if not isinstance(data.get("choices"), list):
            raise UpstreamError("protocol", f"{dep.name} answered a completion without choices")
        usage = Usage.from_openai(data.get("usage"))
        if usage is None:
            raise UpstreamError("protocol", f"{dep.name} answered a completion without usage")
        return Completion(data, usage)

    async def stream(self, body: JSON, dep: Deployment, state: StreamState) -> AsyncIterator[JSON]:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True
        payload = orjson.dumps(
            {**body, "model": dep.model, "stream": True, "stream_options": options}
        )
        headers = self._headers(dep)
        headers["accept"] = "text/event-stream"
        response = await self.post(self._url(dep, "/chat/completions"), payload, headers, dep)
        done = False
        async for event, data in sse_events(response, dep):
            if done:
                continue  # read to the end so the connection goes back to the pool
            if data.startswith(b"[DONE]"):
                done = True
                continue
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamError("protocol", f"{dep.name} streamed malformed JSON") from None
            if not isinstance(chunk, dict):
                raise UpstreamError(
                    "protocol", f"{dep.name} streamed a chunk that is not an object"
                )
            if event == "error" or "error" in chunk:
                err = chunk.get("error")
                message = err.get("message") if isinstance(err, dict) else err
                raise UpstreamError(
                    "server",
                    f"{dep.name} failed mid-stream: {self.credentials.scrub(str(message))}",
                )
            usage = chunk.pop("usage", None)
            if usage is not None:
                state.usage = Usage.from_openai(usage)
            choices = chunk.get("choices")
            if not choices:
                continue  # the usage-only chunk (choices [] or null)
            for choice in choices:
                delta = choice.get("delta") or {}
                content = delta.get("content")
                if isinstance(content, str):
                    state.delivered_chars += len(content)
                for call in delta.get("tool_calls") or ():
                    state.delivered_chars += len(
                        (call.get("function") or {}).get("arguments") or ""
                    )
                if choice.get("finish_reason"):
                    state.finish_reason = choice["finish_reason"]
            yield chunk

    async def embed(self, body: JSON, dep: Deployment) -> Completion:
        payload = orjson.dumps({**body, "model": dep.model})
        response = await self.post(self._url(dep, "/embeddings"), payload, self._headers(dep), dep)
        data = await read_json(response, dep)
        if not isinstance(data.get("data"), list):
            raise UpstreamError("protocol", f"{dep.name} answered embeddings without data")
        raw = data.get("usage") or {}
        usage = Usage(input_tokens=int(raw.get("prompt_tokens") or raw.get("total_tokens") or 0))
        return Completion(data, usage)

    async def health(self, dep: Deployment) -> bool:
        try:
            async with self.session.get(
                self._url(dep, "/models"), headers=self._headers(dep), timeout=self.timeout(dep)
            ) as response:
                return response.status < 500
        except Exception:
            return False
