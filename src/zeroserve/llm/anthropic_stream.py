"""Encode canonical (OpenAI) stream chunks as Anthropic Messages server-sent events."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from zeroserve.llm.anthropic_codec import FINISH_TO_STOP
from zeroserve.llm.usage import Usage

JSON = dict[str, Any]


def sse(kind: str, data: JSON) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class AnthropicStreamEncoder:
    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.block = -1
        self.block_kind: str | None = None
        self.tool_blocks: dict[int, int] = {}
        self.finish: str | None = None

    def start(self, usage: Usage | None) -> bytes:
        self.started = True
        u = (usage or Usage()).to_anthropic()
        u["output_tokens"] = max(u["output_tokens"], 0)
        return sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": f"msg_{uuid.uuid4().hex}",
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": u,
                },
            },
        )

    def chunk(self, chunk: JSON, usage: Usage | None) -> bytes:
        out: list[bytes] = [] if self.started else [self.start(usage)]
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self.block_kind != "text":
                    out.append(self._open({"type": "text", "text": ""}, "text"))
                out.append(self._delta({"type": "text_delta", "text": text}))
            for call in delta.get("tool_calls") or []:
                idx = int(call.get("index", 0))
                fn = call.get("function") or {}
                if idx not in self.tool_blocks:
                    out.append(
                        self._open(
                            {
                                "type": "tool_use",
                                "id": call.get("id", ""),
                                "name": fn.get("name", ""),
                                "input": {},
                            },
                            "tool_use",
                        )
                    )
                    self.tool_blocks[idx] = self.block
                if fn.get("arguments"):
                    out.append(
                        self._delta(
                            {"type": "input_json_delta", "partial_json": fn["arguments"]},
                            self.tool_blocks[idx],
                        )
                    )
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return b"".join(out)

    def end(self, usage: Usage | None) -> bytes:
        out: list[bytes] = [] if self.started else [self.start(usage)]
        if self.block_kind is not None:
            out.append(
                sse("content_block_stop", {"type": "content_block_stop", "index": self.block})
            )
            self.block_kind = None
        out.append(
            sse(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": FINISH_TO_STOP.get(self.finish or "stop", "end_turn"),
                        "stop_sequence": None,
                    },
                    "usage": (usage or Usage()).to_anthropic(),
                },
            )
        )
        out.append(sse("message_stop", {"type": "message_stop"}))
        return b"".join(out)

    def error(self, kind: str, message: str) -> bytes:
        return sse("error", {"type": "error", "error": {"type": kind, "message": message}})

    def _open(self, block: JSON, kind: str) -> bytes:
        out = b""
        if self.block_kind is not None:
            out = sse("content_block_stop", {"type": "content_block_stop", "index": self.block})
        self.block += 1
        self.block_kind = kind
        return out + sse(
            "content_block_start",
            {"type": "content_block_start", "index": self.block, "content_block": block},
        )

    def _delta(self, delta: JSON, index: int | None = None) -> bytes:
        return sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": self.block if index is None else index,
                "delta": delta,
            },
        )
