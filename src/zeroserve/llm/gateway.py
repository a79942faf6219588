"""Build the LLM gateway for one gateway process from the server's settings."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry

from zeroserve.llm.asgi import ASGIApp, LLMGateway
from zeroserve.llm.config import config_path, load_config
from zeroserve.llm.ledger import Ledger
from zeroserve.llm.providers.zeroserve import Invoke
from zeroserve.llm.service import LLMService


def ledger_url(settings: Any, configured: str | None) -> str:
    url = os.environ.get("ZEROSERVE_LLM_DATABASE_URL") or configured
    if url:
        return url
    return f"sqlite:///{(settings.data_dir / 'llm.db').resolve()}"


def build_gateway(
    settings: Any, registry: CollectorRegistry, fallback: ASGIApp, invoke: Invoke | None = None
) -> LLMGateway:
    """``settings`` is the server's ``Settings`` (data_dir, keys, processes, body limit)."""
    source = config_path()
    config = load_config(source)
    service = LLMService(
        config,
        Ledger(ledger_url(settings, config.database_url)),
        registry,
        master_keys=[*settings.api_keys, *settings.admin_api_keys],
        processes=settings.gateway_processes,
        config_source=source,
        invoke=invoke,
        self_url=f"http://127.0.0.1:{settings.port}",
    )
    return LLMGateway(service, fallback, settings.max_payload_bytes)
