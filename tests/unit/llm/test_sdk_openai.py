"""The official openai SDK against the gateway, over each upstream wire format."""

from __future__ import annotations

import openai
import pytest

from tests.llm_fakes import (
    ANTHROPIC_FINAL_OUTPUT,
    ANTHROPIC_START_USAGE,
    BEDROCK_USAGE,
    OPENAI_USAGE,
)
from tests.unit.llm.conftest import GatewayThread

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "weather",
            "description": "w",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


@pytest.fixture()
def client(gateway: GatewayThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0)


EXPECTED = {
    # logical model -> (prompt, completion, cached) as the upstream reported them
    "chat": (OPENAI_USAGE["prompt_tokens"], OPENAI_USAGE["completion_tokens"], 4),
    "claude": (
        ANTHROPIC_START_USAGE["input_tokens"]
        + ANTHROPIC_START_USAGE["cache_read_input_tokens"]
        + ANTHROPIC_START_USAGE["cache_creation_input_tokens"],
        ANTHROPIC_FINAL_OUTPUT,
        ANTHROPIC_START_USAGE["cache_read_input_tokens"],
    ),
    "bedrock": (
        BEDROCK_USAGE["inputTokens"]
        + BEDROCK_USAGE["cacheReadInputTokens"]
        + BEDROCK_USAGE["cacheWriteInputTokens"],
        BEDROCK_USAGE["outputTokens"],
        BEDROCK_USAGE["cacheReadInputTokens"],
    ),
}


@pytest.mark.parametrize("model", ["chat", "claude", "bedrock"])
def test_completion_usage_and_headers(client: openai.OpenAI, model: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=MESSAGES, temperature=0.5
    )  # type: ignore[arg-type]
    done = raw.parse()
    assert done.choices[0].message.content
    prompt, completion, cached = EXPECTED[model]
    assert done.usage is not None
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (prompt, completion)
    assert done.usage.prompt_tokens_details is not None
    assert done.usage.prompt_tokens_details.cached_tokens == cached
    assert (
        raw.headers["x-zeroserve-deployment"]
        == {"chat": "oa-main", "claude": "an-main", "bedrock": "br-main"}[model]
    )
    assert int(raw.headers["x-zeroserve-overhead-us"]) >= 0


@pytest.mark.parametrize("model", ["chat", "chat-null", "chat-last", "claude", "bedrock"])
def test_stream_text_and_usage(client: openai.OpenAI, model: str) -> None:
    stream = client.chat.completions.create(
        model=model, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )  # type: ignore[arg-type]
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
            assert chunk.choices == []
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "tok0 tok1 tok2 "
    assert finish == "stop"
    assert usage is not None
    key = model if model in EXPECTED else "chat"
    prompt, completion, _cached = EXPECTED[key]
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)


def test_stream_without_include_usage_has_no_usage_chunk(
    client: openai.OpenAI, gateway: GatewayThread
) -> None:
    chunks = list(client.chat.completions.create(model="chat", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert all(c.usage is None for c in chunks)
    assert all(c.choices for c in chunks)


@pytest.mark.parametrize("model", ["chat", "claude", "bedrock"])
@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls(client: openai.OpenAI, model: str, stream: bool) -> None:
    if not stream:
        done = client.chat.completions.create(model=model, messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
        calls = done.choices[0].message.tool_calls
        assert calls is not None and calls[0].function.name == "weather"  # type: ignore[union-attr]
        assert calls[0].function.arguments.replace(" ", "") == '{"city":"Paris"}'  # type: ignore[union-attr]
        assert done.choices[0].finish_reason == "tool_calls"
        return
    args, name, finish = "", None, None
    for chunk in client.chat.completions.create(
        model=model, messages=MESSAGES, tools=TOOLS, stream=True
    ):  # type: ignore[arg-type]
        for c in chunk.choices:
            for call in c.delta.tool_calls or []:
                name = call.function.name or name if call.function else name
                args += (call.function.arguments or "") if call.function else ""
            finish = c.finish_reason or finish
    assert name == "weather"
    assert args.replace(" ", "") == '{"city":"Paris"}'
    assert finish == "tool_calls"


def test_response_format_passthrough(client: openai.OpenAI, upstream: object) -> None:
    done = client.chat.completions.create(
        model="chat", messages=MESSAGES, response_format={"type": "json_object"}
    )  # type: ignore[arg-type]
    assert done.choices[0].message.content == '{"ok": true}'


def test_embeddings_and_models(client: openai.OpenAI) -> None:
    out = client.embeddings.create(model="embed", input=["a", "b"])
    assert [d.index for d in out.data] == [0, 1]
    assert out.usage.prompt_tokens == 6
    names = [m.id for m in client.models.list()]
    assert "chat" in names and "embed" in names


def test_errors_in_openai_format(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert "nope" in nf.value.message and "chat" in nf.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="chat", messages=[{"role": "robot", "content": "x"}])  # type: ignore[list-item]
    assert "messages[0].role" in bad.value.message
    bad_tool = [{"type": "function", "function": {"name": "f", "parameters": {"type": "dict"}}}]
    with pytest.raises(openai.BadRequestError) as schema:
        client.chat.completions.create(model="chat", messages=MESSAGES, tools=bad_tool)  # type: ignore[arg-type]
    assert "not a JSON Schema type" in schema.value.message


def test_upstream_error_bodies_are_scrubbed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="broken", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.status_code == 502
    assert "upstream exploded" in err.value.message
    assert "sk-secretsecret123" not in err.value.message
    assert "sk-secretsecret123" not in str(err.value.body)
    with pytest.raises(openai.APIStatusError) as garbage:
        client.chat.completions.create(model="garbage", messages=MESSAGES)  # type: ignore[arg-type]
    assert garbage.value.status_code == 502 and "not JSON" in garbage.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="bad-request", messages=MESSAGES)  # type: ignore[arg-type]
    assert "temperature too hot" in bad.value.message


def test_mid_stream_error_is_an_error_event(client: openai.OpenAI, gateway: GatewayThread) -> None:
    got = ""
    with pytest.raises(openai.APIError) as err:
        for chunk in client.chat.completions.create(
            model="midstream", messages=MESSAGES, stream=True
        ):  # type: ignore[arg-type]
            got += "".join(c.delta.content or "" for c in chunk.choices)
    assert got == "tok0 "
    assert "overloaded mid-stream" in str(err.value)
    row = [r for r in gateway.rows() if r["model"] == "midstream"][-1]
    assert row["estimated"] is True or row["estimated"] == 1
    assert row["output_tokens"] > 0 and row["cost_micros"] > 0
