"""The floor: a bare ``SELECT … FOR UPDATE SKIP LOCKED`` queue on a plain table, with psycopg.

What the cheapest correct PostgreSQL queue costs on this machine, for the ``peers`` scenario.
One table with a partial index on the pending ids; every statement its own transaction
(autocommit):

- enqueue: one ``INSERT`` (one row, or a whole batch through ``unnest``) and its ``NOTIFY``,
  in one statement;
- claim: one ``UPDATE … FROM (SELECT id … ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED)``
  setting ``status`` and ``started_at``;
- finish: one ``UPDATE`` of the claimed ids setting ``status`` and ``finished_at``;
- an idle worker waits on ``LISTEN`` (woken by the enqueue's ``NOTIFY``), re-polling after
  :data:`IDLE_WAIT_S` like skyfleet's long-poll fallback.

No leases, retries, owners, results, deduplication or authentication: what skyfleet does on
top of this is the difference the ratios show.

``python -m bench.bare --batch N [--drain]`` is one worker process (the database from the
``BENCH_PEER_DSN`` environment variable); with ``--drain`` it exits once a claim finds
nothing, otherwise it waits for work until SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

DSN_ENV = "BENCH_PEER_DSN"
CHANNEL = "bare_jobs"
IDLE_WAIT_S = 5.0

SCHEMA = """
    CREATE TABLE bare_jobs (
        id bigserial PRIMARY KEY,
        status text NOT NULL DEFAULT 'pending',
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        started_at timestamptz,
        finished_at timestamptz
    );
    CREATE INDEX bare_jobs_pending ON bare_jobs (id) WHERE status = 'pending'
"""

TRUNCATE = "TRUNCATE bare_jobs RESTART IDENTITY"

_ENQUEUE_ONE = """
    WITH j AS (INSERT INTO bare_jobs (payload) VALUES (%s) RETURNING id)
    SELECT pg_notify('bare_jobs', '') FROM j
"""

_ENQUEUE_MANY = """
    WITH j AS (INSERT INTO bare_jobs (payload) SELECT unnest(%s::jsonb[]) RETURNING id)
    SELECT pg_notify('bare_jobs', '') FROM (SELECT 1 FROM j LIMIT 1) one
"""

_CLAIM = """
    UPDATE bare_jobs j SET status = 'running', started_at = now()
    FROM (SELECT id FROM bare_jobs WHERE status = 'pending' ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) next
    WHERE j.id = next.id
    RETURNING j.id, j.payload
"""

_FINISH = "UPDATE bare_jobs SET status = 'done', finished_at = now() WHERE id = ANY(%s)"

#: Jobs finished and the span from the first claim to the last finish (PostgreSQL's clock).
SPAN_SQL = """
    SELECT count(*) FILTER (WHERE status = 'done'),
           extract(epoch FROM max(finished_at) - min(started_at))
    FROM bare_jobs
"""

#: Pickup latency of each job from ``id`` on: the claim's ``now()`` − the enqueue's ``now()``.
PICKUP_MS_SQL = """
    SELECT extract(epoch FROM started_at - created_at) * 1000 FROM bare_jobs
    WHERE id >= %s AND started_at IS NOT NULL ORDER BY id
"""

DONE_SQL = "SELECT count(*) FROM bare_jobs WHERE status = 'done'"
NEXT_ID_SQL = "SELECT coalesce(max(id), 0) + 1 FROM bare_jobs"


def enqueue_one(conn: psycopg.Connection[Any], payload: dict[str, Any]) -> None:
    """Insert one job and notify the idle workers, in one statement."""
    conn.execute(_ENQUEUE_ONE, (Jsonb(payload),))


def enqueue_many(conn: psycopg.Connection[Any], payloads: Sequence[dict[str, Any]]) -> None:
    """Insert a batch of jobs and notify once, in one statement."""
    conn.execute(_ENQUEUE_MANY, ([Jsonb(p) for p in payloads],))


def enqueue_parallel(dsn: str, payloads: list[dict[str, Any]], clients: int, batch_size: int = 0) -> float:
    """Enqueue ``payloads`` one statement each (``batch_size`` 0) or in batches, from ``clients``
    threads with a connection each; the wall seconds from the first statement to the last."""
    size = batch_size or 1
    chunks = iter([payloads[i:i + size] for i in range(0, len(payloads), size)])
    lock = threading.Lock()
    errors: list[BaseException] = []
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(clients)]

    def client(conn: psycopg.Connection[Any]) -> None:
        try:
            while not errors:
                with lock:
                    chunk = next(chunks, None)
                if chunk is None:
                    return
                if batch_size:
                    enqueue_many(conn, chunk)
                else:
                    enqueue_one(conn, chunk[0])
        except psycopg.Error as exc:  # raised again in the calling thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(c,), daemon=True) for c in conns]
    try:
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
    finally:
        for conn in conns:
            conn.close()
    if errors:
        raise errors[0]
    return wall


def enqueue_spaced(dsn: str, payloads: list[dict[str, Any]], gap_min_s: float, gap_max_s: float) -> None:
    """Enqueue one job at a time from one connection, with a random pause after each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for payload in payloads:
            enqueue_one(conn, payload)
            time.sleep(random.uniform(gap_min_s, gap_max_s))


def work(dsn: str, batch: int, drain: bool) -> int:
    """Claim up to ``batch`` jobs, run them (no-ops), mark them done; repeat. Jobs done.

    Without ``drain`` it never returns: SIGTERM's default action ends the process, which
    holds nothing worth finishing (it is stopped once the queue is empty).
    """
    done = 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {CHANNEL}")
        while True:
            rows = conn.execute(_CLAIM, (batch,)).fetchall()
            if not rows:
                if drain:
                    break
                # A NOTIFY that arrived since the claim started is already queued on the
                # connection, so a job enqueued meanwhile wakes us at once.
                for _ in conn.notifies(timeout=IDLE_WAIT_S, stop_after=1):
                    pass
                continue
            conn.execute(_FINISH, ([row[0] for row in rows],))
            done += len(rows)
    return done


def main(argv: Sequence[str] | None = None) -> int:
    """One worker process of the bare queue."""
    parser = argparse.ArgumentParser(prog="python -m bench.bare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="jobs per claim")
    parser.add_argument("--drain", action="store_true", help="exit once a claim finds nothing")
    args = parser.parse_args(argv)
    work(os.environ[DSN_ENV], args.batch, args.drain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
