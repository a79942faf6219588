"""Translate between OpenAI chat completions (the canonical shape) and Anthropic Messages.

Used both ways: the Anthropic provider turns canonical requests into Messages calls,
and ``POST /v1/messages`` turns Messages requests into canonical ones and the canonical
answer (or stream) back into Messages.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from zeroserve.errors import BadRequest
from zeroserve.llm.usage import Usage

JSON = dict[str, Any]

STOP_TO_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
    "function_call": "tool_use",
}


# canonical -> Anthropic (the provider's direction)


def to_anthropic_request(body: JSON, model: str, default_max_tokens: int) -> JSON:
    system: list[str] = []
    messages: list[JSON] = []
    for m in body.get("messages") or []:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(_text_of(m.get("content")))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": _text_of(m.get("content")),
            }
            if messages and messages[-1]["role"] == "user" and _all_tool_results(messages[-1]):
                messages[-1]["content"].append(block)
            else:
                messages.append({"role": "user", "content": [block]})
        elif role == "assistant":
            blocks: list[JSON] = []
            text = _text_of(m.get("content"))
            if text:
                blocks.append({"type": "text", "text": text})
            for call in m.get("tool_calls") or []:
                fn = call.get("function") or {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id", ""),
                        "name": fn.get("name", ""),
                        "input": _loads_object(fn.get("arguments") or "{}"),
                    }
                )
            messages.append({"role": "assistant", "content": blocks})
        else:
            messages.append({"role": "user", "content": _user_blocks(m.get("content"))})
    out: JSON = {
        "model": model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens")
        or body.get("max_tokens")
        or default_max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object"},
            }
            for t in body["tools"]
            if t.get("type") == "function"
        ]
    choice = body.get("tool_choice")
    if choice is not None and body.get("tools"):
        out["tool_choice"] = _tool_choice_to_anthropic(choice)
    return out


def from_anthropic_response(data: JSON) -> tuple[JSON, Usage]:
    text: list[str] = []
    calls: list[JSON] = []
    for block in data.get("content") or []:
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: JSON = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    usage = Usage.from_anthropic(data.get("usage")) or Usage()
    body = {
        "id": data.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": data.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH.get(data.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage.to_openai(),
    }
    return body, usage


# Anthropic -> canonical (the inbound /v1/messages direction)


def from_anthropic_request(body: JSON) -> JSON:
    if not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("messages: must be a non-empty list of {role, content} objects")
    if not isinstance(body.get("max_tokens"), int) or body["max_tokens"] < 1:
        raise BadRequest("max_tokens: required, a positive integer (the most tokens to generate)")
    messages: list[JSON] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text_of(system)})
    for i, m in enumerate(body["messages"]):
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: must be 'user' or 'assistant'")
        content = m.get("content")
        if isinstance(content, str):
            messages.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise BadRequest(f"messages.{i}.content: must be a string or a list of blocks")
        texts: list[JSON] = []
        calls: list[JSON] = []
        for block in content:
            kind = block.get("type") if isinstance(block, dict) else None
            if kind == "text":
                texts.append({"type": "text", "text": block.get("text", "")})
            elif kind == "image":
                src = block.get("source") or {}
                url = src.get("url") or f"data:{src.get('media_type')};base64,{src.get('data')}"
                texts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "tool_use":
                calls.append(
                    {
                        "id": block.get("id", ""),
                        "type": "function",
                        "function": {
                            "name": block.get("name", ""),
                            "arguments": orjson.dumps(block.get("input") or {}).decode(),
                        },
                    }
                )
            elif kind == "tool_result":
                messages.append(
                    {
                        "role": "tool",
                        "tool_call_id": block.get("tool_use_id", ""),
                        "content": _text_of(block.get("content")),
                    }
                )
            elif kind in ("thinking", "redacted_thinking"):
                continue
            else:
                raise BadRequest(f"messages.{i}.content: unsupported block type {kind!r}")
        if role == "assistant":
            msg: JSON = {"role": "assistant", "content": "".join(t.get("text", "") for t in texts)}
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
        elif texts:
            messages.append({"role": "user", "content": texts})
    out: JSON = {"model": body.get("model"), "messages": messages, "max_tokens": body["max_tokens"]}
    for key in ("temperature", "top_p", "top_k", "stream"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        out["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.get("name", ""),
                    "description": t.get("description", ""),
                    "parameters": t.get("input_schema") or {"type": "object"},
                },
            }
            for t in body["tools"]
        ]
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        kind = choice.get("type")
        out["tool_choice"] = (
            {"type": "function", "function": {"name": choice.get("name", "")}}
            if kind == "tool"
            else {"auto": "auto", "any": "required", "none": "none"}.get(kind or "", "auto")
        )
    return out


def to_anthropic_response(body: JSON, usage: Usage, model: str) -> JSON:
    choice = (body.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[JSON] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": fn.get("name", ""),
                "input": _loads_object(fn.get("arguments") or "{}"),
            }
        )
    return {
        "id": _message_id(body.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage.to_anthropic(),
    }


def error_body(kind: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})


def anthropic_error_type(status: int) -> str:
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        422: "invalid_request_error",
        429: "rate_limit_error",
        529: "overloaded_error",
        503: "overloaded_error",
    }.get(status, "api_error")


# helpers


def _message_id(value: Any) -> str:
    text = str(value or uuid.uuid4().hex)
    return text if text.startswith("msg_") else f"msg_{text.removeprefix('chatcmpl-')}"


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content)


def _user_blocks(content: Any) -> list[JSON] | str:
    if isinstance(content, str):
        return content
    blocks: list[JSON] = []
    for part in content or []:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            if url.startswith("data:") and ";base64," in url:
                media, _, data = url[5:].partition(";base64,")
                source: JSON = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            blocks.append({"type": "image", "source": source})
    return blocks


def _all_tool_results(message: JSON) -> bool:
    content = message.get("content")
    return isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)


def _loads_object(text: str) -> JSON:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _tool_choice_to_anthropic(choice: Any) -> JSON:
    if isinstance(choice, dict):
        return {"type": "tool", "name": (choice.get("function") or {}).get("name", "")}
    return {"type": {"auto": "auto", "required": "any", "none": "none"}.get(str(choice), "auto")}
