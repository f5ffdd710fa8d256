"""Registered worker processes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ARRAY, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class Worker(Base):
    __tablename__ = "workers"
    __table_args__ = (Index("ix_workers_live", "last_heartbeat_at", postgresql_where=text("stopped_at IS NULL")),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    #: The service account it authenticated as.
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None]
    ecs_task_arn: Mapped[str | None] = mapped_column(Text)
    ecs_cluster_arn: Mapped[str | None] = mapped_column(Text)
    job_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    concurrency: Mapped[int]
    attributes: Mapped[dict[str, Any] | None]
    started_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    last_heartbeat_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    #: Set by an admin (redeploy) or the manager; the heartbeat answer tells the worker.
    draining: Mapped[bool] = mapped_column(server_default=text("false"))
    stopped_at: Mapped[dt.datetime | None]
    #: When a lease of this worker last lapsed (the rescuer took a job back): its claims parked
    #: before then take no job, for the worker is likely dead.
    lapsed_at: Mapped[dt.datetime | None]
