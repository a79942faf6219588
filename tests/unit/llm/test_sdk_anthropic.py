"""The official anthropic SDK against POST /v1/messages, over each upstream wire format."""

from __future__ import annotations

import anthropic
import pytest

from tests.llm_fakes import (
    ANTHROPIC_FINAL_OUTPUT,
    ANTHROPIC_START_USAGE,
    BEDROCK_USAGE,
    OPENAI_USAGE,
)
from tests.unit.llm.conftest import GatewayThread

MESSAGES = [{"role": "user", "content": "hi"}]
TOOLS = [
    {
        "name": "weather",
        "description": "w",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]

# logical model -> Anthropic-style usage (input excludes cache tiers)
EXPECTED = {
    "claude": (
        ANTHROPIC_START_USAGE["input_tokens"],
        ANTHROPIC_FINAL_OUTPUT,
        ANTHROPIC_START_USAGE["cache_read_input_tokens"],
        ANTHROPIC_START_USAGE["cache_creation_input_tokens"],
    ),
    "chat": (OPENAI_USAGE["prompt_tokens"] - 4, OPENAI_USAGE["completion_tokens"], 4, 0),
    "bedrock": (
        BEDROCK_USAGE["inputTokens"],
        BEDROCK_USAGE["outputTokens"],
        BEDROCK_USAGE["cacheReadInputTokens"],
        BEDROCK_USAGE["cacheWriteInputTokens"],
    ),
}


@pytest.fixture()
def client(gateway: GatewayThread) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)


def _usage(u: anthropic.types.Usage) -> tuple[int, int, int, int]:
    return (
        u.input_tokens,
        u.output_tokens,
        u.cache_read_input_tokens or 0,
        u.cache_creation_input_tokens or 0,
    )


@pytest.mark.parametrize("model", ["claude", "chat", "bedrock"])
def test_message(client: anthropic.Anthropic, model: str) -> None:
    msg = client.messages.create(model=model, max_tokens=100, messages=MESSAGES, system="be brief")  # type: ignore[arg-type]
    assert msg.content[0].type == "text" and msg.content[0].text
    assert msg.stop_reason == "end_turn"
    assert _usage(msg.usage) == EXPECTED[model]


@pytest.mark.parametrize("model", ["claude", "chat", "bedrock"])
def test_stream(client: anthropic.Anthropic, model: str) -> None:
    with client.messages.stream(model=model, max_tokens=100, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "tok0 tok1 tok2 "
    assert final.stop_reason == "end_turn"
    assert _usage(final.usage) == EXPECTED[model]


@pytest.mark.parametrize("model", ["claude", "chat", "bedrock"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_use(client: anthropic.Anthropic, model: str, stream: bool) -> None:
    if stream:
        with client.messages.stream(
            model=model, max_tokens=100, messages=MESSAGES, tools=TOOLS
        ) as s:  # type: ignore[arg-type]
            final = s.get_final_message()
    else:
        final = client.messages.create(model=model, max_tokens=100, messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
    uses = [b for b in final.content if b.type == "tool_use"]
    assert uses and uses[0].name == "weather" and uses[0].input == {"city": "Paris"}
    assert final.stop_reason == "tool_use"


def test_tool_result_round_trip(client: anthropic.Anthropic, upstream: object) -> None:
    history = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_9", "name": "weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"}],
        },
    ]
    client.messages.create(model="claude", max_tokens=50, messages=history, tools=TOOLS)  # type: ignore[arg-type]
    sent = upstream.requests[-1]["body"]  # type: ignore[attr-defined]
    assert sent["messages"][1]["content"][0] == {
        "type": "tool_use",
        "id": "toolu_9",
        "name": "weather",
        "input": {"city": "Paris"},
    }
    assert sent["messages"][2]["content"][0]["type"] == "tool_result"
    assert sent["messages"][2]["content"][0]["tool_use_id"] == "toolu_9"


def test_errors_in_anthropic_format(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as nf:
        client.messages.create(model="nope", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
    assert nf.value.body["type"] == "error"  # type: ignore[index]
    assert nf.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(model="claude", max_tokens=0, messages=MESSAGES)  # type: ignore[arg-type]
    assert "max_tokens" in str(bad.value)


def test_mid_stream_overloaded(client: anthropic.Anthropic) -> None:
    stream = client.messages.stream(model="claude-mid", max_tokens=100, messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(anthropic.APIStatusError) as err, stream as s:
        for _ in s.text_stream:
            pass
    assert "Overloaded" in str(err.value)


def test_models_list(client: anthropic.Anthropic) -> None:
    names = [m.id for m in client.models.list()]
    assert "claude" in names
