"""Claim, heartbeat, report and rescue: the life of an attempt (statements in sql/attempts.sql).

The live attempt is on the job row: ``lease_token`` (its fence), ``worker_id`` and
``lease_expires_at``. Every statement acts only on a live attempt (fragment ``live``) — the
job is IN_PROGRESS and holds the token the actor names — so late actors change nothing. The token
is a random UUID drawn at each claim: a claim a crash rolled back (claims commit
asynchronously) leaves its worker a token the database never holds again, whereas an
attempt number would come round again at the next claim. An attempt leaves one row in
``job_attempts`` when it ends, with its outcome and result.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec
from psycopg.types.json import Jsonb
from sqlalchemy import Connection

from api.queue.sql import Q
from api.queue.submit import notify_arrivals
from jobtypes import CATALOGUE, RetryPolicy, protocol


def _policy_params() -> dict[str, Any]:
    """Each job type's retry backoff, for the statements that schedule a retry (``policy_join``)."""
    default = RetryPolicy()
    types = sorted(CATALOGUE)
    return {
        "policy_types": types,
        "policy_bases": [CATALOGUE[t].retry.backoff_base_s for t in types],
        "policy_caps": [CATALOGUE[t].retry.backoff_cap_s for t in types],
        "default_base": default.backoff_base_s,
        "default_cap": default.backoff_cap_s,
    }


def claim_jobs(conn: Connection, worker_id: int, types: list[str], limit: int,
               lease_s: float) -> list[protocol.ClaimedJob]:
    """Claim up to ``limit`` due jobs of ``types`` for a worker, in one statement.

    ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass each other's rows instead of
    queueing behind them; each claimed job gets a new attempt with a fresh token and lease.
    With several types, up to ``limit`` rows per type are locked and the surplus is
    released (still PENDING) at commit: a concurrent claimer may skip them meanwhile.
    """
    rows = conn.execute(
        Q.claim, {"types": types, "limit": limit, "worker_id": worker_id, "lease_s": lease_s}
    ).all()
    return msgspec.convert([row._asdict() | {"timeout_s": _timeout_s(row.type)} for row in rows],
                           list[protocol.ClaimedJob])


def _timeout_s(job_type: str) -> float:
    known = CATALOGUE.get(job_type)
    return known.timeout_s if known else 0.0


def next_due_at(conn: Connection, types: list[str]) -> dt.datetime | None:
    """When the earliest pending job of ``types`` becomes claimable (None: no pending job).

    One probe of the claim index per (type, priority), so it stays cheap with a deep queue.
    """
    return conn.execute(Q.next_due, {"types": types}).scalar_one()


@dataclass(frozen=True)
class Held:
    """An attempt a worker says it holds: the job and the attempt's token (its number is for logs)."""

    job_id: int
    token: str
    attempt: int = 0


@dataclass(frozen=True)
class Liveness:
    """The heartbeat answer: attempts still live, attempts the worker must stop, lease end."""

    live: list[Held]
    #: (attempt, reason) with reason "cancelled" or "lost".
    stop: list[tuple[Held, str]]
    lease_expires_at: dt.datetime | None


def extend_leases(conn: Connection, worker_id: int, held: list[Held], lease_s: float,
                  progress: dict[str, dict[str, Any]] | None = None) -> Liveness:
    """Extend, in one statement, the leases of the attempts a worker says it holds, recording
    their progress (``progress`` by token).

    Only the attempts it lists are extended: an attempt the worker has lost track of lapses
    and is rescued, rather than being kept alive by an unrelated heartbeat. Attempts it
    lists that are no longer live come back as "lost"; cancelled ones as "cancelled".
    """
    progress = progress or {}
    rows = conn.execute(Q.extend, {
        "worker_id": worker_id, "lease_s": lease_s,
        "job_ids": [h.job_id for h in held], "tokens": [h.token for h in held],
        "progress": [Jsonb(progress[h.token]) if h.token in progress else None for h in held],
    }).all()
    # Live attempts are "live" even when this beat skipped one that was locked.
    cancelled = {(job_id, token): cancel for job_id, token, cancel, _ in rows}
    live = [h for h in held if (h.job_id, h.token) in cancelled]
    stop = [(h, "cancelled") for h in live if cancelled[(h.job_id, h.token)]]
    stop += [(h, "lost") for h in held if (h.job_id, h.token) not in cancelled]
    expires = max((row[3] for row in rows if row[3] is not None), default=None)
    return Liveness(live=live, stop=stop, lease_expires_at=expires)


