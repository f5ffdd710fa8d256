"""Workers' rows: registration, the check every worker request starts with, drain, lost.

A worker request's transaction begins with :func:`touch_worker`, which also decides how that
transaction commits (see its ``durable``). A claim locks its worker's row until it commits and
a drain locks the rows before it looks for running jobs, so a drain never misses a job a claim
took (``sql/workers.sql``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection

from api.errors import NotFound, WorkerGone
from api.queue.sql import Q
from api.queue.submit import notify_workers
from jobtypes import protocol

#: A heartbeat or a claim records the worker as seen when the last record is older than this:
#: well inside ``Settings.worker_lost_after_s``, and a busy fleet's requests do not each rewrite
#: its row.
SEEN_EVERY_S = 10.0


@dataclass(frozen=True)
class WorkerRow:
    id: int
    job_types: list[str]
    draining: bool
    #: When a lease of this worker last lapsed, and the database's time of the read.
    lapsed_at: dt.datetime | None
    read_at: dt.datetime


def register_worker(conn: Connection, user_id: int, body: protocol.Register) -> dict[str, Any]:
    row = conn.execute(Q.register_worker, {
        "name": body.name, "user_id": user_id, "hostname": body.hostname, "pid": body.pid,
        "ecs_task_arn": body.ecs_task_arn, "ecs_cluster_arn": body.ecs_cluster_arn, "job_types": body.job_types,
        "concurrency": body.concurrency, "attributes": None if body.attributes is None else Jsonb(body.attributes),
    }).mappings().one()
    return dict(row)


def touch_worker(conn: Connection, worker_id: int, user_id: int, seen: bool = False,
                 claiming: bool = False, durable: bool = True) -> WorkerRow:
    """The caller's worker; 404 unless it is this service account's, 409 if it was stopped.

    ``seen`` (a heartbeat, a claim's first pass: an idle worker sends only claims) records that
    the worker is alive (``last_heartbeat_at``) when the last record is older than
    :data:`SEEN_EVERY_S`. ``claiming`` locks the row for the rest of the transaction.
    ``durable=False`` commits the transaction asynchronously: only for what a crash may roll
    back without harm (claims and heartbeats, fenced by tokens that are never drawn twice),
    never for reports or anything a person submitted.
    """
    statement = (Q.worker_for_update if seen else Q.worker_for_share) if claiming else Q.worker
    row = conn.execute(statement, {"worker_id": worker_id, "user_id": user_id, "durable": durable}).one_or_none()
    if row is None:
        raise NotFound(f"worker {worker_id} not found")
    if row.stopped_at is not None:
        raise WorkerGone(f"worker {worker_id} was stopped or declared lost; register again")
    if seen and row.silent_s >= SEEN_EVERY_S:
        conn.execute(Q.worker_seen, {"worker_id": worker_id})
    return WorkerRow(row.id, list(row.job_types), row.draining, row.lapsed_at, row.read_at)


def stop_worker(conn: Connection, worker_id: int, user_id: int) -> None:
    """Mark a worker stopped (it is exiting)."""
    if not conn.execute(Q.stop_worker, {"worker_id": worker_id, "user_id": user_id}).rowcount:
        raise NotFound(f"worker {worker_id} not found")


def live_workers(conn: Connection, live_after_s: float) -> list[dict[str, Any]]:
    """Workers not stopped and heard from (a heartbeat or a claim) within ``live_after_s``, with
    their running job count (``Settings.worker_lost_after_s``)."""
    rows = conn.execute(Q.live_workers, {"live_after_s": live_after_s}).mappings().all()
    return [dict(r) | {"job_types": list(r["job_types"])} for r in rows]


def drain_workers(conn: Connection, worker_ids: list[int], only_idle: bool) -> list[int]:
    """Tell these workers to drain (with ``only_idle``, only those running no job); the drained ids.

    The rows are locked first, waiting for claims in flight (they lock their worker's row); the
    UPDATE is a new statement, so under READ COMMITTED it sees the jobs those claims took and
    leaves their workers alone.
    """
    ids = sorted(set(worker_ids))
    conn.execute(Q.lock_workers, {"ids": ids})
    drained = sorted(int(i) for i in conn.execute(Q.drain, {"ids": ids, "only_idle": only_idle}).scalars().all())
    notify_workers(conn, drained)  # their parked claims answer "drain" now, not when their wait ends
    return drained


def mark_lost_workers(conn: Connection, after_s: float) -> int:
    """Stop the workers silent for ``after_s``: they must register again to claim; how many."""
    return int(conn.execute(Q.mark_lost, {"after_s": after_s}).rowcount)
