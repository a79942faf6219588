"""What the data plane tells monitoring about each request (``MonitorService`` in the
control process). Every method only appends; none may block or raise."""

from __future__ import annotations

from typing import Protocol

from zeroserve.types import Arrays, EndpointSpec, Signature


class MonitorHook(Protocol):
    def after_answer(
        self,
        spec: EndpointSpec,
        variant: str,
        version: int,
        signature: Signature,
        request_id: str,
        inputs: Arrays,
        outputs: Arrays | None,
        status: int,
        latency_ms: float,
    ) -> None: ...

    def after_error(
        self, endpoint: str, variant: str, status: int, latency_ms: float, cause: str | None
    ) -> None: ...

    def shadow_compared(
        self, endpoint: str, shadow: str, primary: Arrays, shadow_outputs: Arrays
    ) -> None: ...

    def shadow_failed(self, endpoint: str, shadow: str) -> None: ...
