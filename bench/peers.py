"""Scenario ``peers``: pgqueuer and a bare SKIP LOCKED loop, measured like skyfleet on the same server.

Both peers run in their own database (``bench_peers``, dropped and created anew each time)
on the embedded PostgreSQL the benchmark already runs, so the server, its settings and the
machine are the ones skyfleet's figures were taken on; what differs is the queue. The peers:
``bench/bare.py`` (the floor: one plain table, one statement per step, no leases or results)
and pgqueuer (``bench/pgq.py``, installed by its own ``Queries.install()``, driven through
its own API). Measured the way the ``enqueue``, ``throughput`` and ``latency`` scenarios
measure skyfleet, with the same sizes:

- enqueue: ``--enqueue-jobs`` jobs one statement or ``enqueue()`` call each from
  ``--enqueue-clients`` connections, and ``--enqueue-batch-jobs`` in batches of
  ``--batch-size`` from ``--batch-clients`` connections; jobs/s on the client's clock, from
  the first call to the last answer (connections opened before, after a small warm-up);
- end to end: ``--single-jobs`` jobs taken one at a time, and ``--batched-jobs`` jobs in
  batches (bare ``--bare-batch``, pgqueuer ``--pgqueuer-batch``), by ``--peer-workers`` worker
  processes started once the jobs are queued and exiting when the queue is empty; jobs/s =
  jobs / (last finish − first claim), both PostgreSQL ``now()`` read from the table (bare) or
  from ``pgqueuer_log`` (pgqueuer: its ``picked`` and ``successful`` rows). pgqueuer one at a
  time is ``QueueManager.run(batch_size=1)`` with its other defaults (dispatch concurrency
  unlimited, status log buffered); batched, ``batch_size=--pgqueuer-batch``. CPU per role is
  printed with it (the worker processes' from their rusage once they have exited);
- pickup latency: ``--peer-workers`` idle workers (bare: claim 1, woken by LISTEN/NOTIFY,
  polling every 5 s otherwise; pgqueuer: ``run()`` defaults), ``--latency-jobs`` jobs enqueued
  one at a time with a random ``--latency-gap-min-ms``..``max-ms`` pause; latency = claim
  ``now()`` − enqueue ``now()`` of each job (p50/p95/p99).

Each figure carries ``compare`` (what skyfleet figure it stands against); when ``enqueue``,
``throughput`` and ``latency`` ran in the same invocation, ``bench/ratios.py`` prints and
records skyfleet / peer for each.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from api.database import libpq_url
from bench import bare, pgq
from bench.children import Children
from bench.clients import RUN_ID
from bench.cpu import cpu_note
from bench.cputree import cpu_mark, cpu_since
from bench.errors import BenchError
from bench.figures import ScenarioResult, figure, percentile, say
from bench.fleet import Fleet
from bench.options import Options
from bench.waiting import wait_for

PEER_DB = "bench_peers"
FILL_BATCH = 1000
WARMUP_JOBS = 5


@dataclass(frozen=True)
class Peer:
    """One peer queue: its worker module, its SQL for the figures and its enqueue functions."""

    name: str
    module: str
    batch_flag: str
    truncate: str
    span_sql: str
    pickup_sql: str
    done_sql: str
    next_id_sql: str
    enqueue: Callable[[str, list[dict[str, Any]], int, int], float]
    enqueue_spaced: Callable[[str, list[dict[str, Any]], float, float], None]


BARE = Peer("bare", "bench.bare", "--batch", bare.TRUNCATE, bare.SPAN_SQL, bare.PICKUP_MS_SQL, bare.DONE_SQL,
            bare.NEXT_ID_SQL, bare.enqueue_parallel, bare.enqueue_spaced)
PGQUEUER = Peer("pgqueuer", "bench.pgq", "--batch-size", pgq.TRUNCATE, pgq.SPAN_SQL, pgq.PICKUP_MS_SQL,
                pgq.DONE_SQL, pgq.NEXT_ID_SQL, pgq.enqueue_parallel, pgq.enqueue_spaced)


def bench_peers(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Enqueue, end-to-end and pickup figures of the bare loop and of pgqueuer."""
    version = pgq.version()
    dsn = fresh_database(fleet)
    result = ScenarioResult(data={"pgqueuer_version": version, "database": PEER_DB})
    result.notes.append(f"pgqueuer {version} (psycopg async driver); database {PEER_DB} on the same server")
    try:
        with psycopg.connect(dsn, autocommit=True) as db, Children(fleet.log_dir) as children:
            db.execute(bare.SCHEMA)
            pgq.install(dsn)
            for peer in (BARE, PGQUEUER):
                enqueue_figures(db, dsn, peer, opts, result)
            runs = ((BARE, 1, opts.single_jobs, "e2e_one"), (BARE, opts.bare_batch, opts.batched_jobs, "e2e_batched"),
                    (PGQUEUER, 1, opts.single_jobs, "e2e_one"),
                    (PGQUEUER, opts.pgqueuer_batch, opts.batched_jobs, "e2e_batched"))
            for peer, batch, jobs, compare in runs:
                drain_run(fleet, db, children, dsn, peer, batch, jobs, compare, opts, result)
            pickup_run(db, children, dsn, BARE, ["--batch", "1"], opts, result)
            pickup_run(db, children, dsn, PGQUEUER, [], opts, result)
    finally:
        drop_database(fleet)
    return result


