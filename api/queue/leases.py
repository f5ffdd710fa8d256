"""Claim, heartbeat, report and rescue: the life of an attempt.

An attempt is a row of ``job_assignments`` with a lease (``expires_at``). A job's current
attempt is ``jobs.attempt``; every statement below acts only where the assignment is
still live, the job is IN_PROGRESS and its attempt matches, so late actors change nothing.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, text

from api.queue.submit import notify_arrivals
from jobtypes import CATALOGUE, RetryPolicy

# Delay before the next attempt: exponential in the attempt just made, capped, and with a
# random half jittered away ("equal jitter") so a burst of failures does not retry in step.
# `policy` is the per-type retry policy joined in from the catalogue (see _policy_params).
_BACKOFF = """make_interval(secs => least(coalesce(policy.cap, :default_cap),
                 coalesce(policy.base, :default_base) * power(2, greatest(j.attempt - 1, 0)))
               * (0.5 + random() * 0.5))"""

_POLICY_JOIN = """LEFT JOIN unnest(CAST(:policy_types AS text[]), CAST(:policy_bases AS float8[]),
                             CAST(:policy_caps AS float8[])) AS policy(type, base, cap)
                  ON policy.type = j.type"""


def _policy_params() -> dict[str, Any]:
    default = RetryPolicy()
    types = sorted(CATALOGUE)
    return {
        "policy_types": types,
        "policy_bases": [CATALOGUE[t].retry.backoff_base_s for t in types],
        "policy_caps": [CATALOGUE[t].retry.backoff_cap_s for t in types],
        "default_base": default.backoff_base_s,
        "default_cap": default.backoff_cap_s,
    }


@dataclass(frozen=True)
class ClaimedJob:
    job_id: int
    assignment_id: int
    type: str
    attempt: int
    max_attempts: int
    input_payload: dict[str, Any]
    lease_expires_at: dt.datetime
    #: Seconds the job waited between becoming due and this claim (a metric).
    waited_s: float = 0.0
    #: The uploaded files the job reads: file_id, key (where it is stored), size, name.
    input_files: list[dict[str, Any]] = field(default_factory=list)


_CLAIM = text("""
    WITH picked AS (
        -- One ordered probe of ix_jobs_claimable per type (a plain `type = ANY(...)` makes the
        -- planner sort every pending row), merged and cut to the limit.
        SELECT first.id FROM unnest(CAST(:types AS text[])) AS t(type)
        CROSS JOIN LATERAL (
            SELECT id, priority, run_after FROM jobs
            WHERE status = 'PENDING' AND jobs.type = t.type AND run_after <= now()
            ORDER BY priority, run_after, id
            LIMIT :limit
            FOR UPDATE SKIP LOCKED
        ) AS first
        ORDER BY first.priority, first.run_after, first.id
        LIMIT :limit
    ), claimed AS (
        UPDATE jobs j
        SET status = 'IN_PROGRESS', attempt = j.attempt + 1, started_at = now(), updated_at = now()
        FROM picked WHERE j.id = picked.id
        RETURNING j.id, j.type, j.attempt, j.max_attempts, j.input_payload, j.priority, j.run_after,
                  greatest(extract(epoch FROM now() - j.run_after), 0)::float8 AS waited_s
    ), leased AS (
        INSERT INTO job_assignments (job_id, worker_id, attempt, expires_at, heartbeat_at)
        SELECT id, :worker_id, attempt, now() + make_interval(secs => :lease_s), now() FROM claimed
        RETURNING id, job_id, expires_at
    )
    SELECT c.id, l.id, c.type, c.attempt, c.max_attempts, c.input_payload, l.expires_at, c.waited_s,
           -- The uploaded files the job reads, and where they are stored (workers never see the
           -- database), in the same round trip.
           (SELECT coalesce(jsonb_agg(jsonb_build_object('file_id', f.id, 'key', f.storage_key, 'size', f.size,
                                                         'name', f.name) ORDER BY f.id), '[]'::jsonb)
            FROM job_files jf JOIN files f ON f.id = jf.file_id WHERE jf.job_id = c.id) AS input_files
    FROM claimed c JOIN leased l ON l.job_id = c.id
    ORDER BY c.priority, c.run_after, c.id
