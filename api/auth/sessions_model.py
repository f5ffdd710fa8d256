"""Browser sessions of the web console (the model; :mod:`api.auth.sessions` uses it)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random id, the table only its SHA-256."""

    __tablename__ = "console_sessions"
    __table_args__ = (Index(None, "user_id"), Index(None, "expires_at"))

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: Sent back by the page with every state-changing request (header X-CSRF-Token).
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_seen_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    #: The session ends at this time however active it is (idle ones end sooner).
    expires_at: Mapped[dt.datetime]
