"""The control plane's JSON API under ``/api``: models, versions, endpoints."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, BinaryIO

from fastapi import APIRouter, File, Form, Request, UploadFile
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from zeroserve.control import lifecycle
from zeroserve.errors import (
    BadRequest,
    Conflict,
    EndpointNotFound,
    Forbidden,
    InvalidInput,
    PayloadTooLarge,
)
from zeroserve.gateway.state import ServerState, server_state
from zeroserve.registry.inspection import inspect_artifact
from zeroserve.registry.packaging import PackageRequest
from zeroserve.settings import Settings
from zeroserve.types import (
    EndpointSpec,
    Mode,
    ModelInfo,
    ModelVersionInfo,
    ScalingSpec,
    Signature,
    Stage,
    VariantSpec,
    VariantStats,
)

router = APIRouter()
log = logging.getLogger("zeroserve.control_api")
_registering: dict[str, asyncio.Lock] = {}
"""One registration per model name at a time, so concurrent ones get consecutive versions."""


state = server_state


class StageChange(BaseModel):
    stage: Stage
    archive_existing: bool = Field(
        True, description="move the version that held this stage to archived"
    )


class AliasChange(BaseModel):
    version: int


class EndpointOptions(BaseModel):
    """Scaling and limits a deploy or an update may set; left out means the default (deploy)
    or the current value (update)."""

    ref: str | None = Field(None, description="version number, alias, 'latest' or '@stage'")
    min_replicas: int | None = Field(None, ge=0)
    max_replicas: int | None = Field(None, ge=1)
    provisioned: int | None = Field(None, ge=0)
    target_concurrency: float | None = Field(None, gt=0)
    max_queue: int | None = Field(None, ge=1)
    idle_timeout_s: float | None = Field(None, gt=0)
    scale_down_delay_s: float | None = Field(None, ge=0)
    memory_limit_mb: int | None = Field(None, ge=16)
    max_batch_size: int | None = Field(None, ge=1)
    max_batch_wait_ms: float | None = Field(None, ge=0)
    request_timeout_s: float | None = Field(None, gt=0)
    max_concurrency: int | None = Field(None, ge=1)


class DeployRequest(EndpointOptions):
    """Deploy one model version as an endpoint (replacing its variants)."""

    model: str
    endpoint: str | None = Field(None, description="default: the model name")
    mode: Mode = Mode.REALTIME
    update: bool = Field(
        False, description="allow switching an existing endpoint to another model version"
    )
    follow: bool = Field(
        False, description="follow the alias or '@stage' in ref: a promotion redeploys"
    )
    outputs: list[str] | None = Field(None, description='answer only these, e.g. ["label"]')


class EndpointUpdate(EndpointOptions):
    """Change an endpoint in place; fields left out keep their values."""

    follow: bool | None = Field(
        None, description="true: follow ref (an alias or '@stage'); false: pin the version"
    )


SCALING_FIELDS = (
    "min_replicas",
    "max_replicas",
    "provisioned",
    "target_concurrency",
    "max_queue",
    "idle_timeout_s",
    "scale_down_delay_s",
)
VARIANT_FIELDS = ("memory_limit_mb", "max_batch_size", "max_batch_wait_ms")


class EndpointStatus(BaseModel):
    spec: EndpointSpec
    status: dict[str, Any]
    changes: list[str] = Field(
        default_factory=list, description="what this call changed (deploy and update)"
    )


class VersionChange(ModelVersionInfo):
    """The version after a stage or alias change, and the endpoints that followed it."""

    redeployed: list[str] = Field(
        default_factory=list, description="'endpoint: model version A -> B' per switch"
    )


# models
@router.get("/models", response_model=list[ModelInfo])
async def list_models(request: Request) -> list[ModelInfo]:
    return await asyncio.to_thread(state(request).registry.list_models)


@router.post("/models/{name}/versions", response_model=ModelVersionInfo, status_code=201)
async def register_version(
    request: Request,
    name: str,
    file: Annotated[UploadFile, File(description="the model file")],
    flavor: Annotated[str | None, Form()] = None,
    trust: Annotated[bool, Form()] = False,
    compile: Annotated[str | None, Form()] = None,
    tolerance: Annotated[float, Form()] = 1e-5,
    entrypoint: Annotated[str | None, Form()] = None,
    description: Annotated[str, Form()] = "",
    signature: Annotated[str | None, Form(description="signature JSON")] = None,
    sample: Annotated[UploadFile | None, File(description=".npy, .csv or .parquet rows")] = None,
) -> ModelVersionInfo:
    """Register a model file as the next version of ``name``.

    Pickle-based files (joblib, pickle) and python models need ``trust``;
    ``compile=onnx`` converts a scikit-learn model and checks its outputs.
    """
    zs = state(request)
    sig = parse_signature(signature)
    lock = _registering.setdefault(name, asyncio.Lock())
    async with lock:
        try:
            return await _register(
                zs,
                name,
                file,
                sample,
                sig,
                flavor,
                trust,
                compile,
                tolerance,
                entrypoint,
                description,
            )
        except IntegrityError:
            raise Conflict(
                f"another server registered a version of {name!r} at the same moment; retry"
            ) from None


def parse_signature(text: str | None) -> Signature | None:
    """The ``signature`` form field, or a 422 that names the part that is wrong."""
    if not text:
        return None
    try:
        sig = Signature.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(
            f"signature{'.' + where if where else ''}: {first['msg']}; send JSON like "
            '{"inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 4]}], '
            '"outputs": [{"name": "label", "dtype": "int64", "shape": [-1]}]}'
        ) from None
    for kind, specs in (("inputs", sig.inputs), ("outputs", sig.outputs)):
        if not specs:
            raise InvalidInput(f"signature.{kind} is empty; name at least one tensor")
        for i, spec in enumerate(specs):
            if not spec.shape:
                raise InvalidInput(
                    f"signature.{kind}[{i}].shape is [] (a scalar); start it with the batch "
                    "dimension, e.g. [-1] or [-1, 4]"
                )
    return sig


async def _register(
    zs: ServerState,
    name: str,
    file: UploadFile,
    sample: UploadFile | None,
    sig: Signature | None,
    flavor: str | None,
    trust: bool,
    compile: str | None,
    tolerance: float,
    entrypoint: str | None,
    description: str,
) -> ModelVersionInfo:
    settings: Settings = zs.settings
    if trust and not settings.allow_trusted_code:
        raise Forbidden(
            "this server does not allow trusted code (allow_trusted_code: false); "
            "register a .skops or .onnx file without --trust instead"
        )
    limit = int(settings.max_upload_mb * 1024 * 1024)
    # Outside the data directory: the packager's working directory is this one.
    with tempfile.TemporaryDirectory(prefix="zs-register-") as tmp:
        work = Path(tmp)
        source = work / "upload" / Path(file.filename or "model.bin").name
        source.parent.mkdir()
        await asyncio.to_thread(copy_capped, file.file, source, limit)
        sample_path = None
        if sample is not None and sample.filename:
            sample_path = work / ("sample" + Path(sample.filename).suffix)
            await asyncio.to_thread(copy_capped, sample.file, sample_path, limit)
        req = PackageRequest(
            source=source,
            dest=work / "artifact",
            flavor=flavor,
            trusted=trust,
            entrypoint=entrypoint,
            sample=sample_path,
            signature=sig,
            compile=compile,
            tolerance=tolerance,
        )
        result = await inspect_artifact(req, settings, work)
        return await asyncio.to_thread(
            zs.registry.register_version,
            name,
            req.dest,
            flavor=result.flavor,
            signature=result.signature,
            trusted=trust,
            description=description,
            metrics=result.metrics,
        )


def copy_capped(src: BinaryIO, dest: Path, limit: int) -> None:
    """Copy an upload to ``dest``; 413 once it passes ``limit`` bytes."""
    size = 0
    with dest.open("wb") as out:
        while chunk := src.read(1024 * 1024):
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"{dest.name} is over the {limit:,}-byte upload limit (ZEROSERVE_MAX_UPLOAD_MB)"
                )
            out.write(chunk)


@router.get("/models/{name}", response_model=ModelInfo)
async def get_model(request: Request, name: str) -> ModelInfo:
    return await asyncio.to_thread(state(request).registry.get_model, name)


@router.delete("/models/{name}", status_code=204)
async def delete_model(request: Request, name: str) -> None:
    zs = state(request)
    users = [
        e.name
        for e in await asyncio.to_thread(zs.registry.list_endpoints)
        if any(v.model == name for v in [*e.variants, *([e.shadow] if e.shadow else [])])
    ]
    if users:
        raise Conflict(
            f"model {name!r} is served by endpoints {', '.join(users)}; delete them first"
        )
    await asyncio.to_thread(zs.registry.delete_model, name)


@router.get("/models/{name}/versions/{ref}", response_model=ModelVersionInfo)
async def get_version(request: Request, name: str, ref: str) -> ModelVersionInfo:
    return await asyncio.to_thread(state(request).registry.get_version, name, ref)


@router.post("/models/{name}/versions/{version}/stage", response_model=VersionChange)
async def set_stage(request: Request, name: str, version: int, body: StageChange) -> VersionChange:
    """Move a version to a stage; endpoints that follow ``name@stage`` switch to it."""
    zs = state(request)
    info = await asyncio.to_thread(
        zs.registry.set_stage, name, version, body.stage, body.archive_existing
    )
    return await _followed(zs, info)


@router.put("/models/{name}/aliases/{alias}", response_model=VersionChange)
async def set_alias(request: Request, name: str, alias: str, body: AliasChange) -> VersionChange:
    """Point an alias at a version; endpoints that follow ``name:alias`` switch to it."""
    zs = state(request)
    info = await asyncio.to_thread(zs.registry.set_alias, name, alias, body.version)
    return await _followed(zs, info)


@router.delete("/models/{name}/aliases/{alias}", status_code=204)
async def delete_alias(request: Request, name: str, alias: str) -> None:
    await asyncio.to_thread(state(request).registry.delete_alias, name, alias)


async def _followed(zs: Any, info: ModelVersionInfo) -> VersionChange:
    switched = await lifecycle.refollow(zs.registry, zs.controller, info.model)
    return VersionChange(**info.model_dump(), redeployed=switched)


# endpoints
def spec_from_deploy(body: DeployRequest, version: int) -> EndpointSpec:
    serverless = body.mode != Mode.REALTIME
    default_min = 0 if serverless else 1
    scaling = ScalingSpec(
        min_replicas=body.min_replicas if body.min_replicas is not None else default_min,
        max_replicas=body.max_replicas or max(2, body.min_replicas or 1),
        provisioned=body.provisioned or 0,
        target_concurrency=body.target_concurrency,
        max_queue=body.max_queue or ScalingSpec().max_queue,
        idle_timeout_s=body.idle_timeout_s
        or (60.0 if serverless else ScalingSpec().idle_timeout_s),
        scale_down_delay_s=(
            body.scale_down_delay_s
            if body.scale_down_delay_s is not None
            else ScalingSpec().scale_down_delay_s
        ),
    )
    if body.mode == Mode.REALTIME and scaling.min_replicas < 1:
        raise BadRequest(
            "a realtime endpoint keeps at least one replica; use --mode serverless to scale to zero"
        )
    if scaling.min_replicas > scaling.max_replicas:
        raise BadRequest(
            f"min_replicas {scaling.min_replicas} is above max_replicas {scaling.max_replicas}"
        )
    variant = VariantSpec(
        name=f"v{version}",
        model=body.model,
        version=version,
        weight=1.0,
        max_batch_size=body.max_batch_size or VariantSpec.model_fields["max_batch_size"].default,
        max_batch_wait_ms=body.max_batch_wait_ms or 0.0,
        memory_limit_mb=body.memory_limit_mb,
        scaling=scaling,
        follow=lifecycle.check_followable(body.model, body.ref) if body.follow else None,
        outputs=body.outputs,
    )
    return EndpointSpec(
        name=body.endpoint or body.model,
        mode=body.mode,
        variants=[variant],
        request_timeout_s=body.request_timeout_s or 60.0,
        max_concurrency=body.max_concurrency,
    )


@router.post("/deploy", response_model=EndpointStatus, status_code=201)
async def deploy(request: Request, body: DeployRequest) -> EndpointStatus:
    """Resolve the model reference and serve it; returns once replicas are ready."""
    zs = state(request)
    version = await asyncio.to_thread(zs.registry.get_version, body.model, body.ref)
    spec = spec_from_deploy(body, version.version)
    current = await _current(zs, spec.name)
    if current is not None and lifecycle.switches_version(current, spec) and not body.update:
        what = "; ".join(lifecycle.changes(current, spec))
        raise Conflict(
            f"endpoint {spec.name!r} serves {lifecycle.describe_versions(current)}; this deploy "
            f"would change it ({what}). Pass --update (update=true) to switch it, or "
            "--endpoint NAME to serve the new version beside it",
            changes=lifecycle.changes(current, spec),
        )
    return await _apply(zs, spec, current)


@router.post("/endpoints", response_model=EndpointStatus, status_code=201)
async def put_endpoint(request: Request, spec: EndpointSpec) -> EndpointStatus:
    """Create or replace an endpoint from a full spec (variants, weights, shadow)."""
    if not spec.variants:
        raise InvalidInput("variants is empty; an endpoint serves at least one model version")
    zs = state(request)
    return await _apply(zs, spec, await _current(zs, spec.name))


@router.patch("/endpoints/{name}", response_model=EndpointStatus)
async def update_endpoint(request: Request, name: str, body: EndpointUpdate) -> EndpointStatus:
    """Change an endpoint's version, follow/pin, scaling or limits; the rest stays."""
    zs = state(request)
    current = await asyncio.to_thread(zs.registry.get_endpoint, name)
    spec = await _updated(zs, current, body)
    if spec == current:
        return EndpointStatus(spec=current, status=zs.controller.describe(name))
    return await _apply(zs, spec, current)


