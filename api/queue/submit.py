"""Enqueue and cancel (statements in sql/jobs.sql).

Duplicate active submissions of one user are stopped by the unique partial index
``uq_jobs_active_input`` (user_id, type, input_hash) WHERE status is active: the insert is
``ON CONFLICT DO NOTHING`` and the loser joins the winner's job. No check-then-insert.
Callbacks belong to the submission: the creator's is on the job row, a later submission that
joins the job or reuses its result has a ``job_requests`` row of its own. The ``jobs_changed``
trigger writes the outbox when a job ends, and this module writes it for submissions that
reuse a result. A plain submission writes one row: its job.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from api.errors import Conflict, NotFound
from api.queue import NOTIFY_CHANNEL
from api.queue.sql import Q
from jobtypes import JobStatus

#: A concurrent finish can free a dedup slot between our insert and our lookup; retry this often.
_MAX_DEDUP_ROUNDS = 5


def input_hash(job_type: str, payload: dict[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a validated payload (sorted keys, no spaces)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(f"{job_type}\n{canonical}".encode()).hexdigest()


@dataclass(frozen=True)
class NewJob:
    """One validated submission."""

    type: str
    input_payload: dict[str, Any]
    max_attempts: int
    priority: int = 5
    run_after: dt.datetime | None = None
    use_cache: bool = True
    callback_url: str | None = None
    callback_token: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.type, input_hash(self.type, self.input_payload))


@dataclass(frozen=True)
class Submitted:
    """What became of one submission: its job and how it got there."""

    job_id: int
    request_id: int
    #: "created", "joined" (an identical job was already active) or "cached".
    origin: str


def notify_arrivals(conn: Connection, counts: Mapping[str, int]) -> None:
    """Tell the API processes, at commit, how many jobs of each type became claimable (or
    were scheduled: a waiter woken for a job not yet due learns when it is and waits for it)."""
    types = sorted(t for t, n in counts.items() if n > 0)
    if types:
        conn.execute(Q.notify_arrivals, {"channel": NOTIFY_CHANNEL, "types": types,
                                        "counts": [counts[t] for t in types]})


def notify_workers(conn: Connection, worker_ids: Iterable[int]) -> None:
    """Wake these workers' parked claims at commit (they were drained: they must hear it now)."""
    ids = sorted(set(worker_ids))
    if ids:
        conn.execute(Q.notify_workers, {"channel": NOTIFY_CHANNEL, "ids": ids})


def enqueue_jobs(conn: Connection, user_id: int, jobs: list[NewJob]) -> list[Submitted]:
    """Submit jobs in one transaction; return one :class:`Submitted` per input, in order.

    Wakes long-polling claimers with one NOTIFY per job type, carrying how many of its jobs
    are due, so that many parked claims wake and no more; for a type that got only scheduled
    jobs, one (it learns when the first is due and waits for it).
    """
    keys = [job.key for job in jobs]
    resolved: dict[tuple[str, str], tuple[int, str]] = {}
    created: dict[tuple[str, str], int] = {}  # key → the creating submission's request id

    cacheable = [key for job, key in zip(jobs, keys, strict=True) if job.use_cache]
    if cacheable:
        rows = conn.execute(Q.find_cached, _key_params(cacheable) | {"user_id": user_id}).all()
        resolved.update({(t, h): (job_id, "cached") for t, h, job_id in rows})

    due: Counter[str] = Counter()
    for _ in range(_MAX_DEDUP_ROUNDS):
        todo = _first_per_key(jobs, keys, resolved)
        if not todo:
            break
        inserted = conn.execute(Q.insert_jobs, _insert_params(user_id, todo)).all()
        for t, h, job_id, request_id, is_due in inserted:
            resolved[(t, h)] = (job_id, "created")
            created[(t, h)] = request_id
            due[t] += 1 if is_due else 0
        missing = [job.key for job in todo if job.key not in resolved]
        if missing:
            rows = conn.execute(Q.find_active, _key_params(missing) | {"user_id": user_id}).all()
            resolved.update({(t, h): (job_id, "joined") for t, h, job_id in rows})
    if _first_per_key(jobs, keys, resolved):
        raise Conflict("identical jobs kept finishing while this one was submitted; retry")

    job_ids = [resolved[key][0] for key in keys]
    origins: list[str] = []
    seen: set[tuple[str, str]] = set()
    for key in keys:
        origin = resolved[key][1]
        # A repeat of a key inside the same batch joins the job its first copy made.
        origins.append("joined" if origin == "created" and key in seen else origin)
        seen.add(key)
    # A creating submission's id is its job's request_id; the others get a job_requests row each.
    request_ids = [created.get(key, 0) for key in keys]
    others = [i for i, origin in enumerate(origins) if origin != "created"]
    if others:
        inserted_ids = conn.execute(Q.insert_requests, {
            "user_id": user_id, "job_ids": [job_ids[i] for i in others], "origins": [origins[i] for i in others],
            "callback_urls": [jobs[i].callback_url for i in others],
            "callback_tokens": [jobs[i].callback_token for i in others],
        }).scalars().all()
        for i, request_id in zip(others, inserted_ids, strict=True):
            request_ids[i] = request_id
        if any(jobs[i].callback_url and origins[i] == "cached" for i in others):
            conn.execute(Q.callbacks_for_finished, {"request_ids": list(inserted_ids)})
    notify_arrivals(conn, {t: max(n, 1) for t, n in due.items()})
    return [Submitted(j, r, o) for j, r, o in zip(job_ids, request_ids, origins, strict=True)]


