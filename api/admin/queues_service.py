"""What the queue and the fleet look like right now: per-type depths, workers, cache invalidation.

Read by ``GET /api/admin/queues`` and ``/api/admin/workers`` and, at every scrape, by the
``/metrics`` collector (api/metrics/collector.py). Each read is a few grouped statements over
rows that partial indexes pick out (pending jobs, live leases, recently finished jobs, live
workers), so its cost follows the queue's depth rather than the history kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

#: A worker's state as the admin views show it (see _STATE).
WORKER_STATES = ("live", "lost", "stopped")


@dataclass(frozen=True)
class TypeStats:
    """One job type's queue at one moment."""

    type: str
    #: PENDING and due (run_after <= now): claimable now.
    pending: int
    #: PENDING with run_after in the future (delayed submissions and retries in backoff).
    scheduled: int
    in_progress: int
    #: Seconds since the longest-waiting due job became due (0 when none is due).
    oldest_pending_age_s: float
    completed_last_minute: int
    #: FAILED and TIMED_OUT in the last minute.
    failed_last_minute: int


# Pending rows are counted through ix_jobs_claimable (its predicate is status = 'PENDING'),
# running ones through the partial index of live leases: neither touches finished history.
# Recently finished ones come from ix_jobs_finished_at. Types outside the catalogue that
# still have rows (a type since removed) are listed too, so nothing is hidden.
_QUEUE_STATS = text("""
    WITH pending AS (
        SELECT type,
               count(*) FILTER (WHERE run_after <= now()) AS pending,
               count(*) FILTER (WHERE run_after > now()) AS scheduled,
               min(run_after) FILTER (WHERE run_after <= now()) AS oldest_due
        FROM jobs WHERE status = 'PENDING'
        GROUP BY type
    ), running AS (
        SELECT j.type, count(*) AS in_progress
        FROM job_assignments a
        JOIN jobs j ON j.id = a.job_id AND j.attempt = a.attempt AND j.status = 'IN_PROGRESS'
        WHERE a.completed_at IS NULL
        GROUP BY j.type
    ), recent AS (
        SELECT type,
               count(*) FILTER (WHERE status = 'SUCCEEDED') AS completed,
               count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')) AS failed
        FROM jobs WHERE finished_at IS NOT NULL AND finished_at > now() - interval '1 minute'
        GROUP BY type
    ), types AS (
        SELECT type FROM unnest(CAST(:types AS text[])) AS t(type)
        UNION SELECT type FROM pending UNION SELECT type FROM running UNION SELECT type FROM recent
    )
    SELECT t.type,
           coalesce(p.pending, 0) AS pending,
           coalesce(p.scheduled, 0) AS scheduled,
           coalesce(r.in_progress, 0) AS in_progress,
           coalesce(greatest(extract(epoch FROM now() - p.oldest_due), 0), 0)::float8 AS oldest_pending_age_s,
           coalesce(f.completed, 0) AS completed_last_minute,
           coalesce(f.failed, 0) AS failed_last_minute
    FROM types t
    LEFT JOIN pending p ON p.type = t.type
    LEFT JOIN running r ON r.type = t.type
    LEFT JOIN recent f ON f.type = t.type
    ORDER BY t.type
""")


def queue_stats(conn: Connection, types: list[str]) -> list[TypeStats]:
    """Per job type (every one of ``types``, even with no jobs, and any other type with rows)."""
    rows = conn.execute(_QUEUE_STATS, {"types": types}).mappings().all()
    return [TypeStats(**row) for row in rows]


def totals(stats: list[TypeStats]) -> dict[str, Any]:
    """The per-type figures summed (the oldest age is the maximum)."""
    return {
        "pending": sum(s.pending for s in stats),
        "scheduled": sum(s.scheduled for s in stats),
        "in_progress": sum(s.in_progress for s in stats),
        "oldest_pending_age_s": max((s.oldest_pending_age_s for s in stats), default=0.0),
        "completed_last_minute": sum(s.completed_last_minute for s in stats),
        "failed_last_minute": sum(s.failed_last_minute for s in stats),
    }


# A worker is "lost" once it has been silent for a whole lease: by then every lease it held
# has lapsed and the rescuer has taken its jobs back. The rescuer later marks it stopped.
_STATE = """CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                 WHEN w.last_heartbeat_at < now() - make_interval(secs => :lost_after_s) THEN 'lost'
                 ELSE 'live' END"""

_WORKER_COUNTS = text(f"""
    SELECT {_STATE} AS state, count(*) FROM workers w WHERE w.stopped_at IS NULL GROUP BY 1
""")


def worker_counts(conn: Connection, lost_after_s: float) -> dict[str, int]:
    """How many registered, not stopped workers are live and how many are lost."""
    counts = {"live": 0, "lost": 0}
    for state, n in conn.execute(_WORKER_COUNTS, {"lost_after_s": lost_after_s}).all():
        counts[state] = n
    return counts


_WORKERS = f"""
    SELECT w.id, w.name, w.hostname, w.pid, w.job_types, w.concurrency, w.ecs_task_arn, w.ecs_cluster_arn,
           w.started_at, w.last_heartbeat_at, w.draining, w.stopped_at, {_STATE} AS state
    FROM workers w
"""

_LIST_WORKERS = text(f"""
    WITH listed AS ({_WORKERS})
    SELECT l.*, count(*) OVER () AS total,
           (SELECT count(*) FROM job_assignments a
            JOIN jobs j ON j.id = a.job_id AND j.attempt = a.attempt AND j.status = 'IN_PROGRESS'
            WHERE a.worker_id = l.id AND a.completed_at IS NULL) AS running_jobs
    FROM listed l
    WHERE CAST(:state AS text) IS NULL OR l.state = :state
    ORDER BY l.id DESC
    LIMIT :limit OFFSET :offset
""")

_COUNT_WORKERS = text(f"""
    WITH listed AS ({_WORKERS})
    SELECT count(*) FROM listed l WHERE CAST(:state AS text) IS NULL OR l.state = :state
""")


def list_workers(conn: Connection, page: int, limit: int, state: str | None,
                 lost_after_s: float) -> tuple[list[dict[str, Any]], int]:
    """One page of workers, newest first, with the number of jobs each holds; and the total."""
    params = {"state": state, "lost_after_s": lost_after_s}
    rows = conn.execute(_LIST_WORKERS, params | {"limit": limit, "offset": (page - 1) * limit}).mappings().all()
    if rows:
        total = int(rows[0]["total"])
    else:
        # Past the last page the window count is not there to read.
        total = int(conn.execute(_COUNT_WORKERS, params).scalar_one())
    return [{k: v for k, v in row.items() if k != "total"} for row in rows], total


_INVALIDATE = text("""
    UPDATE job_results r SET cache_valid = false
    FROM jobs j
    WHERE j.id = r.job_id AND j.type = :type AND r.cache_valid
""")


def invalidate_cache(conn: Connection, job_type: str) -> int:
    """Stop reusing every cached result of ``job_type``; returns how many results were valid."""
    return int(conn.execute(_INVALIDATE, {"type": job_type}).rowcount)
