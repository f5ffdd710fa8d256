"""The declarative base, the engine and the URL rules shared by the API and alembic."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import BigInteger, DateTime, Engine, MetaData, create_engine
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every model: timezone-aware timestamps, JSONB dicts, bigint ids."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {  # noqa: RUF012 (SQLAlchemy reads it as a class attribute)
        dt.datetime: DateTime(timezone=True),
        dict[str, Any]: JSONB,
        int: BigInteger,
    }


def enum_values(enum_cls: type[enum.Enum]) -> list[str]:
    """Store enums by value, not by member name."""
    return [str(member.value) for member in enum_cls]


def sqlalchemy_url(url: str) -> str:
    """Point a plain ``postgresql://`` URL at the psycopg 3 driver."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError(f"not a PostgreSQL URL: {url.split('@')[-1]!r}")


def libpq_url(url: str) -> str:
    """The same URL without the SQLAlchemy driver suffix (for raw psycopg connections)."""
    return "postgresql://" + sqlalchemy_url(url)[len("postgresql+psycopg://"):]


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine with a bounded pool.

    No pre-ping (it costs a round trip per transaction): a connection found dead raises
    OperationalError, which the request turns into a 503, and SQLAlchemy then replaces
    every pooled connection of that generation.
    """
    return create_engine(
        sqlalchemy_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        # A request waits at most this long for a connection, then gets a 503 to retry (the
        # claim path is capped at half the pool: api/context.py).
        pool_timeout=10,
        pool_recycle=1800,
    )


def contains_pattern(fragment: str | None) -> str | None:
    """``%fragment%`` for LIKE / ILIKE, with LIKE's wildcards (and its escape) in the fragment
    taken literally; None (no filter) for an empty or missing fragment."""
    if not fragment:
        return None
    return "%" + fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
