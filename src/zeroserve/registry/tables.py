"""Registry tables: models, immutable versions, aliases, endpoints."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from zeroserve.db import Base


class ModelRow(Base):
    __tablename__ = "zs_models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[float] = mapped_column(Float)
    description: Mapped[str] = mapped_column(Text, default="")
    versions: Mapped[list[VersionRow]] = relationship(
        back_populates="model", cascade="all, delete-orphan", order_by="VersionRow.version"
    )


class VersionRow(Base):
    __tablename__ = "zs_model_versions"
    __table_args__ = (UniqueConstraint("model_name", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(ForeignKey("zs_models.name", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    flavor: Mapped[str] = mapped_column(String(32))
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    stage: Mapped[str] = mapped_column(String(16), default="none")
    artifact_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    compiled_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    model: Mapped[ModelRow] = relationship(back_populates="versions")


class AliasRow(Base):
    __tablename__ = "zs_model_aliases"

    model_name: Mapped[str] = mapped_column(
        ForeignKey("zs_models.name", ondelete="CASCADE"), primary_key=True
    )
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)


class EndpointRow(Base):
    __tablename__ = "zs_endpoints"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    generation: Mapped[int] = mapped_column(Integer, default=1)