def fresh_database(fleet: Fleet) -> str:
    """Drop and create PEER_DB on the benchmark's server; its connection string."""
    url = libpq_url(fleet.database_url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PEER_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PEER_DB)))
    return make_conninfo(url, dbname=PEER_DB)


def drop_database(fleet: Fleet) -> None:
    """Give the disk back."""
    with psycopg.connect(libpq_url(fleet.database_url), autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PEER_DB)))


def payloads(prefix: str, count: int) -> list[dict[str, Any]]:
    """``count`` payloads like skyfleet's noop inputs (a distinct tag each)."""
    return [{"tag": f"{RUN_ID}-{prefix}-{i}"} for i in range(count)]


def enqueue_figures(db: psycopg.Connection[Any], dsn: str, peer: Peer, opts: Options,
                    result: ScenarioResult) -> None:
    """Jobs/s enqueued one at a time and in batches, after a small untimed warm-up of each."""
    peer.enqueue(dsn, payloads("warm", 10 * opts.enqueue_clients), opts.enqueue_clients, 0)
    peer.enqueue(dsn, payloads("warm-batch", 2 * opts.batch_size), opts.batch_clients, opts.batch_size)
    db.execute(peer.truncate)
    say(f"  {peer.name}: enqueue {opts.enqueue_jobs:,} single from {opts.enqueue_clients} connections, "
        f"{opts.enqueue_batch_jobs:,} in batches of {opts.batch_size} from {opts.batch_clients} …")
    wall = peer.enqueue(dsn, payloads("single", opts.enqueue_jobs), opts.enqueue_clients, 0)
    result.figures.append(figure("peers", f"{peer.name} enqueue, single ({opts.enqueue_clients} clients)",
                                 opts.enqueue_jobs / wall, "jobs/s", compare="enqueue_single", peer=peer.name,
                                 jobs=opts.enqueue_jobs, seconds=wall))
    db.execute(peer.truncate)
    wall = peer.enqueue(dsn, payloads("batch", opts.enqueue_batch_jobs), opts.batch_clients, opts.batch_size)
    result.figures.append(figure("peers", f"{peer.name} enqueue, batches of {opts.batch_size} "
                                          f"({opts.batch_clients} clients)",
                                 opts.enqueue_batch_jobs / wall, "jobs/s", compare="enqueue_bulk",
                                 peer=peer.name, jobs=opts.enqueue_batch_jobs, seconds=wall))
    db.execute(peer.truncate)


