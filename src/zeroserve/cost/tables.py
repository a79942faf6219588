"""Tables of the meter's usage rollups (declared on zeroserve.db.Base)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from zeroserve.db import Base


class UsageMinute(Base):
    """One endpoint variant's usage in one minute; flushes merge into the same row."""

    __tablename__ = "cost_usage_minutes"
    __table_args__ = (
        UniqueConstraint("endpoint", "variant", "minute", name="uq_cost_usage_minute"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    endpoint: Mapped[str] = mapped_column(String(128), index=True)
    variant: Mapped[str] = mapped_column(String(128))
    minute: Mapped[int] = mapped_column(
        BigInteger, index=True, doc="epoch seconds at the minute's start"
    )
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    rows: Mapped[int] = mapped_column(BigInteger, default=0)
    compute_s: Mapped[float] = mapped_column(Float, default=0.0)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
    cold_starts: Mapped[int] = mapped_column(Integer, default=0)
    peak_concurrency: Mapped[int] = mapped_column(Integer, default=0)
    peak_memory_mb: Mapped[float] = mapped_column(Float, default=0.0)