def _first_per_key(jobs: list[NewJob], keys: list[tuple[str, str]],
                   resolved: dict[tuple[str, str], tuple[int, str]]) -> list[NewJob]:
    todo: dict[tuple[str, str], NewJob] = {}
    for job, key in zip(jobs, keys, strict=True):
        if key not in resolved and key not in todo:
            todo[key] = job
    return list(todo.values())


def _key_params(keys: list[tuple[str, str]]) -> dict[str, list[str]]:
    return {"types": [t for t, _ in keys], "hashes": [h for _, h in keys]}


def _insert_params(user_id: int, jobs: list[NewJob]) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "types": [j.type for j in jobs],
        "payloads": [Jsonb(j.input_payload) for j in jobs],
        "hashes": [j.key[1] for j in jobs],
        "priorities": [j.priority for j in jobs],
        "run_afters": [j.run_after for j in jobs],
        "max_attempts": [j.max_attempts for j in jobs],
        "callback_urls": [j.callback_url for j in jobs],
        "callback_tokens": [j.callback_token for j in jobs],
    }


def cancel_job(conn: Connection, job_id: int) -> JobStatus:
    """Cancel a job: a pending one at once; a running one cooperatively.

    A running job stays IN_PROGRESS with ``cancel_requested`` until its worker
    acknowledges (told through the heartbeat answer) or its lease lapses; either way it
    ends CANCELLED. Cancelling a cancelled job is a no-op; any other finished job is a 409.
    """
    status = conn.execute(Q.cancel, {"job_id": job_id}).scalar_one_or_none()
    if status is not None:
        return JobStatus(status)
    current = conn.execute(Q.job_status, {"job_id": job_id}).scalar_one_or_none()
    if current is None:
        raise NotFound(f"job {job_id} not found")
    if current == JobStatus.CANCELLED:
        return JobStatus.CANCELLED
    raise Conflict(f"job {job_id} already finished as {current}", details={"status": current})


def retry_job(conn: Connection, job_id: int, attempts: int) -> None:
    """Queue a finished job that did not succeed again, with ``attempts`` more attempts.

    409 while it is active or SUCCEEDED (clone it instead), or when an identical job of the
    same user is active (the retried job would duplicate it).
    """
    try:
        with conn.begin_nested():
            job_type = conn.execute(Q.retry, {"job_id": job_id, "attempts": attempts}).scalar_one_or_none()
    except IntegrityError:
        raise Conflict(f"job {job_id} cannot run again: an identical job of yours is pending or running") from None
    if job_type is None:
        current = conn.execute(Q.job_status, {"job_id": job_id}).scalar_one_or_none()
        if current is None:
            raise NotFound(f"job {job_id} not found")
        raise Conflict(f"job {job_id} is {current}; only a FAILED, CANCELLED or TIMED_OUT job runs again",
                       details={"status": current})
    notify_arrivals(conn, {job_type: 1})