def drain_run(fleet: Fleet, db: psycopg.Connection[Any], children: Children, dsn: str, peer: Peer, batch: int,
              jobs: int, compare: str, opts: Options, result: ScenarioResult) -> None:
    """Queue ``jobs``, start the workers in drain mode, wait for them to exit; jobs/s from the database."""
    label = f"{peer.name} end to end, {'one at a time' if batch == 1 else f'batch {batch}'}"
    db.execute(peer.truncate)
    peer.enqueue(dsn, payloads(f"e2e{batch}", jobs), 1, FILL_BATCH)
    say(f"  {label}: {jobs:,} jobs, {opts.peer_workers} worker processes …")
    roles = fleet.cpu_roles()
    mark = cpu_mark(roles)
    procs = [children.spawn([peer.module, peer.batch_flag, str(batch), "--drain"], f"peer-{peer.name}-{i}.log",
                            {bare.DSN_ENV: dsn}) for i in range(opts.peer_workers)]
    children.wait_exited(procs, 120.0 + jobs / 50, label)
    cpu = cpu_since(mark, roles, exited_children="workers")  # the workers have exited by now
    done, span_s = db.execute(peer.span_sql).fetchone() or (0, None)
    done, span_s = int(done), float(span_s or 0.0)
    if done != jobs or span_s <= 0:
        raise BenchError(f"{label}: {done:,} of {jobs:,} jobs done")
    result.figures.append(figure("peers", label, done / span_s, "jobs/s", compare=compare, peer=peer.name,
                                 batch=batch, jobs=done, span_s=span_s, workers=opts.peer_workers, cpu_s=cpu))
    result.notes.append(f"{label}: {done:,} jobs in {span_s:.2f} s (first claim → last finish)")
    result.notes.append(cpu_note(label, cpu))


def pickup_run(db: psycopg.Connection[Any], children: Children, dsn: str, peer: Peer, args: list[str],
               opts: Options, result: ScenarioResult) -> None:
    """Pickup latency with idle workers, jobs enqueued one at a time."""
    db.execute(peer.truncate)
    procs = [children.spawn([peer.module, *args], f"peer-{peer.name}-idle-{i}.log", {bare.DSN_ENV: dsn})
             for i in range(opts.peer_workers)]
    try:
        gap_min_s, gap_max_s = opts.latency_gap_min_ms / 1000, opts.latency_gap_max_ms / 1000
        peer.enqueue_spaced(dsn, payloads("lat-warm", WARMUP_JOBS), gap_min_s, gap_max_s)
        _wait_done(db, peer, WARMUP_JOBS, procs)
        time.sleep(1.0)  # every worker has started and is waiting for work
        say(f"  {peer.name}: {opts.latency_jobs} jobs one at a time, {opts.peer_workers} idle workers …")
        first_id = int(_value(db, peer.next_id_sql))
        peer.enqueue_spaced(dsn, payloads("lat", opts.latency_jobs), gap_min_s, gap_max_s)
        _wait_done(db, peer, WARMUP_JOBS + opts.latency_jobs, procs)
    finally:
        children.stop(procs)
    ms = [float(r[0]) for r in db.execute(peer.pickup_sql, (first_id,)).fetchall()]
    if len(ms) != opts.latency_jobs:
        raise BenchError(f"{peer.name} pickup: {len(ms)} of {opts.latency_jobs} jobs picked up")
    for q, compare in ((50, "pickup_p50"), (95, None), (99, "pickup_p99")):
        result.figures.append(figure("peers", f"{peer.name} pickup p{q}", percentile(ms, q), "ms",
                                     compare=compare, peer=peer.name))
    result.notes.append(f"{peer.name} pickup: min {min(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms, "
                        f"max {max(ms):.2f} ms over {len(ms)} jobs")
    result.data[f"{peer.name}_pickup_ms"] = ms


def _wait_done(db: psycopg.Connection[Any], peer: Peer, expected: int,
               procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait until ``expected`` jobs are done (60 s at most); BenchError if every worker has exited."""
    def done() -> bool:
        if all(p.poll() is not None for p in procs):
            raise BenchError(f"every {peer.name} worker exited; see logs/peer-{peer.name}-idle-*.log")
        return bool(_value(db, peer.done_sql) >= expected)

    wait_for(done, 60.0, f"{expected} {peer.name} jobs to be picked up and done")


def _value(db: psycopg.Connection[Any], query: str) -> Any:
    """The first column of the first row of ``query``'s answer."""
    row = db.execute(query).fetchone()
    if row is None:
        raise BenchError(f"no answer to: {' '.join(query.split())[:80]}")
    return row[0]
