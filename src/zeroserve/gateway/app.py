"""Build the server: registry, controller, data plane and control API in one ASGI app."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from zeroserve import __version__
from zeroserve.backends import create_backend
from zeroserve.control.controller import Controller
from zeroserve.cost import api as cost_api
from zeroserve.cost.meter import Meter
from zeroserve.errors import Forbidden, ModelNotFound, Unauthorized, ZeroserveError
from zeroserve.gateway import batch_api, control_api, docs, jobs_api, monitor_api
from zeroserve.gateway.dataplane import DataPlane, key_digest
from zeroserve.gateway.inference import AsyncProtocol, JsonProtocol, V2Protocol
from zeroserve.gateway.monitor_service import MonitorService
from zeroserve.gateway.peers import GatewayPeers
from zeroserve.gateway.state import ServerState
from zeroserve.jobs.async_service import AsyncService
from zeroserve.jobs.batch_service import BatchService
from zeroserve.llm import api as llm_api
from zeroserve.llm.gateway import build_gateway
from zeroserve.metrics import Metrics
from zeroserve.outcomes import Outcomes
from zeroserve.protocols import v2
from zeroserve.registry.registry import Registry
from zeroserve.settings import Settings

log = logging.getLogger("zeroserve.server")


def error_response(exc: ZeroserveError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status_code, headers=exc.headers())


def install_error_handlers(app: FastAPI) -> None:
    async def on_error(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, ZeroserveError)
        return error_response(exc)

    async def on_validation(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return JSONResponse(
            {"error": f"invalid request: {problems}", "code": "invalid_request"}, status_code=422
        )

    async def on_http(_req: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {
            404: "no such route; see /api/docs for the API",
            405: "method not allowed on this route",
        }.get(exc.status_code, str(exc.detail))
        return JSONResponse(
            {"error": message, "code": "http_error"},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    async def on_unexpected(_req: Request, exc: Exception) -> Response:
        log.exception("unexpected error in the control API", exc_info=exc)
        return JSONResponse(
            {"error": "internal error; see the server log", "code": "internal_error"},
            status_code=500,
        )

    app.add_exception_handler(ZeroserveError, on_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def key_guard(keys: list[str], settings: Settings, missing: str, refused: str) -> Any:
    """A FastAPI dependency that accepts only ``keys`` (when the server has any keys)."""
    accepted = {key_digest(k) for k in keys}

    async def check(request: Request) -> None:
        if not settings.auth_enabled:
            return
        auth = request.headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
        if not key:
            raise Unauthorized(missing)
        if hashlib.sha256(key.encode()).digest() not in accepted:
            raise Forbidden(refused)

    return check


def admin_guard(settings: Settings) -> Any:
    return key_guard(
        settings.control_api_keys,  # each key's scope is checked by gateway.access
        settings,
        "the control API requires an admin API key: send 'Authorization: Bearer <key>'",
        "this key is not an admin key; the control API needs one from ZEROSERVE_ADMIN_API_KEYS",
    )


def data_guard(settings: Settings) -> Any:
    return key_guard(
        [*settings.api_keys, *settings.admin_api_keys],
        settings,
        "this server requires an API key: send 'Authorization: Bearer <key>'",
        "the API key is not valid",
    )


def ops_router() -> APIRouter:
    router = APIRouter()

    def zs(request: Request) -> ServerState:
        return request.app.state.zs  # type: ignore[no-any-return]

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> Response:
        """503 while endpoints load; then 200, listing any that failed (they retry)."""
        readiness = zs(request).controller.readiness()
        return JSONResponse(readiness, status_code=503 if readiness["status"] != "ready" else 200)

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(
            zs(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "zeroserve", "version": __version__, "extensions": ["binary_tensor_data"]}

    @router.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready")
    async def ready(request: Request) -> Response:
        return await readyz(request)

    @router.get("/v2/models/{name}")
    @router.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(request: Request, name: str, version: int | None = None) -> Any:
        route = zs(request).controller.routes.get(name)
        if route is None:
            raise ModelNotFound(f"no model endpoint named {name!r}; deploy it first")
        variant = route.for_version(version) if version is not None else route.variants[0]
        if variant is None:
            raise ModelNotFound(f"endpoint {name!r} does not serve version {version}")
        return v2.model_metadata(
            name,
            [v.spec.version for v in route.variants],
            variant.version.flavor.value,
            variant.signature,
        )

    @router.get("/v2/models/{name}/ready")
    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(request: Request, name: str, version: int | None = None) -> Response:
        route = zs(request).controller.routes.get(name)
        ok = route is not None and (version is None or route.for_version(version) is not None)
        if route is not None and ok:
            variants = route.variants if version is None else [route.for_version(version)]
            ok = all(v is not None and v.pool.last_error is None for v in variants)
        body = {"name": name, "ready": ok}
        return JSONResponse(body, status_code=200 if ok else 400)

    return router


def create_app(
    settings: Settings | None = None,
    peers: tuple[socket.socket, str, bool] | None = None,
) -> DataPlane:
    """The ASGI app: the inference fast path in front of a FastAPI app for the rest.

    ``peers`` (the listening socket, the private URL of this process and the
    access-log switch) starts ``settings.gateway_processes - 1`` secondary
    gateway processes on that socket.
    """
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry.open(
        settings.resolved_database_url,
        settings.resolved_artifact_url,
        cache_dir=settings.data_dir / "cache",
    )
    metrics = Metrics()
    meter = Meter()
    outcomes = Outcomes()
    controller = Controller(
        registry,
        settings,
        metrics,
        create_backend(settings),
        meter,
    )
    jobs = AsyncService(controller, registry, settings, metrics)
    controller.queued_jobs = jobs.queued_jobs
    controller.managers += [
        ("async-workers", 0.25, jobs.tick),
        ("webhooks", 0.5, jobs.webhooks.deliver_due),
        ("job-purge", settings.job_purge_interval_s, jobs.purge),
    ]
    batches = BatchService(controller, registry, jobs.queue, settings)
    controller.managers.append(("batch", 0.5, batches.tick))
    monitor = MonitorService(
        registry, controller.apply, metrics_registry=metrics.registry, settings=settings
    )
    controller.managers += monitor.managers()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # Managers start here and endpoints load in the background: the port is open
        # (and /readyz says "loading") while models load.
        await controller.start()
        monitor.start()
        await llm.service.start()
        if state.peers is not None:
            await state.peers.start()
        log.info(
            "zeroserve ready",
            extra={
                "host": settings.host,
                "port": settings.port,
                "endpoints": sorted(controller.routes),
            },
        )
        try:
            yield
        finally:
            if state.peers is not None:
                await state.peers.stop()
            await batches.close()
            await monitor.stop()
            await llm.service.stop()
            await controller.stop()
            await jobs.close()

    api = FastAPI(
        title="zeroserve",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,  # served by gateway/docs.py from the package, not a CDN
        openapi_url="/api/openapi.json",
        redoc_url=None,
    )
    llm = build_gateway(settings, metrics.registry, api)  # /v1/chat/completions, /v1/messages, ...
    gateway = DataPlane(
        controller,
        settings,
        metrics,
        llm,
        outcomes,
        [JsonProtocol(), V2Protocol(), AsyncProtocol(jobs)],
    )
    state = ServerState(
        settings, registry, metrics, outcomes, controller, meter, jobs, batches, gateway
    )
    if peers is not None:
        listen, control_url, access_log = peers
        state.peers = GatewayPeers(
            controller, metrics, outcomes, meter, settings, listen, control_url, access_log
        )
    api.state.zs = state
    api.state.monitor = monitor
    if state.peers is not None:
        state.peers.monitor = monitor
    gateway.monitor = monitor
    monitor.shadow_dropped = lambda: gateway.shadow_dropped
    api.state.session_factory = registry.sessions
    api.state.meter = meter
    install_error_handlers(api)
    guard = [Depends(admin_guard(settings))]
    api.include_router(control_api.router, prefix="/api", dependencies=guard)
    api.include_router(jobs_api.admin_router, prefix="/api", dependencies=guard)
    api.include_router(batch_api.router, prefix="/api", dependencies=guard)
    api.include_router(jobs_api.data_router, dependencies=[Depends(data_guard(settings))])
    api.include_router(cost_api.router, prefix="/api/cost", dependencies=guard)
    api.include_router(monitor_api.admin_router, prefix="/api", dependencies=guard)
    api.include_router(monitor_api.data_router, dependencies=[Depends(data_guard(settings))])
    api.include_router(ops_router())
    api.state.llm = llm.service
    api.include_router(llm_api.router, prefix="/api/llm", dependencies=guard)
    docs.mount_docs(api, "zeroserve API", "/api/openapi.json")
    return gateway
