"""pgqueuer (the ``bench`` extra) as a peer: its install step, its enqueue, and a worker process.

Everything goes through pgqueuer's own API over psycopg's async driver (``PsycopgDriver`` on an
autocommit ``AsyncConnection``, the driver skyfleet itself uses): ``Queries.install()`` creates
its tables, trigger and NOTIFY function; ``Queries.enqueue`` inserts one job, or a batch when
given lists; ``QueueManager.run`` dequeues (``UPDATE … FOR UPDATE SKIP LOCKED`` in batches of
``batch_size``, logging each pick), dispatches to the ``noop`` entrypoint and logs each outcome
through its buffered status log (which deletes the finished job). Every step writes a row to
``pgqueuer_log`` with its ``created`` = ``now()``, which is where the figures are read from.

``python -m bench.pgq --batch-size N [--drain]`` is one worker process (the database from the
``BENCH_PEER_DSN`` environment variable), ``QueueManager.run`` with its defaults otherwise;
``--drain`` is pgqueuer's drain mode (exit once the queue is empty), SIGTERM shuts it down.

pgqueuer is imported inside the functions, so the rest of the benchmark (and ``make test``,
which runs ruff and mypy over ``bench``) does not need the extra installed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Sequence
from typing import Any

import psycopg

from bench.bare import DSN_ENV
from bench.errors import BenchError

ENTRYPOINT = "noop"
TRUNCATE = "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY"

#: Jobs that succeeded and the span from the first pick to the last success (PostgreSQL's clock).
SPAN_SQL = """
    SELECT count(*) FILTER (WHERE status = 'successful'),
           extract(epoch FROM max(created) FILTER (WHERE status = 'successful')
                              - min(created) FILTER (WHERE status = 'picked'))
    FROM pgqueuer_log
"""

#: Pickup latency of each job from ``job_id`` on: its pick's ``now()`` − its enqueue's ``now()``.
PICKUP_MS_SQL = """
    SELECT extract(epoch FROM p.created - q.created) * 1000
    FROM pgqueuer_log q JOIN pgqueuer_log p ON p.job_id = q.job_id AND p.status = 'picked'
    WHERE q.status = 'queued' AND q.job_id >= %s
    ORDER BY q.job_id
"""

DONE_SQL = "SELECT count(*) FROM pgqueuer_log WHERE status = 'successful'"
NEXT_ID_SQL = "SELECT coalesce(max(job_id), 0) + 1 FROM pgqueuer_log"


def version() -> str:
    """The installed pgqueuer's version; BenchError when the ``bench`` extra is missing."""
    try:
        import pgqueuer
    except ImportError as exc:
        raise BenchError("pgqueuer is not installed: pip install -e '.[bench]' (make bench does)") from exc
    return str(pgqueuer.__version__)


async def _connect(dsn: str) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(dsn, autocommit=True)


async def _install(dsn: str) -> None:
    from pgqueuer import Queries

    async with await _connect(dsn) as conn:
        await Queries.from_psycopg_connection(conn).install()


def install(dsn: str) -> None:
    """pgqueuer's own install step (tables, enum, indexes, trigger, function) in the database."""
    asyncio.run(_install(dsn))


async def _enqueue(dsn: str, chunks: list[list[bytes | None]], clients: int, bulk: bool) -> float:
    """Enqueue every chunk from ``clients`` connections; the wall seconds from first to last."""
    from pgqueuer import Queries

    conns = [await _connect(dsn) for _ in range(clients)]
    todo = iter(chunks)

    async def client(conn: psycopg.AsyncConnection[Any]) -> None:
        queries = Queries.from_psycopg_connection(conn)
        for chunk in todo:  # one iterator shared by every client: each chunk is taken once
            if bulk:
                await queries.enqueue([ENTRYPOINT] * len(chunk), chunk, [0] * len(chunk))
            else:
                await queries.enqueue(ENTRYPOINT, chunk[0])

    try:
        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in conns))
        return time.perf_counter() - started
    finally:
        for conn in conns:
            await conn.close()


def _encoded(payloads: list[dict[str, Any]]) -> list[bytes | None]:
    return [json.dumps(p).encode() for p in payloads]


def enqueue_parallel(dsn: str, payloads: list[dict[str, Any]], clients: int, batch_size: int = 0) -> float:
    """Enqueue ``payloads`` one call each (``batch_size`` 0) or in bulk calls, from ``clients``
    connections; the wall seconds from the first call to the last answer."""
    encoded = _encoded(payloads)
    size = batch_size or 1
    chunks = [encoded[i:i + size] for i in range(0, len(encoded), size)]
    return asyncio.run(_enqueue(dsn, chunks, clients, bulk=bool(batch_size)))


async def _enqueue_spaced(dsn: str, payloads: list[bytes | None], gap_min_s: float, gap_max_s: float) -> None:
    from pgqueuer import Queries

    async with await _connect(dsn) as conn:
        queries = Queries.from_psycopg_connection(conn)
        for payload in payloads:
            await queries.enqueue(ENTRYPOINT, payload)
            await asyncio.sleep(random.uniform(gap_min_s, gap_max_s))


def enqueue_spaced(dsn: str, payloads: list[dict[str, Any]], gap_min_s: float, gap_max_s: float) -> None:
    """Enqueue one job at a time from one connection, with a random pause after each."""
    asyncio.run(_enqueue_spaced(dsn, _encoded(payloads), gap_min_s, gap_max_s))


async def _work(dsn: str, batch_size: int, drain: bool) -> None:
    from pgqueuer import Queries, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.types import QueueExecutionMode

    async with await _connect(dsn) as conn:
        qm = QueueManager(Queries.from_psycopg_connection(conn))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            """Does nothing (as skyfleet's ``noop``)."""

        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, qm.shutdown.set)
        mode = QueueExecutionMode.drain if drain else QueueExecutionMode.continuous
        await qm.run(batch_size=batch_size, mode=mode)


def main(argv: Sequence[str] | None = None) -> int:
    """One pgqueuer worker process."""
    parser = argparse.ArgumentParser(prog="python -m bench.pgq", description="A pgqueuer worker of no-op jobs.")
    parser.add_argument("--batch-size", type=int, default=10, help="QueueManager.run(batch_size=…)")
    parser.add_argument("--drain", action="store_true", help="exit once the queue is empty")
    args = parser.parse_args(argv)
    asyncio.run(_work(os.environ[DSN_ENV], args.batch_size, args.drain))
    return 0


if __name__ == "__main__":
    sys.exit(main())
