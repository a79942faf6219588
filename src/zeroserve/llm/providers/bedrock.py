"""AWS Bedrock Converse and ConverseStream, signed with SigV4 through botocore.

Each request is signed just before it is sent (STS credentials rotate and the date is
part of the signature), and exactly the signed URL and bytes go out. Model ids are
percent-encoded (``:`` becomes ``%3A``). ``AWS_BEARER_TOKEN_BEDROCK`` skips SigV4.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from yarl import URL

from zeroserve.errors import require
from zeroserve.llm.anthropic_codec import STOP_TO_FINISH
from zeroserve.llm.config import Deployment
from zeroserve.llm.eventstream import EventStreamDecoder, EventStreamError
from zeroserve.llm.providers.base import (
    JSON,
    Completion,
    ErrorKind,
    Provider,
    StreamState,
    UpstreamError,
    read_json,
)
from zeroserve.llm.usage import Usage

SIGNING_NAME = "bedrock"
THROTTLING = {"throttlingException", "serviceUnavailableException"}


class BedrockProvider(Provider):
    kind = "bedrock"

    def _url(self, dep: Deployment, action: str) -> str:
        region = dep.region or os.environ.get("AWS_REGION", "us-east-1")
        base = (dep.base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        return f"{base}/model/{quote(dep.model, safe='')}/{action}"

    def _signed(self, dep: Deployment, url: str, payload: bytes, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept}
        token = os.environ.get("AWS_BEARER_TOKEN_BEDROCK")
        if token:
            self.credentials.remember(token)
            headers["authorization"] = f"Bearer {token}"
            return headers
        auth = require("botocore.auth", "bedrock")
        awsrequest = require("botocore.awsrequest", "bedrock")
        session = require("botocore.session", "bedrock")
        creds = session.get_session().get_credentials()
        if creds is None:
            raise UpstreamError(
                "client",
                f"deployment {dep.name}: no AWS credentials; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY (or a profile) in the gateway's environment",
                500,
            )
        frozen = creds.get_frozen_credentials()
        self.credentials.remember(frozen.secret_key)
        self.credentials.remember(frozen.token)
        request = awsrequest.AWSRequest(method="POST", url=url, data=payload, headers=headers)
        region = dep.region or os.environ.get("AWS_REGION", "us-east-1")
        auth.SigV4Auth(frozen, SIGNING_NAME, region).add_auth(request)
        return dict(request.headers.items())

    async def complete(self, body: JSON, dep: Deployment) -> Completion:
        payload = orjson.dumps(to_converse(body, dep))
        url = self._url(dep, "converse")
        headers = self._signed(dep, url, payload, "application/json")
        response = await self.post(URL(url, encoded=True), payload, headers, dep)
        data = await read_json(response, dep)
        usage = Usage.from_bedrock(data.get("usage"))
        if usage is None or "output" not in data:
            raise UpstreamError("protocol", f"{dep.name} answered a Converse result without usage")
        return Completion(from_converse(data, dep.model), usage)

    async def stream(self, body: JSON, dep: Deployment, state: StreamState) -> AsyncIterator[JSON]:
        payload = orjson.dumps(to_converse(body, dep))
        url = self._url(dep, "converse-stream")
        headers = self._signed(dep, url, payload, "application/vnd.amazon.eventstream")
        response = await self.post(URL(url, encoded=True), payload, headers, dep)
        ctype = response.headers.get("content-type", "")
        if "vnd.amazon.eventstream" not in ctype:
            response.release()
            raise UpstreamError("protocol", f"{dep.name} streamed {ctype or 'no content type'}")
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        tools: dict[int, int] = {}

        def chunk(delta: JSON, finish: str | None = None) -> JSON:
            return {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": dep.model,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
            }

        decoder = EventStreamDecoder()
        seen_metadata = False
        try:
            async for data in response.content.iter_any():
                for headers_, raw in decoder.feed(data):
                    kind = headers_.get(":message-type")
                    name = headers_.get(":event-type") or headers_.get(":exception-type", "")
                    if kind != "event":
                        message = _message_of(raw) or headers_.get(":error-message", name)
                        err_kind: ErrorKind = "rate_limit" if name in THROTTLING else "server"
                        raise UpstreamError(
                            err_kind,
                            f"{dep.name} failed mid-stream ({name}): "
                            f"{self.credentials.scrub(message)}",
                        )
                    ev = orjson.loads(raw) if raw else {}
                    for out in _converse_event(name, ev, tools, state):
                        yield chunk(*out)
                    if name == "metadata":
                        seen_metadata = True
        except (EventStreamError, orjson.JSONDecodeError) as exc:
            raise UpstreamError(
                "protocol", f"{dep.name} sent a malformed event stream: {exc}"
            ) from None
        except TimeoutError:
            raise UpstreamError("timeout", f"{dep.name} stalled mid-stream", 504) from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("connect", f"{dep.name} broke off: {type(exc).__name__}") from None
        finally:
            if seen_metadata:
                response.release()
            else:
                response.close()
        if not seen_metadata:
            raise UpstreamError(
                "protocol", f"{dep.name} closed the stream before its metadata event"
            )


def _converse_event(
    name: str, ev: JSON, tools: dict[int, int], state: StreamState
) -> list[tuple[JSON, str | None]]:
    if name == "messageStart":
        return [({"role": "assistant", "content": ""}, None)]
    if name == "contentBlockStart":
        use = (ev.get("start") or {}).get("toolUse")
        if use:
            idx = tools.setdefault(int(ev.get("contentBlockIndex", 0)), len(tools))
            call = {
                "index": idx,
                "id": use.get("toolUseId", ""),
                "type": "function",
                "function": {"name": use.get("name", ""), "arguments": ""},
            }
            return [({"tool_calls": [call]}, None)]
    elif name == "contentBlockDelta":
        delta = ev.get("delta") or {}
        if "text" in delta:
            state.delivered_chars += len(delta["text"])
            return [({"content": delta["text"]}, None)]
        if "toolUse" in delta:
            part = (delta["toolUse"] or {}).get("input", "")
            state.delivered_chars += len(part)
            idx = tools.get(int(ev.get("contentBlockIndex", 0)), 0)
            return [({"tool_calls": [{"index": idx, "function": {"arguments": part}}]}, None)]
    elif name == "messageStop":
        state.finish_reason = STOP_TO_FINISH.get(ev.get("stopReason", ""), "stop")
        return [({}, state.finish_reason)]
    elif name == "metadata":
        state.usage = Usage.from_bedrock(ev.get("usage"))
    return []


def to_converse(body: JSON, dep: Deployment) -> JSON:
    system: list[JSON] = []
    messages: list[JSON] = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append({"text": _text(m.get("content"))})
        elif role == "tool":
            block = {
                "toolResult": {
                    "toolUseId": m.get("tool_call_id", ""),
                    "content": [{"text": _text(m.get("content"))}],
                }
            }
            if (
                messages
                and messages[-1]["role"] == "user"
                and "toolResult" in messages[-1]["content"][0]
            ):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role == "assistant":
            content: list[JSON] = []
            if _text(m.get("content")):
                content.append({"text": _text(m.get("content"))})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    args = orjson.loads(fn.get("arguments") or "{}")
                except orjson.JSONDecodeError:
                    args = {}
                content.append(
                    {
                        "toolUse": {
                            "toolUseId": call.get("id", ""),
                            "name": fn.get("name", ""),
                            "input": args,
                        }
                    }
                )
            messages.append({"role": "assistant", "content": content})
        else:
            messages.append({"role": "user", "content": [{"text": _text(m.get("content"))}]})
    out: JSON = {"messages": messages}
    if system:
        out["system"] = system
    config: JSON = {}
    max_tokens = (
        body.get("max_completion_tokens") or body.get("max_tokens") or dep.max_output_tokens
    )
    if max_tokens:
        config["maxTokens"] = max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(src) is not None:
            config[dst] = body[src]
    if body.get("stop"):
        config["stopSequences"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    if config:
        out["inferenceConfig"] = config
    if body.get("tools"):
        tool_config: JSON = {
            "tools": [
                {
                    "toolSpec": {
                        "name": t["function"]["name"],
                        "description": t["function"].get("description") or t["function"]["name"],
                        "inputSchema": {
                            "json": t["function"].get("parameters") or {"type": "object"}
                        },
                    }
                }
                for t in body["tools"]
            ]
        }
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            tool_config["toolChoice"] = {
                "tool": {"name": (choice.get("function") or {}).get("name")}
            }
        elif choice == "required":
            tool_config["toolChoice"] = {"any": {}}
        elif choice == "auto":
            tool_config["toolChoice"] = {"auto": {}}
        out["toolConfig"] = tool_config
    return out


def from_converse(data: JSON, model: str) -> JSON:
    message = (data.get("output") or {}).get("message") or {}
    text: list[str] = []
    calls: list[JSON] = []
    for block in message.get("content") or []:
        if "text" in block:
            text.append(block["text"])
        elif "toolUse" in block:
            use = block["toolUse"]
            calls.append(
                {
                    "id": use.get("toolUseId", ""),
                    "type": "function",
                    "function": {
                        "name": use.get("name", ""),
                        "arguments": orjson.dumps(use.get("input") or {}).decode(),
                    },
                }
            )
    msg: JSON = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        msg["tool_calls"] = calls
    usage = Usage.from_bedrock(data.get("usage")) or Usage()
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": msg,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(data.get("stopReason", ""), "stop"),
            }
        ],
        "usage": usage.to_openai(),
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _message_of(raw: bytes) -> str:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return ""
    return str(data.get("message") or data.get("Message") or "") if isinstance(data, dict) else ""
