"""Per-user limits: active jobs, priority allowance, payload and file sizes.

Each limit has a configured default (``SKYFLEET_*``); an account row may override the
active-job limit and the priority allowance (``users.max_active_jobs``, ``users.min_priority``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection, text

from api.auth.guards import Caller
from api.config import Settings
from api.errors import LimitExceeded, ValidationFailed
from api.queue.jobs import account_limits

#: Namespace of the per-user advisory lock that serialises one user's submissions, so two
#: concurrent batches cannot both pass the active-job check ("skyl" in ASCII, shifted).
_SUBMIT_LOCK_NAMESPACE = 0x736B796C << 32


@dataclass(frozen=True)
class Limits:
    """What one account may do (``GET /api/jobs/limits``)."""

    max_active_jobs: int
    active_jobs: int
    #: The most urgent priority this account may ask for (0 is the most urgent of all).
    min_priority: int
    max_priority: int
    max_batch: int
    max_payload_bytes: int
    max_upload_bytes: int
    rate_limit_per_minute: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)




def limits_for(conn: Connection, who: Caller, settings: Settings) -> Limits:
    """The caller's limits and current active-job count."""
    max_active, min_priority, active = account_limits(conn, who.user_id)
    if min_priority is None:
        min_priority = 0 if who.is_admin else settings.user_min_priority
    return Limits(
        max_active_jobs=max_active if max_active is not None else settings.max_active_jobs_per_user,
        active_jobs=active,
        min_priority=min_priority,
        max_priority=9,
        max_batch=settings.max_submit_batch,
        max_payload_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        rate_limit_per_minute=settings.rate_limit_per_minute,
    )


def check_submission(conn: Connection, who: Caller, settings: Settings, bodies: list[dict[str, Any]]) -> None:
    """Refuse a submission that breaks a limit, naming it. Call inside the submitting transaction.

    Takes a per-user transaction lock first, so the count it checks cannot change before
    this submission commits (submissions of other users are not serialised).
    """
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SUBMIT_LOCK_NAMESPACE + who.user_id})
    limits = limits_for(conn, who, settings)
    too_urgent = {
        (f"jobs.{i}.priority" if len(bodies) > 1 else "priority"): [
            f"priority {b['priority']} is more urgent than your allowance (at most {limits.min_priority})"]
        for i, b in enumerate(bodies) if b["priority"] < limits.min_priority
    }
    if too_urgent:
        raise ValidationFailed("priority beyond your allowance; see GET /api/jobs/limits",
                               details={"location": "json", "fields": too_urgent})
    if limits.active_jobs + len(bodies) > limits.max_active_jobs:
        raise LimitExceeded(
            f"max_active_jobs: you have {limits.active_jobs} active jobs and the limit is "
            f"{limits.max_active_jobs}; wait for some to finish or cancel them",
            details={"limit": "max_active_jobs", "max": limits.max_active_jobs,
                     "active": limits.active_jobs, "requested": len(bodies)},
        )
