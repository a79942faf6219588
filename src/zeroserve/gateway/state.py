"""The control process's parts, as the API routes reach them (``request.app.state.zs``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from zeroserve.control.controller import Controller
    from zeroserve.cost.meter import Meter
    from zeroserve.gateway.dataplane import DataPlane
    from zeroserve.gateway.peers import GatewayPeers
    from zeroserve.jobs.async_service import AsyncService
    from zeroserve.jobs.batch_service import BatchService
    from zeroserve.metrics import Metrics
    from zeroserve.outcomes import Outcomes
    from zeroserve.registry.registry import Registry
    from zeroserve.settings import Settings


@dataclass
class ServerState:
    """Everything the control process runs, as the API routes see it (``app.state.zs``)."""

    settings: Settings
    registry: Registry
    metrics: Metrics
    outcomes: Outcomes
    controller: Controller
    meter: Meter
    async_service: AsyncService
    batch_service: BatchService
    gateway: DataPlane
    peers: GatewayPeers | None = None


def server_state(request: Request) -> ServerState:
    state: ServerState = request.app.state.zs
    return state
