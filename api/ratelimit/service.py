"""Counting requests in fixed windows, in PostgreSQL.

Why PostgreSQL and not memory: a limit is per caller, but a caller's requests are spread over
every gunicorn worker process and, in production, every API replica behind the load balancer.
Counters in process memory would each see a fraction of the traffic, so the effective limit
would be the configured one times processes times replicas (and would change when the
deployment scales). PostgreSQL is already the state every process shares, so one row per key
and window gives one count for the whole deployment with no new moving part (no Redis).

The table is UNLOGGED: no WAL is written for it, so counting costs little more than an
in-memory upsert, and after a crash PostgreSQL empties it, which is harmless (a window's
count starts again from zero).

Each count is one statement, ``INSERT … ON CONFLICT (key, window_start) DO UPDATE SET hits =
hits + 1 RETURNING hits``, on an autocommit connection of its own: never inside the request's
transaction, so a request that rolls back still counts, and the counter row's lock is held for
the statement only. Windows are fixed (aligned to the epoch on the *database* clock, so every
replica agrees where a window starts); old windows are deleted by the retention pruner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, TextClause, text

WINDOW_S = 60
#: Counter keys are capped at the column's width (emails can be long).
MAX_KEY_LENGTH = 400
#: Windows older than this are deleted by the pruner (several times the longest window).
COUNTER_RETENTION_S = 300


@dataclass(frozen=True)
class Limit:
    """At most ``limit`` hits of ``key`` per ``window_s`` seconds."""

    key: str
    limit: int
    window_s: int = WINDOW_S


@dataclass(frozen=True)
class Count:
    """Where one key stands after this hit."""

    key: str
    limit: int
    hits: int
    #: Epoch seconds at which the window ends (the ``X-RateLimit-Reset`` header).
    reset_at: int
    #: Seconds until then, at least 1 (the ``Retry-After`` header).
    retry_after_s: int

    @property
    def exceeded(self) -> bool:
        return self.hits > self.limit

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.hits)


# One statement for any number of keys. The window start is computed by the database, so
# replicas with skewed clocks still share a window. Rows are inserted in key order, so two
# requests counting the same keys lock them in the same order and cannot deadlock.
_COUNT = text("""
    INSERT INTO rate_limit_counters AS c (key, window_start, hits)
    SELECT k.key, to_timestamp(floor(extract(epoch FROM now()) / k.window_s) * k.window_s), 1
    FROM unnest(CAST(:keys AS text[]), CAST(:windows AS integer[])) AS k(key, window_s)
    ORDER BY k.key
    ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + 1
    RETURNING c.key, c.hits, extract(epoch FROM c.window_start)::float8 AS started,
              extract(epoch FROM now())::float8 AS now
""")

# Where keys stand in their current window, without counting a hit.
_PEEK = text("""
    SELECT k.key, coalesce(c.hits, 0) AS hits, extract(epoch FROM w.start)::float8 AS started,
           extract(epoch FROM now())::float8 AS now
    FROM unnest(CAST(:keys AS text[]), CAST(:windows AS integer[])) AS k(key, window_s)
    CROSS JOIN LATERAL (SELECT to_timestamp(floor(extract(epoch FROM now()) / k.window_s) * k.window_s)) AS w(start)
    LEFT JOIN rate_limit_counters c ON c.key = k.key AND c.window_start = w.start
""")

_PRUNE = text("DELETE FROM rate_limit_counters WHERE window_start < now() - make_interval(secs => :age_s)")


def count_hits(engine: Engine, limits: Sequence[Limit]) -> list[Count]:
    """Count one hit against each limit (distinct keys) and say where each stands.

    Raises SQLAlchemy's errors when the database cannot be reached; the caller decides to
    fail open.
    """
    return _stand(engine, _COUNT, limits, pending_hits=0)


def peek_hits(engine: Engine, limits: Sequence[Limit]) -> list[Count]:
    """Where each key would stand after one more hit, without counting it (a limit that counts
    only some outcomes, such as failed logins, checks with this first and counts afterwards).

    Raises SQLAlchemy's errors when the database cannot be reached.
    """
    return _stand(engine, _PEEK, limits, pending_hits=1)


def _stand(engine: Engine, statement: TextClause, limits: Sequence[Limit], pending_hits: int) -> list[Count]:
    """Run ``statement`` (counting or only reading) for each key; ``pending_hits`` are added to what it reads."""
    if not limits:
        return []
    by_key = {limit.key[:MAX_KEY_LENGTH]: limit for limit in limits}
    with engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        rows = conn.execute(statement, {"keys": list(by_key), "windows": [lim.window_s for lim in by_key.values()]})
        counts = {row.key: _count(by_key[row.key], row.key, int(row.hits) + pending_hits, row.started, row.now)
                  for row in rows}
    return [counts[key] for key in by_key]


def _count(limit: Limit, key: str, hits: int, started: float, now: float) -> Count:
    reset_at = started + limit.window_s
    return Count(key=key, limit=limit.limit, hits=hits, reset_at=math.ceil(reset_at),
                 retry_after_s=max(1, math.ceil(reset_at - now)))


def prune_counters(engine: Engine, age_s: float = COUNTER_RETENTION_S) -> int:
    """Delete windows that ended long ago; how many rows went."""
    with engine.begin() as conn:
        return conn.execute(_PRUNE, {"age_s": age_s}).rowcount
