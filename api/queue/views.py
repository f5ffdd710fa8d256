"""The queue's read model: per-type depths and workers by state, right now.

Read by ``GET /api/admin/queues`` and ``/api/admin/workers``, by the manager's view of the
fleet and, at every scrape, by the ``/metrics`` collector (api/metrics/collector.py). Each read
is a few grouped statements (``sql/views.sql``) over rows that partial indexes pick out
(pending jobs, live leases, recently finished jobs, live workers), so its cost follows the
queue's depth rather than the history kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from api.queue.sql import Q

#: A worker's state as the admin views show it (fragment ``state`` of sql/views.sql).
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


def queue_stats(conn: Connection, types: list[str]) -> list[TypeStats]:
    """Per job type (every one of ``types``, even with no jobs, and any other type with rows)."""
    rows = conn.execute(Q.queue_stats, {"types": types}).mappings().all()
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


def worker_counts(conn: Connection, lost_after_s: float) -> dict[str, int]:
    """How many registered, not stopped workers are live and how many are lost."""
    counts = {"live": 0, "lost": 0}
    for state, n in conn.execute(Q.worker_counts, {"lost_after_s": lost_after_s}).all():
        counts[state] = n
    return counts


def list_workers(conn: Connection, page: int, limit: int, state: str | None,
                 lost_after_s: float) -> tuple[list[dict[str, Any]], int]:
    """One page of workers, newest first, with the number of jobs each holds; and the total."""
    params = {"state": state, "lost_after_s": lost_after_s}
    rows = conn.execute(Q.list_workers, params | {"limit": limit, "offset": (page - 1) * limit}).mappings().all()
    if rows:
        total = int(rows[0]["total"])
    else:
        # Past the last page the window count is not there to read.
        total = int(conn.execute(Q.count_workers, params).scalar_one())
    return [{k: v for k, v in row.items() if k != "total"} for row in rows], total
