"""What the job services need from the control plane, without importing it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from zeroserve.control.routes import Route
    from zeroserve.types import EndpointSpec


class Deployments(Protocol):
    """The live routes, and a way to serve or stop an endpoint (the controller)."""

    @property
    def routes(self) -> dict[str, Route]: ...

    async def apply(self, spec: EndpointSpec) -> Route: ...

    async def remove(self, name: str) -> None: ...
