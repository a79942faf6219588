"""The LLM gateway's configuration: logical models, their deployments, prices and limits.

Read from ``llm.yaml`` (or the file named by ``ZEROSERVE_LLM_CONFIG``), else from the
``llm:`` section of ``zeroserve.yaml``. Prices are USD per million tokens; they become
integer micro-dollars per million tokens here so every cost is exact integer arithmetic.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from zeroserve.errors import BadRequest

ProviderKind = Literal["openai", "anthropic", "bedrock", "zeroserve"]
Strategy = Literal["weighted", "latency", "cost", "least_busy"]


class ConfigError(BadRequest):
    code = "invalid_llm_config"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prices(_Strict):
    """USD per million tokens; cache prices default to the input price."""

    input: Decimal = Decimal(0)
    output: Decimal = Decimal(0)
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    compute_per_hour: Decimal = Field(
        Decimal(0), description="zeroserve endpoints: USD per hour of measured compute"
    )

    def micros_per_mtok(self) -> tuple[int, int, int, int]:
        """(input, output, cache read, cache write) in micro-dollars per million tokens."""

        def m(v: Decimal) -> int:
            return int((v * 1_000_000).to_integral_value())

        return (
            m(self.input),
            m(self.output),
            m(self.input if self.cache_read is None else self.cache_read),
            m(self.input if self.cache_write is None else self.cache_write),
        )


class Deployment(_Strict):
    name: str
    provider: ProviderKind
    model: str = Field(description="the upstream's model id (or zeroserve endpoint name)")
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="environment variable holding the key")
    api_key_secret: str | None = Field(None, description="name of the key in the secrets file")
    region: str | None = Field(None, description="bedrock: AWS region")
    weight: float = Field(1.0, ge=0)
    prices: Prices | None = None
    catalog: str | None = Field(None, description="price from this cost-catalog target id")
    catalog_option: str | None = Field(None, description="the catalog option (instance type)")
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int | None = Field(None, gt=0)
    rpm: int | None = Field(None, gt=0)
    tpm: int | None = Field(None, gt=0)
    timeout_s: float = Field(60.0, gt=0)
    first_token_timeout_s: float | None = Field(None, gt=0)
    max_in_flight: int | None = Field(None, gt=0)


class LogicalModel(_Strict):
    name: str
    deployments: list[Deployment] = Field(min_length=1)
    routing: Strategy = "weighted"
    fallbacks: list[str] = Field(default_factory=list, description="models to try next")
    context_window: int | None = Field(None, gt=0)
    max_output_tokens: int = Field(4096, gt=0, description="worst case when max_tokens is unset")
    kind: Literal["chat", "embedding"] = "chat"

    @field_validator("deployments")
    @classmethod
    def _unique(cls, v: list[Deployment]) -> list[Deployment]:
        names = [d.name for d in v]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique within a model: {names}")
        return v


class Resilience(_Strict):
    retries: int = Field(2, ge=0, description="extra attempts after the first, across deployments")
    backoff_base_s: float = Field(0.05, ge=0)
    backoff_max_s: float = Field(2.0, ge=0)
    breaker_failures: int = Field(3, ge=1, description="consecutive failures that open it")
    breaker_cooldown_s: float = Field(5.0, gt=0)
    health_interval_s: float = Field(10.0, gt=0)
    ewma_alpha: float = Field(0.3, gt=0, le=1)


class CacheConfig(_Strict):
    enabled: bool = True
    ttl_s: float = Field(300.0, gt=0)
    max_entries: int = Field(10_000, ge=0)
    sampled: bool = Field(False, description="also cache requests with temperature > 0")


class LLMConfig(_Strict):
    models: list[LogicalModel] = Field(default_factory=list)
    resilience: Resilience = Resilience()
    cache: CacheConfig = CacheConfig()
    secrets_file: Path | None = Field(None, description="YAML or KEY=VALUE file of credentials")
    database_url: str | None = Field(None, description="ledger URL; default SQLite in data_dir")

    @model_validator(mode="after")
    def _references(self) -> LLMConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"model names must be unique: {names}")
        for m in self.models:
            for f in m.fallbacks:
                if f not in names:
                    raise ValueError(f"model {m.name!r} falls back to unknown model {f!r}")
        return self

    def model(self, name: str) -> LogicalModel | None:
        for m in self.models:
            if m.name == name:
                return m
        return None


def config_path() -> Path | None:
    """The file the config comes from, or None when there is none."""
    named = os.environ.get("ZEROSERVE_LLM_CONFIG")
    if named:
        return Path(named)
    for candidate in (Path("llm.yaml"), Path(os.environ.get("ZEROSERVE_CONFIG", "zeroserve.yaml"))):
        if candidate.is_file():
            return candidate
    return None


def parse_config(data: Any, origin: str) -> LLMConfig:
    if isinstance(data, dict) and "llm" in data and "models" not in data:
        data = data["llm"]
    if data is None:
        data = {}
    try:
        return LLMConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"{origin}: {problems}") from None


def load_config(path: Path | None = None) -> LLMConfig:
    path = path or config_path()
    if path is None:
        return LLMConfig()
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the LLM config {path}: {exc}") from None
    if path.name != "llm.yaml" and isinstance(data, dict) and "llm" not in data:
        return LLMConfig()  # a zeroserve.yaml without an llm: section
    return parse_config(data, str(path))
