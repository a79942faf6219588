"""Upstream credentials: from the environment or a secrets file, never from a request.

Every secret read is remembered so error bodies and messages can be scrubbed of it
before they reach a client or a log line.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from zeroserve.llm.config import ConfigError, Deployment

_BEARER = re.compile(
    r"(?i)(bearer\s+|api[_-]?key[\"'=:\s]+|x-api-key[\"'=:\s]+)[A-Za-z0-9._\-]{8,}"
)
_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{8,}|AKIA[A-Z0-9]{12,}|zsk-[A-Za-z0-9_\-]{8,})")


class Credentials:
    def __init__(self, secrets_file: Path | None = None) -> None:
        self.file_values: dict[str, str] = {}
        if secrets_file is not None:
            self.file_values = _read_secrets(secrets_file)
        self.known: set[str] = set()

    def api_key(self, deployment: Deployment) -> str | None:
        value: str | None = None
        if deployment.api_key_secret:
            value = self.file_values.get(deployment.api_key_secret)
            if value is None:
                raise ConfigError(
                    f"deployment {deployment.name!r}: secret {deployment.api_key_secret!r} "
                    "is not in the secrets file"
                )
        elif deployment.api_key_env:
            value = os.environ.get(deployment.api_key_env) or self.file_values.get(
                deployment.api_key_env
            )
        if value:
            self.known.add(value)
        return value

    def remember(self, value: str | None) -> None:
        if value:
            self.known.add(value)

    def scrub(self, text: str) -> str:
        """``text`` with every known secret and anything shaped like a key masked."""
        for secret in self.known:
            if len(secret) >= 4:
                text = text.replace(secret, "***")
        text = _BEARER.sub(lambda m: m.group(1) + "***", text)
        return _KEYLIKE.sub("***", text)


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the secrets file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if isinstance(data, dict):
        return {str(k): str(v) for k, v in data.items()}
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and not name.strip().startswith("#"):
            values[name.strip()] = value.strip().strip("'\"")
    return values
