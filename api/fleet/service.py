"""The SQL of fleet management: pools and their overrides, decisions (workers: api/queue/workers.py).

Every change is one guarded statement: a drain with ``only_idle`` checks for running jobs in
the UPDATE's own WHERE, a scale checks the bounds in its WHERE (and explains a refusal by
reading the row afterwards), a redeploy bumps the generation and drains the pool's workers in
one statement. The manager lease is in api/fleet/lease.py, the admin status view in
api/fleet/status.py.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb
from sqlalchemy import Connection, Engine, text

from api.errors import Conflict, NotFound, ValidationFailed
from api.queue.submit import notify_workers
from api.queue.views import queue_stats
from jobtypes import job_type_names

#: Decisions kept: at most this many per pool, and none older than this.
DECISIONS_KEPT_PER_POOL = 1000
DECISION_RETENTION_S = 86400.0
DECISION_PRUNE_BATCH = 5000
DECISION_PRUNE_MAX_BATCHES = 10

POOL_COLUMNS = ("name, job_types, backend, min_workers, max_workers, jobs_per_worker, details, pinned_count, "
                "min_override, max_override, redeploy_generation, redeploy_requested_at, reported_at")



def _pool(row: Any) -> dict[str, Any]:
    view = dict(row._mapping)
    view["job_types"] = list(view["job_types"])
    return view


# --- pools -----------------------------------------------------------------------------------

# One statement: pools not reported are removed (their decisions go with them), reported ones
# are upserted. Admins' overrides and the redeploy generation survive a re-report; overrides
# above a lowered max are brought down to it (a CASE, since least() would turn NULL into max).
_REPORT_POOLS = text(f"""
    WITH reported AS (
        SELECT * FROM jsonb_to_recordset(CAST(:pools AS jsonb))
            AS r(name text, job_types text[], backend text, min_workers bigint, max_workers bigint,
                 jobs_per_worker bigint, details jsonb)
    ), retired AS (
        DELETE FROM fleet_pools WHERE name NOT IN (SELECT name FROM reported)
    )
    INSERT INTO fleet_pools AS p (name, job_types, backend, min_workers, max_workers, jobs_per_worker, details)
    SELECT name, job_types, backend, min_workers, max_workers, jobs_per_worker, details FROM reported
    ON CONFLICT (name) DO UPDATE SET
        job_types = excluded.job_types, backend = excluded.backend, min_workers = excluded.min_workers,
        max_workers = excluded.max_workers, jobs_per_worker = excluded.jobs_per_worker,
        details = excluded.details, reported_at = now(),
        pinned_count = CASE WHEN p.pinned_count > excluded.max_workers THEN excluded.max_workers
                            ELSE p.pinned_count END,
        min_override = CASE WHEN p.min_override > excluded.max_workers THEN excluded.max_workers
                            ELSE p.min_override END,
        max_override = CASE WHEN p.max_override > excluded.max_workers THEN excluded.max_workers
                            ELSE p.max_override END
    RETURNING {POOL_COLUMNS}
""")

_LIST_POOLS = text(f"SELECT {POOL_COLUMNS} FROM fleet_pools ORDER BY name")
_FIND_POOL = text(f"SELECT {POOL_COLUMNS} FROM fleet_pools WHERE name = :pool")


def report_pools(conn: Connection, pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace the pool configuration with ``pools`` (validated); the pools with their overrides."""
    rows = conn.execute(_REPORT_POOLS, {"pools": Jsonb(pools)}).all()
    return sorted((_pool(r) for r in rows), key=lambda p: p["name"])


def list_pools(conn: Connection) -> list[dict[str, Any]]:
    """Every pool, by name."""
    return [_pool(r) for r in conn.execute(_LIST_POOLS)]


def find_pool(conn: Connection, name: str) -> dict[str, Any]:
    """One pool; 404 when no pool has that name."""
    row = conn.execute(_FIND_POOL, {"pool": name}).one_or_none()
    if row is None:
        raise NotFound(f"no pool named {name!r} (the manager reports its pools at start)", {"pool": name})
    return _pool(row)


# --- admin: scale and redeploy -------------------------------------------------------------------

# The value each column will have: the request's where it gives one (null included), else the row's.
_NEW_COUNT = "CASE WHEN :set_count THEN CAST(:count AS bigint) ELSE pinned_count END"
_NEW_MIN = "CASE WHEN :set_min THEN CAST(:min AS bigint) ELSE min_override END"
_NEW_MAX = "CASE WHEN :set_max THEN CAST(:max AS bigint) ELSE max_override END"

# The bounds are checked against the row being updated (under its lock), so a concurrent
# re-report that lowers max cannot slip an override past it.
_SCALE = text(f"""
    UPDATE fleet_pools SET pinned_count = {_NEW_COUNT}, min_override = {_NEW_MIN}, max_override = {_NEW_MAX}
    WHERE name = :pool
      AND coalesce({_NEW_COUNT}, 0) <= max_workers
      AND coalesce({_NEW_MIN}, 0) <= max_workers
      AND coalesce({_NEW_MAX}, 0) <= max_workers
      AND coalesce({_NEW_MIN}, min_workers) <= coalesce({_NEW_MAX}, max_workers)
    RETURNING {POOL_COLUMNS}
""")


def scale_problems(pool: dict[str, Any], changes: dict[str, int | None]) -> dict[str, list[str]]:
    """Why ``changes`` (count/min/max, None clears) do not fit ``pool``: messages by field."""
    ceiling = pool["max_workers"]
    problems = {field: [f"must be at most {ceiling} (the pool's configured max)"]
                for field in ("count", "min", "max")
                if (changes.get(field) or 0) > ceiling}
    if problems:
        return problems
    low = changes["min"] if "min" in changes else pool["min_override"]
    high = changes["max"] if "max" in changes else pool["max_override"]
    low = pool["min_workers"] if low is None else low
    high = ceiling if high is None else high
    if low > high:
        field = "min" if "min" in changes else "max"
        return {field: [f"min ({low}) must not exceed max ({high})"]}
    return {}


