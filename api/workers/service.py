"""Worker registration and the long-polling claim around the queue engine."""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, text

from api.context import AppContext
from api.errors import NotFound, StaleAttempt, WorkerGone
from api.files.service import input_files_of_jobs
from api.queue.leases import ClaimedJob, Report, ReportOutcome, claim_jobs, next_due_at, report_attempts
from jobtypes import CATALOGUE


@dataclass(frozen=True)
class WorkerRow:
    id: int
    job_types: list[str]
    draining: bool
    #: Seconds since its last heartbeat (reads by a claim only; 0 otherwise).
    silent_s: float = 0.0


def register_worker(conn: Connection, user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    row = conn.execute(
        text("""INSERT INTO workers (name, user_id, hostname, pid, ecs_task_arn, ecs_cluster_arn,
                                     job_types, concurrency, attributes)
                VALUES (:name, :user_id, :hostname, :pid, :ecs_task_arn, :ecs_cluster_arn,
                        CAST(:job_types AS varchar(64)[]), :concurrency, :attributes)
                RETURNING id, name, job_types, concurrency"""),
        body | {"user_id": user_id, "attributes": None if body["attributes"] is None else Jsonb(body["attributes"])},
    ).mappings().one()
    return dict(row)


_TOUCH = text("""
    UPDATE workers SET last_heartbeat_at = now()
    WHERE id = :worker_id AND user_id = :user_id
    RETURNING id, job_types, draining, stopped_at
""")

_CHECK = text("""
    SELECT id, job_types, draining, stopped_at FROM workers WHERE id = :worker_id AND user_id = :user_id
""")

# A claim holds a share lock on its worker's row until it commits, and a drain (api/fleet)
# takes the row's update lock before it looks for running jobs: so either the claim sees
# ``draining`` and takes nothing, or the drain waits for the claim and sees its jobs.
_CHECK_FOR_CLAIM = text("""
    SELECT id, job_types, draining, stopped_at,
           extract(epoch FROM now() - last_heartbeat_at)::float8 AS silent_s
    FROM workers WHERE id = :worker_id AND user_id = :user_id
    FOR SHARE
""")


def touch_worker(conn: Connection, worker_id: int, user_id: int, heartbeat: bool = False,
                 claiming: bool = False) -> WorkerRow:
    """The caller's worker; 404 unless it is this service account's, 409 if it was stopped.

    Only a heartbeat records liveness (a write); claims and reports just read the row, so
    the hot path does not rewrite the workers table on every request. ``claiming`` share-locks
    the row for the rest of the transaction (see ``_CHECK_FOR_CLAIM``).
    """
    statement = _TOUCH if heartbeat else _CHECK_FOR_CLAIM if claiming else _CHECK
    row = conn.execute(statement, {"worker_id": worker_id, "user_id": user_id}).one_or_none()
    if row is None:
        raise NotFound(f"worker {worker_id} not found")
    if row.stopped_at is not None:
        raise WorkerGone(f"worker {worker_id} was stopped or declared lost; register again")
    return WorkerRow(row.id, list(row.job_types), row.draining, getattr(row, "silent_s", 0.0))


def reports_from(bodies: list[dict[str, Any]]) -> list[Report]:
    """Validated report bodies → the queue engine's reports."""
    return [
        Report(
            job_id=r["job_id"], attempt=r["attempt"], outcome=r["status"],
            result_payload=r["result_payload"], storage_uri=r["storage_uri"], files=r["files"],
            error=None if r["error"] is None else {"code": r["error"]["code"], "message": r["error"]["message"]},
            permanent=bool(r["error"] and r["error"]["permanent"]),
        )
        for r in bodies
    ]


def outcome_view(outcome: ReportOutcome) -> dict[str, Any]:
    view: dict[str, Any] = {"job_id": outcome.job_id, "attempt": outcome.attempt, "accepted": outcome.accepted,
                            "status": outcome.status}
    if not outcome.accepted:
        view["error"] = {"code": StaleAttempt.code, "message": (StaleAttempt.__doc__ or "").strip()}
    return view


@dataclass(frozen=True)
class ClaimAnswer:
    jobs: list[ClaimedJob]
    drain: bool
    reported: list[ReportOutcome]


def long_poll_claim(c: AppContext, worker_id: int, user_id: int, types: list[str] | None,
                    max_jobs: int, wait_s: float, reports: list[Report] | None = None,
                    on_reported: Callable[[list[ReportOutcome]], None] | None = None) -> ClaimAnswer:
    """Record ``reports`` (if any), then claim up to ``max_jobs``, waiting up to ``wait_s`` for work.

    The reports and the first claim share one transaction, so a busy worker finishes a job
    and takes the next in one round trip and one commit. No database connection is held
    while waiting: the request parks on the process's :class:`~api.queue.notify.WakeHub`
    and claims again when a job of its types arrives, when the earliest scheduled job
    becomes due, or after a jittered fallback poll. ``on_reported`` hears of the reports as
    soon as they are committed, not when the wait ends (metrics must not lag the queue).
    """
    settings = c.settings
    c.listener.ensure_started()
    limit = min(max_jobs, settings.max_claim_batch)
    deadline = time.monotonic() + min(wait_s, settings.max_claim_wait_s)
    claim_types: list[str] = []
    reported: list[ReportOutcome] = []
    first = announce = True
    while True:
        with c.transaction() as conn:
            # Every pass re-reads the worker: one drained while it waited must not get work.
            worker = touch_worker(conn, worker_id, user_id, claiming=True)
            if first:
                if reports:
                    reported = report_attempts(conn, worker_id, reports)
                claim_types = sorted(set(types) & set(worker.job_types)) if types else worker.job_types
                first = False
            jobs: list[ClaimedJob] = []
            remaining, due_at = deadline - time.monotonic(), None
            # A worker silent for a lease may be dead, this claim parked on its behalf (the API
            # cannot see a client go): it gets no job until a heartbeat shows it alive. A job
            # just rescued from it would otherwise go straight back to it, and lapse again.
            seen = c.hub.snapshot(claim_types)
            if claim_types and not worker.draining and worker.silent_s < settings.lease_s:
                jobs = claim_jobs(conn, worker_id, claim_types, limit, settings.lease_s)
                if jobs:
                    files = input_files_of_jobs(conn, [j.job_id for j in jobs])
                    jobs = [replace(j, input_files=files.get(j.job_id, [])) for j in jobs]
                remaining = deadline - time.monotonic()
                due_at = next_due_at(conn, claim_types) if not jobs and remaining > 0 else None
        if announce:  # once, after the commit that recorded the reports
            announce = False
            if on_reported is not None and reported:
                on_reported(reported)
        if worker.draining or not claim_types:
            return ClaimAnswer([], worker.draining, reported)
        if jobs or remaining <= 0:
            return ClaimAnswer(jobs, False, reported)
        timeout = min(remaining, settings.claim_poll_fallback_s * random.uniform(0.5, 1.5))
        if due_at is not None:
            until_due = (due_at - dt.datetime.now(dt.UTC)).total_seconds()
            timeout = max(0.0, min(timeout, until_due))
        c.hub.wait(claim_types, seen, timeout)


def claimed_view(job: ClaimedJob) -> dict[str, Any]:
    job_type = CATALOGUE.get(job.type)
    return {
        "job_id": job.job_id,
        "assignment_id": job.assignment_id,
        "type": job.type,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "input_payload": job.input_payload,
        "lease_expires_at": job.lease_expires_at,
        "timeout_s": job_type.timeout_s if job_type else 0.0,
        "input_files": job.input_files,
    }


def stop_worker(conn: Connection, worker_id: int, user_id: int) -> None:
    """Mark a worker stopped (it is exiting)."""
    updated = conn.execute(
        text("UPDATE workers SET stopped_at = coalesce(stopped_at, now()) WHERE id = :w AND user_id = :u"),
        {"w": worker_id, "u": user_id},
    ).rowcount
    if not updated:
        raise NotFound(f"worker {worker_id} not found")
