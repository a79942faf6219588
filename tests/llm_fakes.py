"""Local fake LLM upstreams speaking each provider's exact wire format.

One aiohttp server answers as OpenAI (``/v1/chat/completions``, ``/v1/embeddings``,
``/v1/models``), Anthropic (``/v1/messages``) and Bedrock (``/model/{id}/converse[-stream]``,
SigV4 checked with botocore). The upstream model name picks the behaviour, e.g.
``gpt-null`` (usage chunk with ``choices: null``), ``gpt-500``, ``gpt-slow``.
Run standalone: ``python -m tests.llm_fakes PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from zeroserve.llm.eventstream import event, exception

AWS_KEY = "AKIAFAKEFAKEFAKE1234"
AWS_SECRET = "fake/secret/key/for/tests/only/0123456789"
OPENAI_USAGE = {
    "prompt_tokens": 12,
    "completion_tokens": 5,
    "total_tokens": 17,
    "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 2,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
ANTHROPIC_START_USAGE = {
    "input_tokens": 10,
    "output_tokens": 1,
    "cache_creation_input_tokens": 20,
    "cache_read_input_tokens": 30,
}
ANTHROPIC_FINAL_OUTPUT = 7
BEDROCK_USAGE = {
    "inputTokens": 11,
    "outputTokens": 6,
    "totalTokens": 22,
    "cacheReadInputTokens": 3,
    "cacheWriteInputTokens": 2,
}
SLOW_S = 0.3


class FakeUpstream:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        self.requests: list[dict[str, Any]] = []
        self.cancelled = 0
        self.fail_500 = True
        self.chunks = 3
        self.chunk_delay_s = 0.0
        self.slow_s = SLOW_S
        self.app = web.Application()
        r = self.app.router
        r.add_post("/v1/chat/completions", self.openai_chat)
        r.add_post("/v1/embeddings", self.openai_embeddings)
        r.add_get("/v1/models", self.models)
        r.add_post("/v1/messages", self.anthropic)
        r.add_post("/model/{model}/converse", self.bedrock)
        r.add_post("/model/{model}/converse-stream", self.bedrock)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    # lifecycle: in a thread with its own loop, so sync SDK clients can call it
    def start(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.loop.run_until_complete(self._start())
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)
        return self

    async def _start(self, port: int = 0) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def models(self, request: web.Request) -> web.Response:
        self.hits["models"] += 1
        return web.json_response(
            {"object": "list", "data": [{"id": "gpt-fake", "object": "model"}]}
        )

    # OpenAI
    async def openai_chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.hits[model] += 1
        self.requests.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        if model == "gpt-500" or (model == "gpt-flaky" and self.fail_500):
            return web.json_response(
                {
                    "error": {
                        "message": "upstream exploded, key sk-secretsecret123 leaked",
                        "type": "server_error",
                    }
                },
                status=500,
            )
        if model == "gpt-429":
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=429,
                headers={"retry-after": "0.05"},
            )
        if model == "gpt-context":
            return web.json_response(
                {
                    "error": {
                        "message": "This model's maximum context length is 10 tokens",
                        "code": "context_length_exceeded",
                    }
                },
                status=400,
            )
        if model == "gpt-bad-request":
            return web.json_response({"error": {"message": "temperature too hot"}}, status=400)
        if model == "gpt-garbage":
            return web.Response(text="<html>oops</html>", content_type="text/html")
        if model == "gpt-slow":
            await asyncio.sleep(self.slow_s)
        tool = bool(body.get("tools"))
        if not body.get("stream"):
            message: dict[str, Any] = {
                "role": "assistant",
                "content": "Hello world",
                "refusal": None,
            }
            finish = "stop"
            if tool:
                name = body["tools"][0]["function"]["name"]
                message = {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": name, "arguments": '{"city": "Paris"}'},
                        }
                    ],
                }
                finish = "tool_calls"
            if body.get("response_format", {}).get("type") == "json_object":
                message["content"] = '{"ok": true}'
            return web.json_response(
                {
                    "id": "chatcmpl-1",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "system_fingerprint": "fp",
                    "choices": [
                        {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
                    ],
                    "usage": OPENAI_USAGE,
                }
            )
        return await self._openai_stream(request, body, model, tool)

    async def _openai_stream(
        self, request: web.Request, body: dict[str, Any], model: str, tool: bool
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        include = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            c = {
                "id": "chatcmpl-2",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": model,
                "system_fingerprint": "fp",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }
            if include:
                c["usage"] = None
            c.update(extra)
            return b"data: " + orjson.dumps(c) + b"\n\n"

        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            if tool:
                name = body["tools"][0]["function"]["name"]
                await resp.write(
                    chunk(
                        {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {"name": name, "arguments": ""},
                                }
                            ]
                        }
                    )
                )
                for part in ('{"city', '": "Par', 'is"}'):
                    await resp.write(
                        chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
                    )
                finish = "tool_calls"
            else:
                for i in range(self.chunks):
                    if self.chunk_delay_s:
                        await asyncio.sleep(self.chunk_delay_s)
                    await resp.write(chunk({"content": f"tok{i} "}))
                    if model == "gpt-midstream" and i == 0:
                        await resp.write(
                            b'data: {"error": {"message": "overloaded mid-stream", '
                            b'"type": "server_error"}}\n\n'
                        )
                        return resp
                    if model == "gpt-cut" and i == 0:
                        request.transport.close()  # type: ignore[union-attr]
                        return resp
                finish = "stop"
            if model == "gpt-last" and include:
                await resp.write(chunk({}, finish, usage=OPENAI_USAGE))
            else:
                await resp.write(chunk({}, finish))
                if include:
                    shape: Any = None if model == "gpt-null" else []
                    final = {
                        "id": "chatcmpl-2",
                        "object": "chat.completion.chunk",
                        "created": 1,
                        "model": model,
                        "choices": shape,
                        "usage": OPENAI_USAGE,
                    }
                    await resp.write(b"data: " + orjson.dumps(final) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        return resp

    async def openai_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.hits["embeddings"] += 1
        inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return web.json_response(
            {
                "object": "list",
                "model": body["model"],
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, float(i)]}
                    for i in range(len(inputs))
                ],
                "usage": {"prompt_tokens": 3 * len(inputs), "total_tokens": 3 * len(inputs)},
            }
        )

    # Anthropic
    async def anthropic(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        model = body["model"]
        self.hits[model] += 1
        self.requests.append({"path": request.path, "body": body, "headers": dict(request.headers)})
        if request.headers.get("anthropic-version") != "2023-06-01" or not request.headers.get(
            "x-api-key"
        ):
            return web.json_response(
                {
                    "type": "error",
                    "error": {"type": "authentication_error", "message": "missing headers"},
                },
                status=401,
            )
        tool = bool(body.get("tools"))
        content: list[dict[str, Any]] = [{"type": "text", "text": "Hello from Claude"}]
        if tool:
            content.append(
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": body["tools"][0]["name"],
                    "input": {"city": "Paris"},
                }
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if tool else "end_turn",
                    "stop_sequence": None,
                    "usage": {**ANTHROPIC_START_USAGE, "output_tokens": ANTHROPIC_FINAL_OUTPUT},
                }
            )
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)

        async def ev(kind: str, data: dict[str, Any]) -> None:
            await resp.write(
                b"event: "
                + kind.encode()
                + b"\ndata: "
                + orjson.dumps({"type": kind, **data})
                + b"\n\n"
            )

        try:
            await ev(
                "message_start",
                {
                    "message": {
                        "id": "msg_2",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": ANTHROPIC_START_USAGE,
                    }
                },
            )
            await ev(
                "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
            )
            await ev("ping", {})
            for i in range(self.chunks):
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                await ev(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": f"tok{i} "}},
                )
                if model == "claude-overloaded" and i == 0:
                    await ev(
                        "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
                    )
                    return resp
            await ev("content_block_stop", {"index": 0})
            if tool:
                await ev(
                    "content_block_start",
                    {
                        "index": 1,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": body["tools"][0]["name"],
                            "input": {},
                        },
                    },
                )
                for part in ('{"city"', ': "Paris"}'):
                    await ev(
                        "content_block_delta",
                        {"index": 1, "delta": {"type": "input_json_delta", "partial_json": part}},
                    )
                await ev("content_block_stop", {"index": 1})
            await ev(
                "message_delta",
                {
                    "delta": {"stop_reason": None, "stop_sequence": None},
                    "usage": {"output_tokens": 3},
                },
            )
            await ev(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": "tool_use" if tool else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": ANTHROPIC_FINAL_OUTPUT},
                },
            )
            await ev("message_stop", {})
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise
        return resp

    # Bedrock
    async def bedrock(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        problem = verify_sigv4(request, raw)
        if problem:
            return web.json_response(
                {"message": problem},
                status=403,
                headers={"x-amzn-ErrorType": "InvalidSignatureException"},
            )
        model = request.match_info["model"]
        self.hits[model] += 1
        body = orjson.loads(raw)
        self.requests.append(
            {"path": request.raw_path, "body": body, "headers": dict(request.headers)}
        )
        tool = "toolConfig" in body
        if not request.path.endswith("-stream"):
            content: list[dict[str, Any]] = [{"text": "Hello from Bedrock"}]
            if tool:
                content.append(
                    {
                        "toolUse": {
                            "toolUseId": "tu_1",
                            "name": body["toolConfig"]["tools"][0]["toolSpec"]["name"],
                            "input": {"city": "Paris"},
                        }
                    }
                )
            return web.json_response(
                {
                    "output": {"message": {"role": "assistant", "content": content}},
                    "stopReason": "tool_use" if tool else "end_turn",
                    "usage": BEDROCK_USAGE,
                    "metrics": {"latencyMs": 5},
                }
            )
        resp = web.StreamResponse(
            headers={
                "content-type": "application/vnd.amazon.eventstream",
                "x-amzn-RequestId": "req-1",
            }
        )
        await resp.prepare(request)
        await resp.write(event("messageStart", orjson.dumps({"role": "assistant"})))
        for i in range(self.chunks):
            await resp.write(
                event(
                    "contentBlockDelta",
                    orjson.dumps({"contentBlockIndex": 0, "delta": {"text": f"tok{i} "}}),
                )
            )
            if "throttle" in model and i == 0:
                await resp.write(
                    exception("throttlingException", orjson.dumps({"message": "Too many requests"}))
                )
                return resp
        await resp.write(event("contentBlockStop", orjson.dumps({"contentBlockIndex": 0})))
        if tool:
            name = body["toolConfig"]["tools"][0]["toolSpec"]["name"]
            await resp.write(
                event(
                    "contentBlockStart",
                    orjson.dumps(
                        {
                            "contentBlockIndex": 1,
                            "start": {"toolUse": {"toolUseId": "tu_1", "name": name}},
                        }
                    ),
                )
            )
            await resp.write(
                event(
                    "contentBlockDelta",
                    orjson.dumps(
                        {
                            "contentBlockIndex": 1,
                            "delta": {"toolUse": {"input": '{"city": "Paris"}'}},
                        }
                    ),
                )
            )
            await resp.write(event("contentBlockStop", orjson.dumps({"contentBlockIndex": 1})))
        await resp.write(
            event("messageStop", orjson.dumps({"stopReason": "tool_use" if tool else "end_turn"}))
        )
        await resp.write(
            event("metadata", orjson.dumps({"usage": BEDROCK_USAGE, "metrics": {"latencyMs": 5}}))
        )
        return resp

    def stop(self) -> None:
        if self.loop is not None and self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
            self.loop.call_soon_threadsafe(self.loop.stop)


def verify_sigv4(request: web.Request, body: bytes) -> str | None:
    """Recompute the request's SigV4 signature with botocore; None when it matches."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = request.headers.get("authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "missing SigV4 Authorization header"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 ") :].split(","))
    key_id, _date, region, service, _ = parts["Credential"].split("/")
    if key_id != AWS_KEY or service != "bedrock":
        return f"wrong credential scope {parts['Credential']}"
    signed = parts["SignedHeaders"].split(";")
    headers = {h: request.headers[h] for h in signed if h != "host"}
    url = f"http://{request.headers['host']}{request.raw_path}"
    req = AWSRequest(method=request.method, url=url, data=body, headers=headers)
    req.context["timestamp"] = request.headers["x-amz-date"]
    signer = SigV4Auth(Credentials(AWS_KEY, AWS_SECRET), "bedrock", region)
    canonical = signer.canonical_request(req)
    expected = signer.signature(signer.string_to_sign(req, canonical), req)
    if expected != parts["Signature"]:
        return "The request signature we calculated does not match the signature you provided"
    return None


def main() -> None:
    fake = FakeUpstream()
    if len(sys.argv) > 2:
        fake.chunks = int(sys.argv[2])

    async def run() -> None:
        await fake._start(int(sys.argv[1]))
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