""")


def claim_jobs(conn: Connection, worker_id: int, types: list[str], limit: int, lease_s: float) -> list[ClaimedJob]:
    """Claim up to ``limit`` due jobs of ``types`` for a worker, in one statement.

    ``FOR UPDATE SKIP LOCKED`` lets concurrent claimers pass each other's rows instead of
    queueing behind them; each claimed job gets one assignment (lease) for its new attempt.
    With several types, up to ``limit`` rows per type are locked and the surplus is
    released (still PENDING) at commit: a concurrent claimer may skip them meanwhile.
    """
    rows = conn.execute(
        _CLAIM, {"types": types, "limit": limit, "worker_id": worker_id, "lease_s": lease_s}
    ).all()
    return [ClaimedJob(*row) for row in rows]


_NEXT_DUE = text("""
    SELECT min(first.run_after)
    FROM unnest(CAST(:types AS text[])) AS t(type)
    CROSS JOIN generate_series(0, 9) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT run_after FROM jobs
        WHERE status = 'PENDING' AND jobs.type = t.type AND jobs.priority = p.priority
        ORDER BY run_after LIMIT 1
    ) AS first
""")


def next_due_at(conn: Connection, types: list[str]) -> dt.datetime | None:
    """When the earliest pending job of ``types`` becomes claimable (None: no pending job).

    One probe of the claim index per (type, priority), so it stays cheap with a deep queue.
    """
    return conn.execute(_NEXT_DUE, {"types": types}).scalar_one()


@dataclass(frozen=True)
class Liveness:
    """The heartbeat answer: leases extended, jobs the worker must stop, drain flag."""

    extended: list[tuple[int, int]]
    #: (job_id, attempt, reason) with reason "cancelled" or "lost".
    stop: list[tuple[int, int, str]]
    lease_expires_at: dt.datetime | None


# SKIP LOCKED: an assignment locked right now is being completed (a report) or rescued,
# so there is nothing to extend, and a heartbeat never waits on (or deadlocks with) them.
_EXTEND = text("""
    WITH live AS (
        SELECT a.id, a.job_id, a.attempt, j.cancel_requested
        FROM job_assignments a
        JOIN unnest(CAST(:job_ids AS bigint[]), CAST(:attempts AS int[])) AS mine(job_id, attempt)
             ON a.job_id = mine.job_id AND a.attempt = mine.attempt
        JOIN jobs j ON j.id = a.job_id AND j.attempt = a.attempt AND j.status = 'IN_PROGRESS'
        WHERE a.worker_id = :worker_id AND a.completed_at IS NULL
    ), extended AS (
        UPDATE job_assignments a
        SET expires_at = now() + make_interval(secs => :lease_s), heartbeat_at = now()
        WHERE a.id IN (SELECT id FROM job_assignments WHERE id IN (SELECT id FROM live)
                       AND completed_at IS NULL FOR UPDATE SKIP LOCKED)
        RETURNING a.id, a.expires_at
    )
    SELECT live.job_id, live.attempt, live.cancel_requested, extended.expires_at
    FROM live LEFT JOIN extended ON extended.id = live.id
""")


# SKIP LOCKED again: a report locks the job row and then its assignment, while this heartbeat
# already holds the assignment (from _EXTEND); waiting here would deadlock the two. A job
# locked right now is being finished, so its progress no longer matters.
_SET_PROGRESS = text("""
    UPDATE jobs j SET progress = p.progress, updated_at = now()
    FROM unnest(CAST(:job_ids AS bigint[]), CAST(:attempts AS int[]), CAST(:progress AS jsonb[]))
         AS p(job_id, attempt, progress)
    WHERE j.id = p.job_id AND j.attempt = p.attempt AND j.status = 'IN_PROGRESS'
      AND j.progress IS DISTINCT FROM p.progress
      AND j.id IN (SELECT id FROM jobs WHERE id = ANY(CAST(:job_ids AS bigint[])) AND status = 'IN_PROGRESS'
                   FOR UPDATE SKIP LOCKED)
