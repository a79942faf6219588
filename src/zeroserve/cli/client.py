"""The CLI's HTTP client for the control API."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Console

from zeroserve import __version__
from zeroserve.settings import DEFAULT_PORT

console = Console()
err_console = Console(stderr=True)


def base_url() -> str:
    return os.environ.get("ZEROSERVE_URL", f"http://127.0.0.1:{DEFAULT_PORT}").rstrip("/")


class Client:
    def __init__(
        self, url: str | None = None, api_key: str | None = None, timeout_s: float = 600.0
    ) -> None:
        self.url = (url or base_url()).rstrip("/")
        key = api_key or os.environ.get("ZEROSERVE_API_KEY")
        # The header marks calls a cross-site web page cannot forge (gateway.access).
        headers = {"x-zeroserve-client": f"zeroserve-cli/{__version__}"}
        if key:
            headers["authorization"] = f"Bearer {key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError:
            fail(
                f"cannot reach zeroserve at {self.url}: start it with `zeroserve up` "
                "or set ZEROSERVE_URL"
            )
        except httpx.TimeoutException:
            fail(f"zeroserve at {self.url} did not answer in time")
        if response.status_code >= 400:
            try:
                message = response.json().get("error", response.text)
            except ValueError:
                message = response.text
            fail(f"{response.status_code}: {message}")
        if response.status_code == 204 or not response.content:
            return None
        return response.json()

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def upload(
        self, path: str, file: Path, data: dict[str, Any], sample: Path | None = None
    ) -> Any:
        with file.open("rb") as fh:
            files: dict[str, Any] = {"file": (file.name, fh)}
            if sample is not None:
                files["sample"] = (sample.name, sample.open("rb"))
            form = {
                k: str(v).lower() if isinstance(v, bool) else str(v)
                for k, v in data.items()
                if v is not None
            }
            return self.post(path, files=files, data=form)


def fail(message: str) -> Any:
    err_console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


def parse_model_ref(text: str) -> tuple[str, str | None]:
    """``fraud``, ``fraud:3``, ``fraud:champion`` or ``fraud@production``."""
    if "@" in text:
        name, _, stage = text.partition("@")
        return name, f"@{stage}"
    name, _, ref = text.partition(":")
    return name, ref or None