async def _updated(zs: ServerState, current: EndpointSpec, body: EndpointUpdate) -> EndpointSpec:
    given = body.model_dump(exclude_none=True)
    variants = current.variants
    if "ref" in given or "follow" in given:
        if len(variants) != 1:
            raise BadRequest(
                f"endpoint {current.name!r} has {len(variants)} variants; change their versions "
                "with a full spec (POST /api/endpoints)"
            )
        old = variants[0]
        follow: str | None = None
        if body.ref is not None:
            ref = body.ref
            follow = lifecycle.check_followable(old.model, ref) if body.follow else None
        elif body.follow:
            if not old.follow:
                raise BadRequest(
                    f"endpoint {current.name!r} is pinned to {old.model} version {old.version}; "
                    "say what to follow, e.g. --version @production --follow"
                )
            ref = follow = old.follow
        else:
            ref = str(old.version)  # --pin: stay on the version served now
        version = await asyncio.to_thread(zs.registry.get_version, old.model, ref)
        name = old.name if version.version == old.version else f"v{version.version}"
        variants = [
            old.model_copy(update={"name": name, "version": version.version, "follow": follow})
        ]
    scaling = {k: v for k, v in given.items() if k in SCALING_FIELDS}
    limits = {k: v for k, v in given.items() if k in VARIANT_FIELDS}
    try:
        variants = [
            VariantSpec.model_validate(
                {
                    **v.model_dump(),
                    **limits,
                    "scaling": {**v.scaling.model_dump(), **scaling},
                }
            )
            for v in variants
        ]
        spec = EndpointSpec.model_validate(
            {
                **current.model_dump(),
                "variants": [v.model_dump() for v in variants],
                **{k: given[k] for k in ("request_timeout_s", "max_concurrency") if k in given},
            }
        )
    except ValidationError as exc:
        raise BadRequest(f"invalid update: {exc.errors()[0]['msg']}") from None
    for v in spec.variants:
        if v.scaling.min_replicas > v.scaling.max_replicas:
            raise BadRequest(
                f"min_replicas {v.scaling.min_replicas} is above max_replicas "
                f"{v.scaling.max_replicas}"
            )
        if spec.mode == Mode.REALTIME and v.scaling.min_replicas < 1:
            raise BadRequest("a realtime endpoint keeps at least one replica")
    return spec