""")


def extend_leases(conn: Connection, worker_id: int, running: list[tuple[int, int]], lease_s: float,
                  progress: dict[tuple[int, int], dict[str, Any]] | None = None) -> Liveness:
    """Extend, in one statement, the leases of the attempts a worker says it is running.

    Only the attempts it lists are extended: an attempt the worker has lost track of lapses
    and is rescued, rather than being kept alive by an unrelated heartbeat. Attempts it
    lists that are no longer current come back as "lost"; cancelled ones as "cancelled".
    """
    rows = conn.execute(_EXTEND, {
        "worker_id": worker_id, "lease_s": lease_s,
        "job_ids": [j for j, _ in running], "attempts": [a for _, a in running],
    }).all()
    # Current attempts are "live" even when this beat skipped one that was locked.
    live = {(job_id, attempt): cancel for job_id, attempt, cancel, _ in rows}
    stop = [(j, a, "cancelled") for (j, a), cancel in live.items() if cancel]
    stop += [(j, a, "lost") for j, a in running if (j, a) not in live]
    if progress:
        keys = [k for k in progress if k in live]
        if keys:
            conn.execute(_SET_PROGRESS, {
                "job_ids": [j for j, _ in keys], "attempts": [a for _, a in keys],
                "progress": [Jsonb(progress[k]) for k in keys],
            })
    expires = max((row[3] for row in rows if row[3] is not None), default=None)
    return Liveness(extended=sorted(live), stop=sorted(stop), lease_expires_at=expires)


@dataclass(frozen=True)
class Report:
    """A worker's report on one attempt."""

    job_id: int
    attempt: int
    #: SUCCEEDED, FAILED or CANCELLED (acknowledging a cancel request).
    outcome: str
    result_payload: dict[str, Any] | None = None
    storage_uri: str | None = None
    files: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    permanent: bool = False


@dataclass(frozen=True)
class ReportOutcome:
    job_id: int
    attempt: int
    accepted: bool
    #: The job's status after the report (when accepted).
    status: str | None = None
    run_after: dt.datetime | None = None
    #: The job's type and how long the attempt ran (claim → report), for metrics.
    type: str | None = None
    duration_s: float | None = None


# The next status is decided from the row being updated (`j`), so a cancel that lands
# between the statement's snapshot and its row lock is still honoured.
_NEXT_STATUS = """CASE WHEN c.outcome = 'SUCCEEDED' THEN 'SUCCEEDED'
                   WHEN c.outcome = 'CANCELLED' OR j.cancel_requested THEN 'CANCELLED'
                   WHEN c.permanent OR j.attempt >= j.max_attempts THEN 'FAILED'
                   ELSE 'PENDING' END"""

# No explicit row locks: the guards sit in the UPDATE's own WHERE, which PostgreSQL
# re-checks on the newest row version if it had to wait (a rescuer or a duplicate report
# got there first), and the assignment and result follow only the jobs actually updated.
_REPORT = text(f"""
    WITH report AS (
        SELECT * FROM unnest(
            CAST(:job_ids AS bigint[]), CAST(:attempts AS int[]), CAST(:outcomes AS text[]),
            CAST(:payloads AS jsonb[]), CAST(:storage_uris AS text[]), CAST(:files AS jsonb[]),
            CAST(:errors AS jsonb[]), CAST(:permanent AS boolean[]))
        AS r(job_id, attempt, outcome, payload, storage_uri, files, error, permanent)
    ), current AS (
        SELECT a.id AS assignment_id, r.*, {_BACKOFF} AS delay
        FROM report r
        JOIN job_assignments a ON a.job_id = r.job_id AND a.attempt = r.attempt
             AND a.worker_id = :worker_id AND a.completed_at IS NULL
        JOIN jobs j ON j.id = r.job_id AND j.attempt = r.attempt AND j.status = 'IN_PROGRESS'
        {_POLICY_JOIN}
    ), finished_jobs AS (
        UPDATE jobs j SET
            status = {_NEXT_STATUS},
            run_after = CASE WHEN {_NEXT_STATUS} = 'PENDING' THEN now() + c.delay ELSE j.run_after END,
            finished_at = CASE WHEN {_NEXT_STATUS} = 'PENDING' THEN NULL ELSE now() END,
            error = CASE WHEN c.outcome = 'FAILED' THEN c.error ELSE NULL END,
            updated_at = now()
        FROM current c
        WHERE j.id = c.job_id AND j.attempt = c.attempt AND j.status = 'IN_PROGRESS'
        RETURNING j.id, j.attempt, j.status, j.run_after, j.type,
                  extract(epoch FROM now() - j.started_at)::float8 AS duration_s
    ), finished_assignments AS (
        UPDATE job_assignments a SET completed_at = now(), outcome = c.outcome, storage_uri = c.storage_uri
        FROM current c JOIN finished_jobs f ON f.id = c.job_id
        WHERE a.id = c.assignment_id
    ), results AS (
        INSERT INTO job_results (job_id, assignment_id, result_payload, storage_uri, files)
        SELECT c.job_id, c.assignment_id, c.payload, c.storage_uri, c.files
        FROM current c JOIN finished_jobs f ON f.id = c.job_id
        WHERE c.outcome = 'SUCCEEDED'
    )
    SELECT id, attempt, status, run_after, type, duration_s FROM finished_jobs
""")


