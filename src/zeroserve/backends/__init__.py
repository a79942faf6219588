"""Where replicas run. Each backend implements ``serving.handle.Backend``.

``local`` forks replicas from zygotes on this machine. Backends are chosen by
the ``backend`` setting; serving never imports this package.
"""

from __future__ import annotations

from zeroserve.errors import BadRequest
from zeroserve.serving.handle import Backend


def create_backend(name: str, env_passthrough: list[str] | None = None) -> Backend:
    """The backend named by the ``backend`` setting.

    ``env_passthrough``: environment variables model processes may inherit beyond the
    safe defaults (``sandbox_env_passthrough``); secrets never reach them otherwise.
    """
    if name == "local":
        from zeroserve.backends.local import LocalBackend

        return LocalBackend(env_passthrough or [])
    raise BadRequest(f"unknown backend {name!r}; use 'local'")
