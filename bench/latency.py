"""Scenario ``latency``: pickup latency with idle long-polling workers, via the API and via SQL."""

from __future__ import annotations

import random
import statistics
import time

from psycopg.types.json import Jsonb

from api.queue import NOTIFY_CHANNEL
from api.queue.submit import input_hash
from bench.clients import Api, Db, noop_jobs
from bench.errors import BenchError
from bench.figures import ScenarioResult, Target, figure, percentile, say
from bench.fleet import Fleet
from bench.options import Options
from bench.waiting import wait_drained

_PICKUP_MS = """
    SELECT extract(epoch FROM started_at - created_at) * 1000 FROM jobs
    WHERE id >= %s AND attempt = 1 ORDER BY id
"""

# What-if: a submission that is one short transaction (insert and NOTIFY), to tell the time
# spent inside the API's submit transaction from the time spent waking the claim.
_SQL_SUBMIT = """
    WITH ins AS (
        INSERT INTO jobs (type, input_payload, input_hash, max_attempts, user_id)
        VALUES ('noop', %s, %s, 3, %s) RETURNING id
    )
    SELECT pg_notify(%s, 'noop') FROM ins
"""


def bench_latency(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Pickup latency (claim start − submit start) with idle long-polling workers."""
    fleet.reset()
    procs = fleet.start_workers(opts.workers, "noop", 4, 4)
    api = fleet.admin_api()
    db = fleet.sql()
    try:
        time.sleep(0.5)  # every worker has parked its long-poll claim
        submit_spaced(api, "warm", 5, opts)
        wait_drained(db, procs, "latency warm-up")
        say(f"  {opts.latency_jobs} jobs, one at a time, "
            f"{opts.latency_gap_min_ms}–{opts.latency_gap_max_ms} ms apart, {opts.workers} idle workers …")
        first_id = next_job_id(db)
        submit_ms = submit_spaced(api, "lat", opts.latency_jobs, opts)
        wait_drained(db, procs, "latency")
        ms = pickup_ms(db, first_id, opts.latency_jobs)
        first_sql_id = next_job_id(db)
        submit_spaced_sql(fleet, "lat-sql", opts.latency_jobs, opts)
        wait_drained(db, procs, "latency (SQL submissions)")
        sql_ms = pickup_ms(db, first_sql_id, opts.latency_jobs)
    finally:
        api.close()
        fleet.stop_workers(procs)
    result = ScenarioResult(data={"latencies_ms": ms, "sql_submit_latencies_ms": sql_ms})
    result.figures += [
        figure("latency", "pickup p50", percentile(ms, 50), "ms", Target("<=", 5)),
        figure("latency", "pickup p95", percentile(ms, 95), "ms"),
        figure("latency", "pickup p99", percentile(ms, 99), "ms", Target("<=", 20)),
    ]
    result.notes.append(f"min {min(ms):.2f} ms, mean {statistics.fmean(ms):.2f} ms, max {max(ms):.2f} ms "
                        f"over {len(ms)} jobs; the submit request took p50 "
                        f"{percentile(submit_ms, 50):.1f} ms on the client")
    result.notes.append("what-if, submitted by SQL (one INSERT + NOTIFY statement, no API): pickup "
                        f"p50 {percentile(sql_ms, 50):.2f} ms, p95 {percentile(sql_ms, 95):.2f} ms, "
                        f"p99 {percentile(sql_ms, 99):.2f} ms")
    return result


def next_job_id(db: Db) -> int:
    """The id the next job will get (ids only grow between resets)."""
    return int(db.value("SELECT coalesce(max(id), 0) + 1 FROM jobs"))


def pickup_ms(db: Db, first_id: int, expected: int) -> list[float]:
    """started_at − created_at in ms of the first attempts of the jobs from ``first_id`` on."""
    ms = [float(r[0]) for r in db.rows(_PICKUP_MS, (first_id,))]
    if len(ms) != expected:
        raise BenchError(f"expected {expected} first attempts, found {len(ms)}")
    return ms


def submit_spaced(api: Api, prefix: str, count: int, opts: Options) -> list[float]:
    """Submit ``count`` noop jobs one request at a time with a random pause after each; ms per request."""
    request_ms = []
    for body in noop_jobs(prefix, count):
        started = time.perf_counter()
        api.post("/api/jobs", body)
        request_ms.append((time.perf_counter() - started) * 1000)
        time.sleep(random.uniform(opts.latency_gap_min_ms, opts.latency_gap_max_ms) / 1000)
    return request_ms


def submit_spaced_sql(fleet: Fleet, prefix: str, count: int, opts: Options) -> None:
    """Like :func:`submit_spaced`, but each job is one INSERT + NOTIFY statement on our own connection."""
    admin_id = fleet.admin_id()
    for body in noop_jobs(prefix, count):
        payload = body["input_payload"]
        params = (Jsonb(payload), input_hash("noop", payload), admin_id, NOTIFY_CHANNEL)
        fleet.sql().execute(_SQL_SUBMIT, params)
        time.sleep(random.uniform(opts.latency_gap_min_ms, opts.latency_gap_max_ms) / 1000)