def report_attempts(conn: Connection, worker_id: int, reports: list[Report]) -> list[ReportOutcome]:
    """Record a batch of results and failures; one outcome per report, in order.

    A report for an attempt that is not current (rescued, cancelled, already reported, or
    another worker's) is not accepted and changes nothing. A failure is retried with backoff
    while attempts remain, unless it is permanent.
    """
    params = _policy_params() | {
        "worker_id": worker_id,
        "job_ids": [r.job_id for r in reports],
        "attempts": [r.attempt for r in reports],
        "outcomes": [r.outcome for r in reports],
        "payloads": [None if r.result_payload is None else Jsonb(r.result_payload) for r in reports],
        "storage_uris": [r.storage_uri for r in reports],
        "files": [None if r.files is None else Jsonb(r.files) for r in reports],
        "errors": [None if r.error is None else Jsonb(r.error) for r in reports],
        "permanent": [r.permanent for r in reports],
    }
    rows = conn.execute(_REPORT, params).all()
    # A retry is scheduled (backoff): one parked claim wakes, learns when it is due and waits for it.
    notify_arrivals(conn, Counter(row[4] for row in rows if row[2] == "PENDING"))
    done = {(row[0], row[1]): row[2:] for row in rows}
    outcomes = []
    for r in reports:
        hit = done.pop((r.job_id, r.attempt), None)
        if hit is None:
            outcomes.append(ReportOutcome(r.job_id, r.attempt, accepted=False))
        else:
            status, run_after, job_type, duration_s = hit
            outcomes.append(ReportOutcome(r.job_id, r.attempt, True, status, run_after, job_type, duration_s))
    return outcomes


_RESCUE = text(f"""
    WITH expired AS (
        SELECT a.id AS assignment_id, j.id AS job_id,
               CASE WHEN j.cancel_requested THEN 'CANCELLED'
                    WHEN j.attempt >= j.max_attempts THEN 'TIMED_OUT'
                    ELSE 'PENDING' END AS next_status,
               {_BACKOFF} AS delay,
               NOT EXISTS (SELECT FROM job_assignments x
                           WHERE x.job_id = j.id AND x.outcome = 'EXPIRED') AS first_expiry
        FROM job_assignments a
        JOIN jobs j ON j.id = a.job_id AND j.attempt = a.attempt AND j.status = 'IN_PROGRESS'
        {_POLICY_JOIN}
        WHERE a.completed_at IS NULL AND a.expires_at < now()
        ORDER BY a.expires_at
        LIMIT :limit
        FOR UPDATE OF a, j SKIP LOCKED
    ), rescued_jobs AS (
        UPDATE jobs j SET
            status = e.next_status,
            -- A job whose worker vanished keeps its place in line (its run_after) the first
            -- time, so it runs again at once even behind a deep backlog; a job that keeps
            -- losing its workers (maybe by killing them) backs off like a failure.
            run_after = CASE WHEN e.next_status <> 'PENDING' OR e.first_expiry THEN j.run_after
                             ELSE now() + e.delay END,
            finished_at = CASE WHEN e.next_status = 'PENDING' THEN NULL ELSE now() END,
            error = jsonb_build_object(
                'code', 'LEASE_EXPIRED',
                'message', format('attempt %s: the worker stopped heartbeating and its lease expired',
                                  j.attempt)),
            updated_at = now()
        FROM expired e WHERE j.id = e.job_id
        RETURNING j.id, j.type, j.status
    ), expired_assignments AS (
        UPDATE job_assignments a SET completed_at = now(), outcome = 'EXPIRED'
        FROM expired e WHERE a.id = e.assignment_id
    )
    SELECT id, type, status FROM rescued_jobs
""")