@dataclass(frozen=True)
class Report:
    """A worker's report on one attempt."""

    job_id: int
    token: str
    #: SUCCEEDED, FAILED or CANCELLED (acknowledging a cancel request).
    outcome: str
    attempt: int = 0
    result_payload: dict[str, Any] | None = None
    storage_uri: str | None = None
    files: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    permanent: bool = False


@dataclass(frozen=True)
class ReportOutcome:
    job_id: int
    token: str
    attempt: int
    accepted: bool
    #: The job's status after the report (when accepted).
    status: str | None = None
    run_after: dt.datetime | None = None
    #: The job's type and how long the attempt ran (claim → report), for metrics.
    type: str | None = None
    duration_s: float | None = None


def report_attempts(conn: Connection, worker_id: int, reports: list[Report]) -> list[ReportOutcome]:
    """Record a batch of results and failures; one outcome per report, in order.

    A report for an attempt that is not live (rescued, cancelled, already reported, or
    another worker's) is not accepted and changes nothing. A failure is retried with backoff
    while attempts remain, unless it is permanent.
    """
    params = _policy_params() | {
        "worker_id": worker_id,
        "job_ids": [r.job_id for r in reports],
        "tokens": [r.token for r in reports],
        "outcomes": [r.outcome for r in reports],
        "payloads": [None if r.result_payload is None else Jsonb(r.result_payload) for r in reports],
        "storage_uris": [r.storage_uri for r in reports],
        "files": [None if r.files is None else Jsonb(r.files) for r in reports],
        "errors": [None if r.error is None else Jsonb(r.error) for r in reports],
        "permanent": [r.permanent for r in reports],
    }
    rows = conn.execute(Q.report, params).all()
    # A retry is scheduled (backoff): one parked claim wakes, learns when it is due and waits for it.
    notify_arrivals(conn, Counter(row.type for row in rows if row.status == "PENDING"))
    done = {(row[0], row[1]): row for row in rows}
    outcomes = []
    for r in reports:
        hit = done.pop((r.job_id, r.token), None)
        if hit is None:
            outcomes.append(ReportOutcome(r.job_id, r.token, r.attempt, accepted=False))
        else:
            outcomes.append(ReportOutcome(r.job_id, r.token, hit.attempt, True, hit.status, hit.run_after,
                                          hit.type, hit.duration_s))
    return outcomes


def mark_lapsed_workers(conn: Connection) -> int:
    """Stamp ``lapsed_at`` on the workers holding an expired lease: a claim of theirs parked
    before now (maybe a killed process's last request) takes no job (api/workers/service.py).
    Done before the rescue commits, so the claims its notification wakes already see it."""
    return conn.execute(Q.mark_lapsed).rowcount


def rescue_expired(conn: Connection, limit: int = 1000) -> list[tuple[int, str, str]]:
    """Take back up to ``limit`` attempts whose lease expired: (job_id, type, new status).

    The job goes back to PENDING — in its old place in line the first time its lease
    expires, with backoff after that — or TIMED_OUT when its attempts are used up,
    or CANCELLED when a cancel was pending. Call :func:`mark_lapsed_workers` first, in its
    own transaction. ``SKIP LOCKED``: a row a worker is reporting on
    right now is left for the next pass rather than waited for.
    """
    rows = conn.execute(Q.rescue, _policy_params() | {"limit": limit}).all()
    notify_arrivals(conn, Counter(type_ for _, type_, status in rows if status == "PENDING"))
    return [(job_id, type_, status) for job_id, type_, status in rows]


def release_attempts(conn: Connection, worker_id: int, held: list[Held]) -> list[tuple[int, str, str]]:
    """Hand attempts back to the queue at once (a worker shutting down): (job_id, type, status)."""
    rows = conn.execute(Q.release, {
        "worker_id": worker_id, "job_ids": [h.job_id for h in held], "tokens": [h.token for h in held],
    }).all()
    notify_arrivals(conn, Counter(type_ for _, type_, status in rows if status == "PENDING"))
    return [(job_id, type_, status) for job_id, type_, status in rows]
