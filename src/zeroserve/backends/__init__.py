"""Where replicas run. Each backend implements ``serving.handle.Backend``.

``local`` forks replicas from zygotes on this machine. Backends are chosen by
the ``backend`` setting; serving never imports this package.
"""

from __future__ import annotations

from zeroserve.errors import BadRequest
from zeroserve.serving.handle import Backend
from zeroserve.settings import Settings


def create_backend(settings: Settings) -> Backend:
    """The backend named by the ``backend`` setting.

    Model processes inherit only safe environment variables and those named in
    ``sandbox_env_passthrough``; secrets never reach them otherwise.
    """
    if settings.backend == "local":
        from zeroserve.backends.local import LocalBackend

        return LocalBackend(settings.sandbox_env_passthrough, settings.replica_memory_limit_mb)
    raise BadRequest(f"unknown backend {settings.backend!r}; use 'local'")
