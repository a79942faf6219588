"""Typed server settings.

Read, in order of precedence, from keyword arguments, ``ZEROSERVE_*``
environment variables, and a ``zeroserve.yaml`` file in the working directory
(or the file named by ``ZEROSERVE_CONFIG``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULT_PORT = 8300


def _config_file() -> Path:
    return Path(os.environ.get("ZEROSERVE_CONFIG", "zeroserve.yaml"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ZEROSERVE_", extra="ignore")

    data_dir: Path = Field(Path(".zeroserve"), description="where the embedded state lives")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the registry; default: SQLite file in data_dir",
    )
    artifact_url: str | None = Field(
        None, description="fsspec URL of the artifact store; default: data_dir/artifacts"
    )
    host: str = Field("127.0.0.1", description="bind address; non-loopback needs api_keys")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535)
    api_keys: list[str] = Field(default_factory=list, description="keys accepted on the data plane")
    admin_api_keys: list[str] = Field(
        default_factory=list, description="keys accepted on the control and data planes"
    )
    max_payload_mb: float = Field(6.0, gt=0, description="largest sync request body")
    gateway_processes: int = Field(
        1,
        ge=1,
        le=64,
        description="processes answering HTTP on the port (the control process and "
        "secondaries); more use more cores for the request path",
    )
    reconcile_interval_s: float = Field(
        10.0, gt=0, description="how often the controller re-reads endpoints from the registry"
    )
    meter_flush_interval_s: float = Field(10.0, gt=0, description="usage rollups to the DB")
    queue_url: str | None = Field(
        None, description="job queue URL (sqlite:///, postgresql://); default: data_dir/jobs.db"
    )
    job_visibility_s: float = Field(60.0, gt=0, description="lease time of an async job")
    job_max_attempts: int = Field(5, ge=1, description="attempts before the dead-letter queue")
    max_async_payload_mb: float = Field(1024.0, gt=0, description="largest async request body")
    async_input_roots: list[str] = Field(
        default_factory=list, description="local directories async input_uri may point into"
    )
    replica_start_timeout_s: float = Field(60.0, gt=0)
    backend: Literal["local"] = Field(
        "local", description="where replicas run: local (forked on this machine)"
    )
    batch_deadline_s: float = Field(
        60.0,
        gt=0,
        description="a replica that takes longer than this on one batch is killed as hung "
        "and replaced; its requests get a 503 that says so",
    )
    replica_memory_limit_mb: int | None = Field(
        8192,
        ge=16,
        description="memory cap of a replica whose variant sets none (address space "
        "beyond what it had at fork, enforced by the kernel); null for no cap",
    )
    autoscale_interval_s: float = Field(0.25, gt=0, description="autoscaler cadence")
    memory_check_interval_s: float = Field(
        0.25, gt=0, description="cadence of the replica memory-limit check"
    )
    deploy_retry_max_s: float = Field(
        60.0, gt=0, description="longest wait between retries of an endpoint that failed to start"
    )
    zygote_evict_below_mb: float = Field(
        512.0, ge=0, description="evict idle zygotes when free memory falls below this"
    )
    log_level: str = Field("info")
    log_json: bool = Field(True, description="structured JSON logs")
    # artifact trust (see docs/security.md)
    allow_trusted_code: bool = Field(
        True,
        description="allow registering artifacts with trust (pickle, joblib, python models, "
        "skops files with unreviewed types); false on shared servers",
    )
    max_upload_mb: float = Field(2048.0, gt=0, description="largest model or sample upload")
    sandbox_memory_mb: int = Field(
        4096, ge=64, description="address-space limit of the child that inspects an artifact"
    )
    sandbox_cpu_s: int = Field(600, ge=1, description="CPU-time limit of that child")
    sandbox_file_mb: int = Field(
        8192, ge=1, description="largest file that child may write (RLIMIT_FSIZE)"
    )
    sandbox_env_passthrough: list[str] = Field(
        default_factory=list,
        description="environment variables model code may see beyond the safe defaults "
        "(e.g. AWS_PROFILE); API keys and cloud credentials are removed otherwise",
    )
    sandbox_user: str | None = Field(
        None,
        description="when the server runs as root, inspect artifacts as this user (e.g. "
        "nobody), so model code cannot read the data directory",
    )
    # egress (async input_uri, batch URIs, webhooks)
    egress_schemes: list[str] = Field(
        default_factory=lambda: ["file", "s3", "gs", "gcs", "az", "abfs", "abfss"],
        description="fsspec schemes input_uri and batch URIs may use; every layer of a "
        "chained URL (simplecache::...) must be listed",
    )
    egress_buckets: list[str] = Field(
        default_factory=list,
        description="object-store buckets input_uri and batch URIs may name, besides the "
        "artifact store's own",
    )
    egress_hosts: list[str] = Field(
        default_factory=list,
        description="hosts webhooks and http(s) inputs may reach ('*.example.com' allowed); "
        "empty: any public host",
    )
    egress_private_networks: list[str] = Field(
        default_factory=list,
        description="networks (CIDR) webhooks and http(s) inputs may reach although they are "
        "loopback, private or link-local, e.g. 127.0.0.0/8 for a local receiver",
    )
    batch_roots: list[str] = Field(
        default_factory=list,
        description="local directories batch runs may read from and write to, besides data_dir",
    )
    # job lifecycle
    job_retention_s: float = Field(
        7 * 86400.0,
        gt=0,
        description="finished async jobs, their payloads, results and webhook rows are "
        "deleted this long after they finish",
    )
    job_purge_interval_s: float = Field(300.0, gt=0, description="how often the purge runs")
    max_queued_jobs: int = Field(
        10_000, ge=1, description="queued async jobs per endpoint; beyond it submissions get 429"
    )
    # HTTP and API access (see docs/security.md)
    deploy_api_keys: list[str] = Field(
        default_factory=list, description="keys that may register, deploy and read, not invoke"
    )
    read_api_keys: list[str] = Field(
        default_factory=list, description="keys that may only read the control API and metrics"
    )
    min_api_key_length: int = Field(16, ge=1, description="shortest key accepted at start")
    trusted_hosts: list[str] = Field(
        default_factory=list,
        description="Host header names accepted besides loopback names ('*' any, "
        "'*.example.com' a domain); default: loopback names on a loopback bind, any otherwise",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="browser origins accepted besides the server's own"
    )
    auth_failure_limit: int = Field(
        20, ge=1, description="failed authentications per client before a 429"
    )
    auth_failure_window_s: float = Field(60.0, gt=0)
    rate_limit_rps: float | None = Field(None, gt=0, description="requests/s for the server")
    key_rate_limit_rps: float | None = Field(
        None, gt=0, description="requests/s per API key (per client address without a key)"
    )
    max_inflight_mb: float = Field(
        512.0, gt=0, description="request body bytes the server holds at once before a 503"
    )
    decode_in_thread_kb: float = Field(
        256.0, ge=0, description="request bodies above this are decoded off the event loop"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="time a client has to send a request's headers"
    )
    max_header_kb: float = Field(64.0, gt=0, description="largest request head (431 above)")
    body_min_rate_kbps: float = Field(
        1.0, ge=0, description="slowest body upload (KiB/s over body_rate_window_s) kept open"
    )
    body_rate_window_s: float = Field(10.0, gt=0)
    max_connections: int = Field(
        1024, ge=1, description="open connections per gateway process; more are closed at once"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=_config_file())
        return (init_settings, env_settings, yaml_source)

    @model_validator(mode="after")
    def _keys_when_exposed(self) -> Settings:
        weak = [
            name
            for name in ("admin_api_keys", "api_keys", "deploy_api_keys", "read_api_keys")
            for key in getattr(self, name)
            if len(key) < self.min_api_key_length or not key.isprintable() or " " in key
        ]
        if weak:
            raise ValueError(
                f"ZEROSERVE_{weak[0].upper()} holds a key shorter than "
                f"{self.min_api_key_length} characters or with spaces; use long random keys, "
                "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
            )
        if not is_loopback(self.host) and not self.auth_enabled:
            raise ValueError(
                f"binding to {self.host} exposes the server beyond this machine; "
                "set ZEROSERVE_ADMIN_API_KEYS (and ZEROSERVE_API_KEYS) first, "
                "or bind to 127.0.0.1"
            )
        return self

    @property
    def max_payload_bytes(self) -> int:
        return int(self.max_payload_mb * 1024 * 1024)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def resolved_artifact_url(self) -> str:
        if self.artifact_url:
            return self.artifact_url
        return (self.data_dir / "artifacts").resolve().as_uri()

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys or self.admin_api_keys or self.control_api_keys)

    @property
    def control_api_keys(self) -> list[str]:
        """Every key that may call some part of the control API (the scope is checked
        per route by the access guard)."""
        return [*self.admin_api_keys, *self.deploy_api_keys, *self.read_api_keys]

    def public_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        for key in ("api_keys", "admin_api_keys", "deploy_api_keys", "read_api_keys"):
            data[key] = ["***"] * len(data[key])
        return data


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def settings_error(exc: ValueError) -> str:
    """One line for a settings error, without the input values (they may hold keys)."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for error in errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)