# Its own transaction, before the rescue: it waits for claims holding a worker's row, while the
# rescue holds job rows a claim's report may wait for; in one transaction the two deadlocked.
_MARK_LAPSED = text("""
    UPDATE workers w SET lapsed_at = now()
    WHERE w.id IN (SELECT DISTINCT a.worker_id FROM job_assignments a
                   WHERE a.completed_at IS NULL AND a.expires_at < now())
""")


def mark_lapsed_workers(conn: Connection) -> int:
    """Stamp ``lapsed_at`` on the workers holding an expired lease: a claim of theirs parked
    before now (maybe a killed process's last request) takes no job (api/workers/service.py).
    Done before the rescue commits, so the claims its notification wakes already see it."""
    return conn.execute(_MARK_LAPSED).rowcount


def rescue_expired(conn: Connection, limit: int = 1000) -> list[tuple[int, str, str]]:
    """Take back up to ``limit`` attempts whose lease expired: (job_id, type, new status).

    The job goes back to PENDING — in its old place in line the first time its lease
    expires, with backoff after that — or TIMED_OUT when its attempts are used up,
    or CANCELLED when a cancel was pending. Call :func:`mark_lapsed_workers` first, in its
    own transaction. ``SKIP LOCKED``: a row a worker is reporting on
    right now is left for the next pass rather than waited for.
    """
    rows = conn.execute(_RESCUE, _policy_params() | {"limit": limit}).all()
    notify_arrivals(conn, Counter(type_ for _, type_, status in rows if status == "PENDING"))
    return [(job_id, type_, status) for job_id, type_, status in rows]


_RELEASE = text("""
    WITH released AS (
        UPDATE job_assignments a SET completed_at = now(), outcome = 'RELEASED'
        FROM jobs j, unnest(CAST(:job_ids AS bigint[]), CAST(:attempts AS int[])) AS mine(job_id, attempt)
        WHERE a.worker_id = :worker_id AND a.completed_at IS NULL
          AND a.job_id = mine.job_id AND a.attempt = mine.attempt
          AND j.id = a.job_id AND j.attempt = a.attempt AND j.status = 'IN_PROGRESS'
        RETURNING a.job_id
    )
    UPDATE jobs j SET
        status = CASE WHEN j.cancel_requested THEN 'CANCELLED' ELSE 'PENDING' END,
        finished_at = CASE WHEN j.cancel_requested THEN now() END,
        -- A released attempt did not fail: give it back so it does not count against the job.
        max_attempts = j.max_attempts + 1,
        updated_at = now()
    FROM released r WHERE j.id = r.job_id AND j.status = 'IN_PROGRESS'
    RETURNING j.id, j.type, j.status
""")


def release_attempts(conn: Connection, worker_id: int, running: list[tuple[int, int]]) -> list[tuple[int, str, str]]:
    """Hand attempts back to the queue at once (a worker shutting down): (job_id, type, status)."""
    rows = conn.execute(_RELEASE, {
        "worker_id": worker_id, "job_ids": [j for j, _ in running], "attempts": [a for _, a in running],
    }).all()
    notify_arrivals(conn, Counter(type_ for _, type_, status in rows if status == "PENDING"))
    return [(job_id, type_, status) for job_id, type_, status in rows]
