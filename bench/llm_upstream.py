"""A fixed-time OpenAI-compatible upstream for bench/llm_gateway.py (a bare ASGI app on uvicorn).

The request's ``model`` picks the mode: ``instant`` answers at once, ``delay50`` after 50 ms,
``stream`` streams ``LLM_BENCH_CHUNKS`` chunks ``LLM_BENCH_CHUNK_MS`` apart (usage chunk
included when asked). Run: ``python bench/llm_upstream.py PORT``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import orjson
import uvicorn

CHUNKS = int(os.environ.get("LLM_BENCH_CHUNKS", "20"))
CHUNK_S = float(os.environ.get("LLM_BENCH_CHUNK_MS", "2")) / 1000
USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello world"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }
)
MODELS = orjson.dumps({"object": "list", "data": [{"id": "instant", "object": "model"}]})


def _chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "bench",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


FIRST = _chunk({"role": "assistant", "content": ""})
TOKEN = _chunk({"content": "tok "})
LAST = _chunk({}, "stop")
USAGE_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "bench",
            "choices": [],
            "usage": USAGE,
        }
    )
    + b"\n\n"
)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "GET":
        await _send(send, MODELS)
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = orjson.loads(body)
    model = str(request.get("model", "instant")).rsplit("/", 1)[-1]
    if model == "delay50":
        await asyncio.sleep(0.05)
    if not request.get("stream"):
        await _send(send, COMPLETION)
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    await send({"type": "http.response.body", "body": FIRST, "more_body": True})
    for _ in range(CHUNKS):
        await asyncio.sleep(CHUNK_S)
        await send({"type": "http.response.body", "body": TOKEN, "more_body": True})
    tail = LAST
    if (request.get("stream_options") or {}).get("include_usage"):
        tail += USAGE_CHUNK
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


async def _send(send: Any, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
