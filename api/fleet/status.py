"""``GET /api/admin/status``: every pool with its overrides, latest decision, live workers and
queue, and the manager lease — in five statements, whatever the number of pools."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict
from typing import Any

from sqlalchemy import Connection, text

from api.fleet.lease import current_lease
from api.fleet.service import list_pools, queue_depths
from api.queue.workers import live_workers

#: Decisions shown per pool, newest first.
RECENT_DECISIONS = 20
#: Counts the status reads from the latest decision's inputs.
_FROM_INPUTS = ("running", "starting", "draining")

_RECENT_DECISIONS = text("""
    SELECT p.name AS pool, d.id, d.created_at, d.desired, d.previous, d.action, d.reason, d.inputs, d.observed
    FROM fleet_pools p
    CROSS JOIN LATERAL (
        SELECT * FROM fleet_decisions x WHERE x.pool_id = p.id ORDER BY x.id DESC LIMIT :recent
    ) d
    ORDER BY p.name, d.id DESC
""")

_POOL_WORKER_FIELDS = ("id", "name", "revision", "launch_id", "ecs_task_arn", "running_jobs", "draining",
                       "last_heartbeat_at")


def _count_or_none(value: Any) -> int | None:
    """A count from a decision's inputs (validated on the way in; older rows are not trusted)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _pool_status(pool: dict[str, Any], decisions: list[dict[str, Any]], workers: list[dict[str, Any]],
                 queues: dict[str, dict[str, int]]) -> dict[str, Any]:
    high = pool["max_override"] if pool["max_override"] is not None else pool["max_workers"]
    low = pool["min_override"] if pool["min_override"] is not None else pool["min_workers"]
    latest = decisions[0] if decisions else None
    inputs = latest["inputs"] if latest else {}
    queue = {key: sum(queues.get(t, {}).get(key, 0) for t in pool["job_types"])
             for key in ("pending", "scheduled", "in_progress")}
    return pool | {
        # A min above an overridden max (the manager raised its min since) yields to the max.
        "effective_min": min(low, high),
        "effective_max": high,
        "desired": latest["desired"] if latest else None,
        **{key: _count_or_none(inputs.get(key)) for key in _FROM_INPUTS},
        "observed": latest["observed"] if latest else None,
        "queue": queue,
        "workers": [{k: w[k] for k in _POOL_WORKER_FIELDS} for w in workers],
        "decisions": decisions,
    }


def fleet_status(conn: Connection, live_after_s: float, recent: int = RECENT_DECISIONS) -> dict[str, Any]:
    """The whole fleet as admins see it (see FleetStatusSchema)."""
    pools = list_pools(conn)
    decisions: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in conn.execute(_RECENT_DECISIONS, {"recent": recent}).mappings():
        decisions[row["pool"]].append({k: v for k, v in row.items() if k != "pool"})
    workers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for worker in live_workers(conn, live_after_s):
        if worker["pool"] is not None:
            workers[worker["pool"]].append(worker)
    queues = queue_depths(conn)
    lease = current_lease(conn)
    manager = ({"holder": None, "acquired_at": None, "expires_at": None, "active": False} if lease is None
               else asdict(lease))
    return {"manager": manager,
            "pools": [_pool_status(p, decisions[p["name"]], workers[p["name"]], queues) for p in pools]}

