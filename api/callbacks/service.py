"""The callback outbox's SQL: claim due deliveries, record what became of them.

Rows are written by the ``jobs_changed`` trigger when a job ends (and by the submission code
when a submission reuses a finished result); the dispatcher in
``api/maintenance/callbacks.py`` claims, sends and records them through these functions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from api.errors import ValidationFailed
from storage.netguard import AddressGuard, ForbiddenAddress


@dataclass(frozen=True)
class DueDelivery:
    """One claimed delivery with everything its POST needs."""

    id: int
    job_id: int
    url: str
    job_status: str
    #: This attempt's number (counted when claimed, so a crash mid-send still counts).
    attempt: int
    token: str | None
    finished_at: dt.datetime | None
    error: dict[str, Any] | None

    def payload(self) -> dict[str, Any]:
        """The JSON body of the POST."""
        error = None
        if self.error:
            error = {"code": self.error.get("code"), "message": self.error.get("message")}
        return {
            "job_id": self.job_id,
            "status": self.job_status,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "error": error,
            "result_url": f"/api/jobs/{self.job_id}/result",
        }


@dataclass(frozen=True)
class Failure:
    """A delivery attempt that did not get a 2xx. ``retry_in_s`` None: give up."""

    id: int
    status: int | None
    error: str
    retry_in_s: float | None


# One statement claims and hides: SKIP LOCKED keeps two dispatchers off the same rows, and
# pushing next_attempt_at forward makes the rows invisible to the next scan until the
# visibility timeout, after which a crashed dispatcher's rows come back by themselves.
_CLAIM_DUE = text("""
    WITH due AS (
        SELECT id FROM callback_deliveries
        WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= now()
        ORDER BY next_attempt_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE callback_deliveries d
    SET next_attempt_at = now() + make_interval(secs => :visibility_s), attempts = d.attempts + 1
    FROM due, jobs j
    WHERE d.id = due.id AND j.id = d.job_id
    -- The token of the submission that asked: the creator's is on the job row.
    RETURNING d.id, d.job_id, d.url, d.job_status, d.attempts,
              CASE WHEN d.job_request_id IS NULL THEN j.callback_token
                   ELSE (SELECT r.callback_token FROM job_requests r WHERE r.id = d.job_request_id) END,
              j.finished_at, j.error
""")

# The guards on delivered_at/gave_up_at: a late outcome (a row whose visibility timeout lapsed
# and was sent again) never undoes a delivery or a give-up.
_MARK_DELIVERED = text("""
    UPDATE callback_deliveries SET delivered_at = now(), last_status = s.status, last_error = NULL
    FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS smallint[])) AS s(id, status)
    WHERE callback_deliveries.id = s.id AND delivered_at IS NULL AND gave_up_at IS NULL
""")

_MARK_FAILED = text("""
    UPDATE callback_deliveries SET
        last_status = f.status,
        last_error = f.error,
        next_attempt_at = CASE WHEN f.retry_in_s IS NULL THEN next_attempt_at
                               ELSE now() + make_interval(secs => f.retry_in_s) END,
        gave_up_at = CASE WHEN f.retry_in_s IS NULL THEN now() END
    FROM unnest(CAST(:ids AS bigint[]), CAST(:statuses AS smallint[]), CAST(:errors AS text[]),
                CAST(:retry_in_s AS float8[])) AS f(id, status, error, retry_in_s)
    WHERE callback_deliveries.id = f.id AND delivered_at IS NULL AND gave_up_at IS NULL
""")


def claim_due(conn: Connection, limit: int, visibility_s: float) -> list[DueDelivery]:
    """Claim up to ``limit`` due deliveries, oldest first, hiding them for ``visibility_s``."""
    if limit <= 0:
        return []
    rows = conn.execute(_CLAIM_DUE, {"limit": limit, "visibility_s": visibility_s}).all()
    return [DueDelivery(*row) for row in rows]


def mark_delivered(conn: Connection, delivered: list[tuple[int, int]]) -> int:
    """Record ``(delivery id, HTTP status)`` pairs as delivered; return how many changed."""
    if not delivered:
        return 0
    params = {"ids": [i for i, _ in delivered], "statuses": [s for _, s in delivered]}
    return conn.execute(_MARK_DELIVERED, params).rowcount


def mark_failed(conn: Connection, failures: list[Failure]) -> int:
    """Record failed attempts: retry later, or give up where ``retry_in_s`` is None."""
    if not failures:
        return 0
    return conn.execute(_MARK_FAILED, {
        "ids": [f.id for f in failures],
        "statuses": [f.status for f in failures],
        "errors": [f.error for f in failures],
        "retry_in_s": [f.retry_in_s for f in failures],
    }).rowcount


def check_callback_url(url: str | None, guard: AddressGuard, field: str = "callback_url") -> None:
    """Refuse a callback URL the dispatcher would never send to, as a 422 naming ``field``.

    Makes no DNS query (a submission must not wait on DNS): literal addresses, ``localhost``
    and the scheme are checked now; what a name resolves to is checked when sending.
    """
    if url is None:
        return
    try:
        guard.check_url(url, resolve=False)
    except ForbiddenAddress as exc:
        message = str(exc)
        raise ValidationFailed(f"Validation failed: {field}: {message}",
                               {"location": "json", "fields": {field: [message]}}) from None


_OF_JOB = text("""
    SELECT id, url, job_status, attempts, last_status, last_error, delivered_at, gave_up_at, next_attempt_at,
           created_at
    FROM callback_deliveries WHERE job_id = :job_id ORDER BY id
""")


def deliveries_of(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """A job's callback deliveries, oldest first (no visibility check: call after one)."""
    return [dict(row) for row in conn.execute(_OF_JOB, {"job_id": job_id}).mappings()]