async def _current(zs: ServerState, name: str) -> EndpointSpec | None:
    try:
        spec: EndpointSpec = await asyncio.to_thread(zs.registry.get_endpoint, name)
    except EndpointNotFound:
        return None
    return spec


async def _apply(
    zs: ServerState, spec: EndpointSpec, current: EndpointSpec | None
) -> EndpointStatus:
    if not zs.settings.allow_trusted_code:
        await asyncio.to_thread(refuse_trusted, zs.registry, spec)
    await asyncio.to_thread(zs.registry.put_endpoint, spec)
    await zs.controller.apply(spec)
    changed = lifecycle.changes(current, spec) if current is not None else []
    log.info(
        "endpoint deployed" if current is None else "endpoint updated",
        extra={
            "endpoint": spec.name,
            "mode": spec.mode.value,
            "serves": lifecycle.describe_versions(spec),
            **({"changes": "; ".join(changed)} if current is not None else {}),
        },
    )
    return EndpointStatus(spec=spec, status=zs.controller.describe(spec.name), changes=changed)


def refuse_trusted(registry: Any, spec: EndpointSpec) -> None:
    """With ``allow_trusted_code: false``, versions registered with trust are not served."""
    for variant in [*spec.variants, *([spec.shadow] if spec.shadow else [])]:
        if registry.get_version(variant.model, variant.version).trusted:
            raise Forbidden(
                f"{variant.model} v{variant.version} was registered with trust, and this "
                "server does not allow trusted code (allow_trusted_code: false)"
            )


