"""Per-user limits: active jobs, priority allowance, payload and file sizes.

Each limit has a configured default (``SKYFLEET_*``); an account row may override the
active-job limit and the priority allowance (``users.max_active_jobs``, ``users.min_priority``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Connection

from api.auth.guards import Caller
from api.config import Settings
from api.errors import LimitExceeded, ValidationFailed
from api.queue.jobs import account_limits, submission_limits
from jobtypes.catalogue import MAX_PRIORITY


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


def _resolve(who: Caller, settings: Settings, max_active: int | None, min_priority: int | None) -> tuple[int, int]:
    """An account's overrides, or the configured defaults: (max active jobs, min priority)."""
    if min_priority is None:
        min_priority = 0 if who.is_admin else settings.user_min_priority
    return (max_active if max_active is not None else settings.max_active_jobs_per_user), min_priority


def limits_for(conn: Connection, who: Caller, settings: Settings) -> Limits:
    """The caller's limits and current active-job count."""
    max_active, min_priority, active = account_limits(conn, who.user_id)
    max_active, min_priority = _resolve(who, settings, max_active, min_priority)
    return Limits(
        max_active_jobs=max_active,
        active_jobs=active,
        min_priority=min_priority,
        max_priority=MAX_PRIORITY,
        max_batch=settings.max_submit_batch,
        max_payload_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        rate_limit_per_minute=settings.rate_limit_per_minute,
    )


def check_submission(conn: Connection, who: Caller, settings: Settings, bodies: list[dict[str, Any]],
                     created: int) -> None:
    """Refuse a submission that breaks a limit, naming it. Call in the submitting transaction
    once its jobs are in (a refusal rolls them back); it ``created`` that many new jobs
    (joining an active job or reusing a result adds none).

    The active jobs are counted under a per-user lock held to the commit, so two concurrent
    submissions cannot both pass; submissions of other users are not serialised, nor is the
    work of a submission before its count. The count stops one past the limit: a user with a
    deep queue does not pay for counting all of it on every submission.
    """
    cap = settings.max_active_jobs_per_user + 1
    max_active, min_priority, active = submission_limits(conn, who.user_id, cap)
    max_active, min_priority = _resolve(who, settings, max_active, min_priority)
    if active >= cap and max_active >= cap:  # an account allowed more than the default: count further
        active = submission_limits(conn, who.user_id, max_active + 1)[2]
    too_urgent = {
        (f"jobs.{i}.priority" if len(bodies) > 1 else "priority"): [
            f"priority {b['priority']} is more urgent than your allowance (at most {min_priority})"]
        for i, b in enumerate(bodies) if b["priority"] < min_priority
    }
    if too_urgent:
        raise ValidationFailed("priority beyond your allowance; see GET /api/jobs/limits",
                               details={"location": "json", "fields": too_urgent})
    if active > max_active:
        before = account_limits(conn, who.user_id)[2] - created  # the exact count, only to say it
        raise LimitExceeded(
            f"max_active_jobs: you have {before} active jobs and the limit is "
            f"{max_active}; wait for some to finish or cancel them",
            details={"limit": "max_active_jobs", "max": max_active, "active": before, "requested": len(bodies)},
        )
