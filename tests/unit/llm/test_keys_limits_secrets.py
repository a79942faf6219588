"""Rate windows, credentials from a secrets file, scrubbing, and SigV4 refusal."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.llm_fakes import AWS_KEY, FakeUpstream
from zeroserve.errors import TooManyRequests
from zeroserve.llm.config import Deployment
from zeroserve.llm.credentials import Credentials
from zeroserve.llm.limits import Limiter
from zeroserve.llm.providers.base import UpstreamError
from zeroserve.llm.providers.bedrock import BedrockProvider


def test_rpm_and_tpm_windows() -> None:
    lim = Limiter(processes=2)  # a limit of 4 with two processes is 2 in each
    lim.admit("k", 4, None, 0.0)
    lim.admit("k", 4, None, 1.0)
    with pytest.raises(TooManyRequests) as exc:
        lim.admit("k", 4, None, 2.0)
    assert exc.value.headers()["Retry-After"] == "58"  # the oldest leaves the window at 60 s
    lim.admit("k", 4, None, 61.0)  # the window moved on
    lim.spend_tokens("t", 600, 0.0)
    with pytest.raises(TooManyRequests, match="tokens a minute"):
        lim.admit("t", None, 1000, 1.0)


def test_secrets_file_and_scrubbing(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"
    path.write_text("# upstream keys\nGROQ_KEY='gsk_abcdefghijklmnop'\n")
    creds = Credentials(path)
    dep = Deployment(name="g", provider="openai", model="m", api_key_secret="GROQ_KEY")
    assert creds.api_key(dep) == "gsk_abcdefghijklmnop"
    text = (
        "bad key gsk_abcdefghijklmnop; also Authorization: Bearer abcdefghijklmnopqrstuv"
        " and sk-live1234567890"
    )
    scrubbed = creds.scrub(text)
    assert "gsk_abcdefghijklmnop" not in scrubbed
    assert "abcdefghijklmnopqrstuv" not in scrubbed
    assert "sk-live1234567890" not in scrubbed


def test_bedrock_wrong_secret_is_refused_by_the_signature_check(
    upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AWS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-right-secret-0000000000000000")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    dep = Deployment(
        name="br",
        provider="bedrock",
        model="anthropic.claude:0",
        base_url=upstream.url,
        region="us-west-2",
    )

    async def run() -> Any:
        async with aiohttp.ClientSession() as session:
            return await BedrockProvider(session, Credentials()).complete(
                {"messages": [{"role": "user", "content": "hi"}]}, dep
            )

    with pytest.raises(UpstreamError) as exc:
        asyncio.run(run())
    assert exc.value.status == 403 and "signature" in exc.value.message
    assert "not-the-right-secret" not in exc.value.message


def test_bedrock_model_id_is_percent_encoded_and_signed(
    upstream: FakeUpstream, gateway: Any
) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="bedrock", messages=[{"role": "user", "content": "hi"}])  # type: ignore[arg-type]
    sent = [r for r in upstream.requests if "/model/" in r["path"]][-1]
    assert sent["path"] == "/model/anthropic.claude-3-5%3A0/converse"
    assert sent["headers"]["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=" + AWS_KEY)


def test_key_model_allowlist_and_rpm(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from zeroserve.errors import Forbidden, Unauthorized
    from zeroserve.llm.config import LLMConfig
    from zeroserve.llm.ledger import Ledger
    from zeroserve.llm.service import LLMService

    ledger = Ledger(f"sqlite:///{tmp_path / 'k.db'}")
    svc = LLMService(LLMConfig(), ledger, CollectorRegistry())
    assert svc.authenticate(None).key_id == "anonymous"  # no keys anywhere: open (loopback)
    record, secret = ledger.create_key("narrow", models=["chat"], rpm=1)
    svc.keys = ledger.keys_by_digest()
    caller = svc.authenticate(secret)
    with pytest.raises(Forbidden, match="may not use model 'claude'"):
        svc.admit(caller, "claude", 0.0)
    svc.admit(caller, "chat", 0.0)
    with pytest.raises(TooManyRequests):
        svc.admit(caller, "chat", 1.0)
    with pytest.raises(Unauthorized):
        svc.authenticate(None)  # a live key exists: anonymous calls are refused
    with pytest.raises(Unauthorized):
        svc.authenticate("zsk-wrong")
    ledger.revoke(record.id)
    svc.keys = ledger.keys_by_digest()
    with pytest.raises(Forbidden, match="revoked"):
        svc.authenticate(secret)
    svc.executor.shutdown()
    ledger.close()
