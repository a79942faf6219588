"""The model registry: models, immutable versions, stages, aliases, endpoints.

Versions are immutable: an artifact is stored once under
``models/<name>/<version>/`` and never rewritten. Everything here is control
plane; the request path never reads the database.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from zeroserve.db import create_all, make_engine, session_factory
from zeroserve.errors import BadRequest, Conflict, EndpointNotFound, ModelNotFound, VersionNotFound
from zeroserve.registry.store import ArtifactStore
from zeroserve.registry.tables import AliasRow, EndpointRow, ModelRow, VersionRow
from zeroserve.types import EndpointSpec, Flavor, ModelInfo, ModelVersionInfo, Signature, Stage

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.match(name):
        raise BadRequest(
            f"{kind} name {name!r} is not valid: use 1-63 lowercase letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return name


class Registry:
    """Models, versions, aliases and endpoints over one SQLAlchemy engine."""

    def __init__(self, engine: Engine, store: ArtifactStore) -> None:
        self.engine = engine
        self.store = store
        self.sessions = session_factory(engine)
        create_all(engine)

    @classmethod
    def open(cls, database_url: str, artifact_url: str, cache_dir: Path | None = None) -> Registry:
        return cls(make_engine(database_url), ArtifactStore(artifact_url, cache_dir))

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self.sessions.begin() as session:
            yield session

    # models and versions
    def register_version(
        self,
        name: str,
        artifact_dir: Path,
        *,
        flavor: str,
        signature: Signature,
        trusted: bool = False,
        description: str = "",
        metrics: dict[str, Any] | None = None,
        compiled_from: int | None = None,
    ) -> ModelVersionInfo:
        """Store ``artifact_dir`` as the next version of ``name`` (created if new)."""
        check_name("model", name)
        now = time.time()
        with self.session() as s:
            model = s.get(ModelRow, name, with_for_update=True)
            if model is None:
                model = ModelRow(name=name, created_at=now, description="")
                s.add(model)
                s.flush()
            latest = s.scalar(
                select(func.max(VersionRow.version)).where(VersionRow.model_name == name)
            )
            version = (latest or 0) + 1
            uri = self.store.put(f"models/{name}/{version}", artifact_dir)
            row = VersionRow(
                model_name=name,
                version=version,
                flavor=flavor,
                signature=signature.model_dump(mode="json"),
                stage=Stage.NONE.value,
                artifact_uri=uri,
                created_at=now,
                trusted=trusted,
                compiled_from=compiled_from,
                description=description,
                metrics=metrics or {},
            )
            s.add(row)
            s.flush()
            return self._version_info(s, row)

    def list_models(self) -> list[ModelInfo]:
        with self.session() as s:
            models = s.scalars(select(ModelRow).order_by(ModelRow.name)).all()
            return [self._model_info(s, m) for m in models]

    def get_model(self, name: str) -> ModelInfo:
        with self.session() as s:
            return self._model_info(s, self._model_row(s, name))

    def delete_model(self, name: str) -> None:
        with self.session() as s:
            model = self._model_row(s, name)
            s.delete(model)
        self.store.delete(f"models/{name}")

    def get_version(self, name: str, ref: str | int | None = None) -> ModelVersionInfo:
        """Resolve ``ref``: a number, ``latest``, ``@stage``, an alias, or None for the
        production version if there is one, else the latest."""
        with self.session() as s:
            return self._version_info(s, self._resolve(s, name, ref))

    def set_stage(
        self, name: str, version: int, stage: Stage, archive_existing: bool = True
    ) -> ModelVersionInfo:
        """Move a version to ``stage``; with ``archive_existing`` the version that held
        that stage (staging or production) moves to archived."""
        with self.session() as s:
            row = self._resolve(s, name, version)
            if archive_existing and stage in (Stage.STAGING, Stage.PRODUCTION):
                holders = s.scalars(
                    select(VersionRow).where(
                        VersionRow.model_name == name,
                        VersionRow.stage == stage.value,
                        VersionRow.version != version,
                    )
                )
                for other in holders:
                    other.stage = Stage.ARCHIVED.value
            row.stage = stage.value
            s.flush()
            return self._version_info(s, row)

    def set_alias(self, name: str, alias: str, version: int) -> ModelVersionInfo:
        check_name("alias", alias)
        if alias in ("latest",) or alias.isdigit():
            raise BadRequest(f"{alias!r} is reserved; pick another alias")
        with self.session() as s:
            row = self._resolve(s, name, version)
            existing = s.get(AliasRow, (name, alias))
            if existing:
                existing.version = version
            else:
                s.add(AliasRow(model_name=name, alias=alias, version=version))
            s.flush()
            return self._version_info(s, row)

    def delete_alias(self, name: str, alias: str) -> None:
        with self.session() as s:
            row = s.get(AliasRow, (name, alias))
            if row is None:
                raise VersionNotFound(f"model {name!r} has no alias {alias!r}")
            s.delete(row)

    # endpoints
    def put_endpoint(self, spec: EndpointSpec, *, create_only: bool = False) -> EndpointSpec:
        now = time.time()
        with self.session() as s:
            for variant in [*spec.variants, *([spec.shadow] if spec.shadow else [])]:
                found = self._resolve(s, variant.model, variant.version)
                if variant.outputs:
                    try:
                        Signature.model_validate(found.signature).select_outputs(variant.outputs)
                    except ValueError as exc:
                        raise BadRequest(f"variant {variant.name!r}: {exc}") from None
            row = s.get(EndpointRow, spec.name)
            data = spec.model_dump(mode="json")
            if row is None:
                s.add(EndpointRow(name=spec.name, spec=data, created_at=now, updated_at=now))
            elif create_only:
                raise Conflict(f"endpoint {spec.name!r} exists; delete it or update it instead")
            else:
                row.spec, row.updated_at, row.generation = data, now, row.generation + 1
        return spec

    def get_endpoint(self, name: str) -> EndpointSpec:
        with self.session() as s:
            row = s.get(EndpointRow, name)
            if row is None:
                raise EndpointNotFound(self._missing_endpoint(s, name))
            return EndpointSpec.model_validate(row.spec)

    def list_endpoints(self) -> list[EndpointSpec]:
        with self.session() as s:
            rows = s.scalars(select(EndpointRow).order_by(EndpointRow.name)).all()
            return [EndpointSpec.model_validate(r.spec) for r in rows]

    def delete_endpoint(self, name: str) -> None:
        with self.session() as s:
            row = s.get(EndpointRow, name)
            if row is None:
                raise EndpointNotFound(self._missing_endpoint(s, name))
            s.delete(row)

    def artifact_dir(self, version: ModelVersionInfo) -> Path:
        return self.store.materialize(f"models/{version.model}/{version.version}")

    # helpers
    def _missing_endpoint(self, s: Session, name: str) -> str:
        names = s.scalars(select(EndpointRow.name)).all()
        known = ", ".join(names) if names else "none yet; create one with `zeroserve deploy`"
        return f"no endpoint named {name!r} (endpoints: {known})"

    def _model_row(self, s: Session, name: str) -> ModelRow:
        model = s.get(ModelRow, name)
        if model is None:
            names = s.scalars(select(ModelRow.name)).all()
            known = ", ".join(names) if names else "none registered yet"
            raise ModelNotFound(f"no model named {name!r} (models: {known})")
        return model

    def _resolve(self, s: Session, name: str, ref: str | int | None) -> VersionRow:
        self._model_row(s, name)
        query = select(VersionRow).where(VersionRow.model_name == name)
        if ref is None:
            row = s.scalars(query.where(VersionRow.stage == Stage.PRODUCTION.value)).first()
            if row is None:
                row = s.scalars(query.order_by(VersionRow.version.desc())).first()
        elif isinstance(ref, int) or str(ref).isdigit():
            row = s.scalars(query.where(VersionRow.version == int(ref))).first()
        elif ref == "latest":
            row = s.scalars(query.order_by(VersionRow.version.desc())).first()
        elif str(ref).startswith("@"):
            stage = str(ref)[1:]
            if stage not in {st.value for st in Stage}:
                raise BadRequest(
                    f"unknown stage {stage!r}; use one of {[st.value for st in Stage]}"
                )
            row = s.scalars(
                query.where(VersionRow.stage == stage).order_by(VersionRow.version.desc())
            ).first()
        else:
            alias = s.get(AliasRow, (name, str(ref)))
            row = (
                s.scalars(query.where(VersionRow.version == alias.version)).first()
                if alias
                else None
            )
        if row is None:
            versions = s.scalars(select(VersionRow.version).where(VersionRow.model_name == name))
            raise VersionNotFound(
                f"model {name!r} has no version {ref!r} "
                f"(versions: {', '.join(str(v) for v in versions) or 'none'})"
            )
        return row

    def _version_info(self, s: Session, row: VersionRow) -> ModelVersionInfo:
        aliases = s.scalars(
            select(AliasRow.alias).where(
                AliasRow.model_name == row.model_name, AliasRow.version == row.version
            )
        ).all()
        return ModelVersionInfo(
            model=row.model_name,
            version=row.version,
            flavor=Flavor(row.flavor),
            signature=Signature.model_validate(row.signature),
            stage=Stage(row.stage),
            artifact_uri=row.artifact_uri,
            created_at=row.created_at,
            trusted=row.trusted,
            compiled_from=row.compiled_from,
            description=row.description,
            metrics=row.metrics or {},
            aliases=list(aliases),
        )

    def _model_info(self, s: Session, model: ModelRow) -> ModelInfo:
        return ModelInfo(
            name=model.name,
            created_at=model.created_at,
            description=model.description,
            versions=[self._version_info(s, v) for v in model.versions],
        )
