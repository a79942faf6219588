"""Rollout state in the registry database, so a rollout survives a restart."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from zeroserve.db import Base


class RolloutRow(Base):
    __tablename__ = "zs_rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(64), index=True)
    baseline: Mapped[str] = mapped_column(String(128))
    canary: Mapped[str] = mapped_column(String(128))
    canary_model: Mapped[str] = mapped_column(String(128))
    canary_version: Mapped[int] = mapped_column(Integer)
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(
        String(16), index=True
    )  # running|promoted|rolled_back|aborted
    step: Mapped[int] = mapped_column(Integer, default=0)
    step_started_at: Mapped[float] = mapped_column(Float)
    looks: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    fired: Mapped[str | None] = mapped_column(String(32), nullable=True)
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
