"""``/api/docs`` without the internet, and the inference routes in the OpenAPI document.

Swagger UI's script and stylesheet come from the ``fastapi-offline`` package
(Swagger UI 5, which reads OpenAPI 3.1) and are served under
``/api/docs/static/``. The inference routes are answered by the data plane's
bare ASGI fast path before FastAPI sees them, so the routes declared here exist
only to describe them; if one is ever reached, it answers a JSON 404.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from zeroserve.errors import EndpointNotFound

DOCS_PATH = "/api/docs"
STATIC_PATH = f"{DOCS_PATH}/static"
ASSETS = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon.png")


def assets_dir() -> Path:
    import fastapi_offline

    return Path(fastapi_offline.__file__).parent / "static"


def page(title: str, openapi_url: str) -> str:
    """The Swagger UI page; every asset is a path on this server (no CDN, no validator)."""
    title, spec = html.escape(title), html.escape(openapi_url, quote=True)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="icon" type="image/png" href="{STATIC_PATH}/favicon.png">
<link rel="stylesheet" type="text/css" href="{STATIC_PATH}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{STATIC_PATH}/swagger-ui-bundle.js"></script>
<script>
SwaggerUIBundle({{
  url: "{spec}",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
}});
</script>
</body>
</html>
"""


def docs_router(title: str, openapi_url: str) -> APIRouter:
    router = APIRouter()

    @router.get(DOCS_PATH, include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(page(title, openapi_url))

    return router


def mount_docs(app: Any, title: str, openapi_url: str) -> None:
    """Serve the docs page and its assets; call with ``docs_url=None`` on the FastAPI app."""
    app.include_router(docs_router(title, openapi_url))
    app.include_router(inference_router())
    app.mount(STATIC_PATH, StaticFiles(directory=assets_dir()), name="docs-static")


# What the inference routes take and answer, for the OpenAPI document.
class InstancesRequest(BaseModel):
    """Rows: lists of numbers, or objects keyed by column or input name."""

    instances: list[Any] = Field(examples=[[[0.1, 0.2, 0.3, 0.4]]])


class InputsRequest(BaseModel):
    """Columns: ``{name: [values, ...]}`` by input or column name."""

    inputs: dict[str, Any] = Field(examples=[{"input": [[0.1, 0.2, 0.3, 0.4]]}])


class JsonAnswer(BaseModel):
    """``predictions`` (one per row) for ``instances``, ``outputs`` by name for ``inputs``."""

    predictions: list[Any] | None = None
    outputs: dict[str, Any] | None = None


class V2Tensor(BaseModel):
    name: str
    datatype: str = Field(examples=["FP32"])
    shape: list[int] = Field(examples=[[1, 4]])
    data: list[Any] | None = None
    parameters: dict[str, Any] | None = None


class V2Request(BaseModel):
    """Open Inference Protocol v2; binary tensors via ``Inference-Header-Content-Length``."""

    id: str | None = None
    inputs: list[V2Tensor]
    outputs: list[dict[str, Any]] | None = None
    parameters: dict[str, Any] | None = None


class V2Answer(BaseModel):
    model_name: str
    model_version: str | None = None
    id: str | None = None
    outputs: list[V2Tensor]


class AsyncAccepted(BaseModel):
    job_id: str
    endpoint: str
    status: str = Field(examples=["queued"])
    status_url: str = Field(examples=["/v1/jobs/0123abcd"])


class ErrorBody(BaseModel):
    error: str = Field(description="what went wrong and how to fix it")
    code: str
    details: dict[str, Any] | None = None


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "malformed request",
        401: "API key missing",
        404: "no such endpoint or version",
        413: "body over the payload limit",
        422: "input does not match the signature, or the model raised",
        429: "queue full or max_concurrency reached; honour Retry-After",
        503: "no replica could answer",
        504: "request timeout",
    }.items()
}


def inference_router() -> APIRouter:
    router = APIRouter(tags=["inference"])

    def unreachable(name: str) -> EndpointNotFound:
        return EndpointNotFound(f"no endpoint named {name!r}")

    @router.post("/v1/endpoints/{name}/invocations", response_model=JsonAnswer, responses=ERRORS)
    async def invoke(
        name: str, body: Annotated[InstancesRequest | InputsRequest, Body()]
    ) -> JsonAnswer:
        """Predict on rows (``instances``) or columns (``inputs``) with the endpoint's model.

        The answer names the variant and model version in ``x-zeroserve-variant`` and
        ``x-zeroserve-model-version``; ``x-zeroserve-cold-start: true`` marks a request that
        waited for a replica to start.
        """
        raise unreachable(name)

    @router.post("/v2/models/{name}/infer", response_model=V2Answer, responses=ERRORS)
    async def infer_v2(name: str, body: V2Request) -> V2Answer:
        """Open Inference Protocol v2 inference on the endpoint ``name``."""
        raise unreachable(name)

    @router.post(
        "/v2/models/{name}/versions/{version}/infer", response_model=V2Answer, responses=ERRORS
    )
    async def infer_v2_version(name: str, version: int, body: V2Request) -> V2Answer:
        """Open Inference Protocol v2 inference on one version the endpoint serves."""
        raise unreachable(name)

    @router.post(
        "/v1/endpoints/{name}/async",
        status_code=202,
        response_model=AsyncAccepted,
        responses=ERRORS,
    )
    async def submit_async(
        name: str, body: Annotated[InstancesRequest | InputsRequest, Body()]
    ) -> AsyncAccepted:
        """Queue the request as a job; poll ``GET /v1/jobs/{job_id}`` for the result.

        Send the inference request itself, or ``{"input_uri": ...}`` for a payload in the
        store. ``X-Callback-URL`` (or ``callback_url``) gets a signed webhook when the job
        ends; ``Idempotency-Key`` makes a retried submit return the same job.
        """
        raise unreachable(name)

    return router
