"""A model served by zeroserve itself as an LLM provider (embeddings, or text out).

The call goes to the data plane's JSON route, over loopback HTTP or through an
injected callable (the in-process data plane). It is priced from measured compute
time at the deployment's ``prices.compute_per_hour`` (the cost catalog's price for
the hardware), never at zero: the data plane's ``x-zeroserve-compute-us`` when it
sends one, else the call's wall time, which bounds compute from above.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from zeroserve.llm.config import Deployment
from zeroserve.llm.credentials import Credentials
from zeroserve.llm.providers.base import JSON, Completion, Provider, UpstreamError, read_json
from zeroserve.llm.usage import Usage

# (endpoint, {"instances": [...]}) -> (response JSON, compute seconds)
Invoke = Callable[[str, JSON], Awaitable[tuple[JSON, float]]]
DEFAULT_URL = "http://127.0.0.1:8300"


class ZeroserveProvider(Provider):
    kind = "zeroserve"

    def __init__(
        self,
        session: aiohttp.ClientSession,
        credentials: Credentials,
        invoke: Invoke | None = None,
        self_url: str = DEFAULT_URL,
    ) -> None:
        super().__init__(session, credentials)
        self.invoke = invoke
        self.self_url = self_url

    async def _call(self, dep: Deployment, instances: list[Any]) -> tuple[JSON, int]:
        started = time.perf_counter()
        if self.invoke is not None:
            data, compute_s = await self.invoke(dep.model, {"instances": instances})
            return data, max(1, round(compute_s * 1e6))
        url = f"{(dep.base_url or self.self_url).rstrip('/')}/v1/endpoints/{dep.model}/invocations"
        headers = {"content-type": "application/json"}
        key = self.credentials.api_key(dep)
        if key:
            headers["authorization"] = f"Bearer {key}"
        response = await self.post(url, orjson.dumps({"instances": instances}), headers, dep)
        header = response.headers.get("x-zeroserve-compute-us", "")
        data = await read_json(response, dep)
        wall_us = round((time.perf_counter() - started) * 1e6)
        return data, max(1, int(header) if header.isdigit() else wall_us)

    async def embed(self, body: JSON, dep: Deployment) -> Completion:
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else list(raw or [])
        data, compute_us = await self._call(dep, texts)
        vectors = data.get("predictions")
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            raise UpstreamError("protocol", f"{dep.name} answered no vector per input")
        tokens = sum(len(str(t).split()) for t in texts)
        out = {
            "object": "list",
            "model": dep.model,
            "data": [
                {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
            ],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Completion(out, Usage(input_tokens=tokens, compute_us=compute_us))

    async def complete(self, body: JSON, dep: Deployment) -> Completion:
        messages = body.get("messages") or []
        prompt = "\n".join(str(m.get("content") or "") for m in messages)
        data, compute_us = await self._call(dep, [prompt])
        predictions = data.get("predictions")
        if not isinstance(predictions, list) or not predictions:
            raise UpstreamError("protocol", f"{dep.name} answered no prediction")
        text = (
            predictions[0]
            if isinstance(predictions[0], str)
            else orjson.dumps(predictions[0]).decode()
        )
        usage = Usage(
            input_tokens=len(prompt.split()), output_tokens=len(text.split()), compute_us=compute_us
        )
        out = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": dep.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": usage.to_openai(),
        }
        return Completion(out, usage)
