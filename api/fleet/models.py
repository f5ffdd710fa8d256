"""Worker pools as the manager reports them (with admins' overrides), scaling decisions, the manager lease."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import ARRAY, CheckConstraint, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base

#: What a pool runs on, and what a manager tick may decide.
BACKENDS = ("local", "ecs")
ACTIONS = ("scale_out", "scale_in", "hold", "none")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Pool(Base):
    """One worker pool: the manager's configuration of it, and what admins asked for.

    The manager owns the configuration columns (it re-reports them at start and on change);
    admins own the overrides and the redeploy generation, which survive a re-report.
    """

    __tablename__ = "fleet_pools"
    __table_args__ = (
        CheckConstraint("min_workers >= 0 AND min_workers <= max_workers", name="bounds"),
        CheckConstraint("jobs_per_worker >= 1", name="jobs_per_worker"),
        CheckConstraint(_one_of("backend", BACKENDS), name="backend"),
        # Overrides stay within the configured max (a re-report with a lower max clamps them).
        CheckConstraint("pinned_count IS NULL OR pinned_count BETWEEN 0 AND max_workers", name="pinned_count"),
        CheckConstraint("min_override IS NULL OR min_override BETWEEN 0 AND max_workers", name="min_override"),
        CheckConstraint("max_override IS NULL OR max_override BETWEEN 0 AND max_workers", name="max_override"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    job_types: Mapped[list[str]] = mapped_column(ARRAY(String(64)))
    backend: Mapped[str] = mapped_column(String(16))
    min_workers: Mapped[int]
    max_workers: Mapped[int]
    jobs_per_worker: Mapped[int]
    #: Free-form backend settings (command, cluster, task definition, ...).
    details: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    #: An admin's fixed worker count (replaces the policy while set).
    pinned_count: Mapped[int | None]
    min_override: Mapped[int | None]
    max_override: Mapped[int | None]
    #: Bumped by each redeploy; the manager replaces workers started under an older one.
    redeploy_generation: Mapped[int] = mapped_column(server_default="0")
    redeploy_requested_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    #: When the manager last reported this pool's configuration.
    reported_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class ScalingDecision(Base):
    """One manager tick's decision for one pool, with its reason and what it saw."""

    __tablename__ = "fleet_decisions"
    __table_args__ = (
        # Newest first per pool: the status view and the pruner's per-pool cut-off.
        Index(None, "pool_id", "id"),
        CheckConstraint(_one_of("action", ACTIONS), name="action"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("fleet_pools.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    desired: Mapped[int]
    previous: Mapped[int]
    action: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    #: The policy's inputs: pending, in_progress, running, starting, draining, ...
    inputs: Mapped[dict[str, Any]]
    #: Backend details: ECS cluster and task definition, the last launch error, ...
    observed: Mapped[dict[str, Any]]


class ManagerLease(Base):
    """Who the active manager is: one row, taken and renewed by an atomic upsert."""

    __tablename__ = "manager_leases"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    acquired_at: Mapped[dt.datetime]
    expires_at: Mapped[dt.datetime]