def scale_pool(conn: Connection, name: str, changes: dict[str, int | None]) -> dict[str, Any]:
    """Pin a count and/or override the bounds of pool ``name`` (keys absent stay, None clears)."""
    params: dict[str, Any] = {"pool": name}
    for field in ("count", "min", "max"):
        params |= {f"set_{field}": field in changes, field: changes.get(field)}
    row = conn.execute(_SCALE, params).one_or_none()
    if row is not None:
        return _pool(row)
    pool = find_pool(conn, name)
    problems = scale_problems(pool, changes)
    if not problems:
        # The guard refused, yet the row read now fits: it changed in between.
        raise Conflict(f"pool {name!r} changed while it was being scaled; retry")
    summary = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in problems.items())
    raise ValidationFailed(f"Validation failed: {summary}", {"location": "json", "fields": problems})


_REDEPLOY = text("""
    WITH pool AS (
        UPDATE fleet_pools SET redeploy_generation = redeploy_generation + 1, redeploy_requested_at = now()
        WHERE name = :pool
        RETURNING name, redeploy_generation
    ), drained AS (
        UPDATE workers w SET draining = true
        FROM pool
        WHERE w.stopped_at IS NULL AND w.attributes ->> 'pool' = pool.name
        RETURNING w.id
    )
    SELECT pool.name AS pool, pool.redeploy_generation,
           (SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM drained) AS drained
    FROM pool
""")


def redeploy_pool(conn: Connection, name: str) -> dict[str, Any]:
    """Bump the pool's redeploy generation and drain every one of its workers, busy ones too
    (they finish what they run, then exit); the manager starts their replacements."""
    row = conn.execute(_REDEPLOY, {"pool": name}).mappings().one_or_none()
    if row is None:
        raise NotFound(f"no pool named {name!r} (the manager reports its pools at start)", {"pool": name})
    notify_workers(conn, row["drained"])
    return {"pool": row["pool"], "redeploy_generation": row["redeploy_generation"], "drained": list(row["drained"])}


# --- queues and workers ------------------------------------------------------------------------

def queue_depths(conn: Connection) -> dict[str, dict[str, int]]:
    """Exact pending (due), scheduled and in-progress counts per job type, every catalogue type
    included (the admin queue view's grouped statement; no cap on the counts)."""
    return {s.type: {"pending": s.pending, "scheduled": s.scheduled, "in_progress": s.in_progress}
            for s in queue_stats(conn, job_type_names())}


# --- decisions -------------------------------------------------------------------------------

_RECORD_DECISIONS = text("""
    INSERT INTO fleet_decisions (pool_id, desired, previous, action, reason, inputs, observed)
    SELECT p.id, d.desired, d.previous, d.action, d.reason, d.inputs, d.observed
    FROM ROWS FROM (jsonb_to_recordset(CAST(:decisions AS jsonb))
                    AS (pool text, desired bigint, previous bigint, action text, reason text, inputs jsonb,
                        observed jsonb))
         WITH ORDINALITY AS d(pool, desired, previous, action, reason, inputs, observed, n)
    JOIN fleet_pools p ON p.name = d.pool
    ORDER BY d.n
    RETURNING pool_id
""")


def record_decisions(conn: Connection, decisions: list[dict[str, Any]]) -> int:
    """Store the manager's decisions (validated), in order; 404 naming any unknown pool (nothing is
    stored then: the caller's transaction rolls back)."""
    recorded = len(conn.execute(_RECORD_DECISIONS, {"decisions": Jsonb(decisions)}).all())
    if recorded < len(decisions):
        known = {p["name"] for p in list_pools(conn)}
        unknown = sorted({d["pool"] for d in decisions} - known)
        raise NotFound(f"no pool named {', '.join(map(repr, unknown))}; report the pools first (PUT /api/manager/pools)",
                       {"pools": unknown})
    return recorded


# Per pool, the id of the newest decision beyond the ones kept (through ix_fleet_decisions_pool_id_id);
# that one and everything older goes, as does anything past the age limit.
_PRUNE_DECISIONS = text("""
    WITH cutoff AS (
        SELECT p.id AS pool_id,
               (SELECT x.id FROM fleet_decisions x WHERE x.pool_id = p.id
                ORDER BY x.id DESC OFFSET :keep LIMIT 1) AS newest_dropped
        FROM fleet_pools p
    )
    DELETE FROM fleet_decisions WHERE id IN (
        SELECT d.id FROM fleet_decisions d JOIN cutoff c ON c.pool_id = d.pool_id
        WHERE d.id <= c.newest_dropped OR d.created_at < now() - make_interval(secs => :age_s)
        ORDER BY d.id
        LIMIT :limit)
""")


def prune_decisions(engine: Engine, keep_per_pool: int = DECISIONS_KEPT_PER_POOL,
                    age_s: float = DECISION_RETENTION_S, batch_size: int = DECISION_PRUNE_BATCH,
                    max_batches: int = DECISION_PRUNE_MAX_BATCHES) -> int:
    """Delete decisions beyond the newest ``keep_per_pool`` of each pool or older than ``age_s``,
    in bounded batches (one transaction each); how many went."""
    params = {"keep": keep_per_pool, "age_s": age_s, "limit": batch_size}
    total = 0
    for _ in range(max_batches):
        with engine.begin() as conn:
            deleted = conn.execute(_PRUNE_DECISIONS, params).rowcount
        total += deleted
        if deleted < batch_size:
            break
    return total
