"""Rate-limit counters: an UNLOGGED table (no WAL; losing counts in a crash is harmless)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class RateLimitCounter(Base):
    """Hits of one key (``user:42``, ``ip:10.0.0.1``, ``login:alice@…``) in one window."""

    __tablename__ = "rate_limit_counters"
    __table_args__ = {"prefixes": ["UNLOGGED"]}  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    window_start: Mapped[dt.datetime] = mapped_column(primary_key=True)
    hits: Mapped[int]
