"""Users (people and service accounts) and their refresh tokens."""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import ARRAY, ForeignKey, Index, SmallInteger, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class Role(enum.StrEnum):
    """What an account may do. WORKER and MANAGER are service roles; a VIEWER reads what an
    admin reads (queues, workers, the fleet's status) and changes nothing."""

    ADMIN = "ADMIN"
    USER = "USER"
    VIEWER = "VIEWER"
    WORKER = "WORKER"
    MANAGER = "MANAGER"


#: Who may read the admin views (GET only).
ADMIN_READERS = (Role.ADMIN, Role.VIEWER)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    #: Stored normalised (trimmed, lower-case); unique.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[list[str]] = mapped_column(ARRAY(String(16)))
    is_service: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    disabled_at: Mapped[dt.datetime | None]
    #: Per-account overrides of the configured limits (NULL: the default applies).
    max_active_jobs: Mapped[int | None]
    min_priority: Mapped[int | None] = mapped_column(SmallInteger)


class RefreshToken(Base):
    """A refresh token, stored only as its SHA-256. Rotation links tokens into a family."""

    __tablename__ = "refresh_tokens"
    __table_args__ = (Index(None, "user_id"), Index(None, "family_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[uuid.UUID]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[dt.datetime]
    #: Set when the token was exchanged for a new one (rotation) or revoked (logout, reuse).
    revoked_at: Mapped[dt.datetime | None]
    rotated_from_id: Mapped[int | None] = mapped_column(ForeignKey("refresh_tokens.id", ondelete="SET NULL"))