@router.get("/endpoints", response_model=list[EndpointStatus])
async def list_endpoints(request: Request) -> list[EndpointStatus]:
    zs = state(request)
    specs = await asyncio.to_thread(zs.registry.list_endpoints)
    return [EndpointStatus(spec=s, status=zs.controller.describe(s.name)) for s in specs]


@router.get("/endpoints/{name}", response_model=EndpointStatus)
async def get_endpoint(request: Request, name: str) -> EndpointStatus:
    zs = state(request)
    spec = await asyncio.to_thread(zs.registry.get_endpoint, name)
    return EndpointStatus(spec=spec, status=zs.controller.describe(name))


@router.delete("/endpoints/{name}", status_code=204)
async def delete_endpoint(request: Request, name: str) -> None:
    zs = state(request)
    await asyncio.to_thread(zs.registry.delete_endpoint, name)
    await zs.controller.remove(name)
    await zs.async_service.cancel_endpoint(name)


@router.get("/endpoints/{name}/stats", response_model=list[VariantStats])
async def endpoint_stats(request: Request, name: str) -> list[VariantStats]:
    """Outcomes per variant and for the shadow over the last 10 s, 1 min and 5 min,
    merged over every gateway process: requests, errors by status and cause, p50/p99."""
    zs = state(request)
    route = zs.controller.routes.get(name)
    if route is None:
        await asyncio.to_thread(zs.registry.get_endpoint, name)  # 404 when unknown
    else:  # variants without traffic yet appear too, with zeros
        for v in route.all_variants():
            zs.outcomes.for_variant(name, v.spec.name, "shadow" if v is route.shadow else "primary")
    return zs.outcomes.stats(name)


@router.post("/endpoints/{name}/evict")
async def evict_endpoint(request: Request, name: str) -> dict[str, int]:
    """Free the memory of an endpoint's zygotes; the next cold start rebuilds them."""
    zs = state(request)
    await asyncio.to_thread(zs.registry.get_endpoint, name)
    return {"evicted": await zs.controller.evict(name)}


@router.get("/gateways")
async def list_gateways(request: Request) -> list[dict[str, Any]]:
    """The processes answering HTTP: this (control) process and its secondaries."""
    zs = state(request)
    control = {
        "pid": os.getpid(),
        "role": "control",
        "answered": zs.gateway.answered,
    }
    peers = zs.peers.describe() if zs.peers is not None else []
    return [control, *({"role": "secondary", **p} for p in peers)]


@router.get("/settings")
async def get_settings(request: Request) -> dict[str, Any]:
    settings: Settings = state(request).settings
    return settings.public_dict()
