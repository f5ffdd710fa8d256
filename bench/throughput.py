"""Scenario ``throughput``: end-to-end noop jobs/s, with claim batch 1 and batched."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from bench.clients import noop_jobs, submit_batches
from bench.cpu import cpu_note, cpu_sample, cpu_used
from bench.figures import Figure, Target, figure, say
from bench.fleet import Fleet
from bench.options import Options
from bench.waiting import wait_drained

_THROUGHPUT_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE status = 'SUCCEEDED'),
           count(*) FILTER (WHERE attempt > 1),
           extract(epoch FROM max(finished_at) - min(started_at)),
           count(*) FILTER (WHERE finished_at > (SELECT max(started_at) FROM workers)),
           extract(epoch FROM max(finished_at) - (SELECT max(started_at) FROM workers))
    FROM jobs
"""


# One claim is one transaction, so its attempts share ``started_at`` (now()); the same holds
# for the attempts one report ended (``ended_at``). How many jobs each round trip carried:
_ROUND_TRIPS_SQL = """
    SELECT (SELECT count(*) FROM (SELECT 1 FROM job_attempts GROUP BY worker_id, started_at) c),
           (SELECT count(*) FROM (SELECT 1 FROM job_attempts GROUP BY ended_at) r)
"""


# Sequential scans of jobs (the API's server processes publish these counters about once a
# second, so a difference taken right after a run may miss its last second).
_SEQ_SCANS_SQL = "SELECT seq_scan, seq_tup_read FROM pg_stat_user_tables WHERE relname = 'jobs'"


@dataclass(frozen=True)
class ThroughputRun:
    """One throughput configuration."""

    label: str
    jobs: int
    concurrency: int
    claim_batch: int
    target: Target


def throughput_runs(opts: Options) -> tuple[ThroughputRun, ...]:
    """The two configurations of the ``throughput`` scenario (``bench.writes`` runs them), with targets."""
    return (
        ThroughputRun("claim batch 1, concurrency 1", opts.single_jobs, 1, 1, Target(">=", 800)),
        ThroughputRun(f"claim batch {opts.batched_claim_batch}, concurrency {opts.batched_concurrency}",
                      opts.batched_jobs, opts.batched_concurrency, opts.batched_claim_batch,
                      Target(">=", 10_000)),
    )


def throughput_run(fleet: Fleet, opts: Options,
                   run: ThroughputRun) -> tuple[list[Figure], list[str], dict[str, Any]]:
    """Enqueue, start the workers, wait until the queue is drained; jobs/s from the jobs table."""
    fleet.reset()
    api = fleet.admin_api()
    try:
        say(f"  {run.label}: enqueueing {run.jobs:,} noop jobs …")
        submit_batches(api, noop_jobs(f"tp{run.claim_batch}", run.jobs), opts.batch_size, opts.batch_clients)
    finally:
        api.close()
    say(f"  {run.label}: starting {opts.workers} workers and draining the queue …")
    scans_before = fleet.sql().one(_SEQ_SCANS_SQL) or (0, 0)
    cpu_before = cpu_sample(fleet.cpu_roles())
    spawned = time.monotonic()
    procs = fleet.start_workers(opts.workers, "noop", run.concurrency, run.claim_batch)
    try:
        wait_drained(fleet.sql(), procs, run.label)
        wall = time.monotonic() - spawned
        cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles(procs)))
    finally:
        fleet.stop_workers(procs)
    scans_after = fleet.sql().one(_SEQ_SCANS_SQL) or (0, 0)
    seq_scans, rows_scanned = (int(a - b) for a, b in zip(scans_after, scans_before, strict=True))
    row = fleet.sql().one(_THROUGHPUT_SQL)
    assert row is not None
    total, succeeded, retried, span_s, steady_jobs, steady_s = row
    claims, reports = fleet.sql().one(_ROUND_TRIPS_SQL) or (0, 0)
    rate = total / float(span_s)
    steady = steady_jobs / float(steady_s) if steady_s and steady_s > 0 and steady_jobs else None
    figures = [figure("throughput", f"end to end, {run.label}", rate, "jobs/s", run.target,
                      workers=opts.workers, jobs=total, succeeded=succeeded, retried=retried,
                      first_claim_to_last_finish_s=float(span_s), wall_from_spawn_s=wall,
                      steady_jobs_per_s=steady, steady_jobs=steady_jobs, claims=claims, reports=reports,
                      seq_scans=seq_scans, rows_seq_scanned=rows_scanned, cpu_s=cpu)]
    notes = [f"{run.label}: {total:,} jobs in {float(span_s):.2f} s (first claim → last finish); "
             f"{wall:.2f} s from spawning the workers"
             + (f"; steady (all {opts.workers} registered): {steady:,.0f} jobs/s over {steady_jobs:,} jobs"
                if steady else "")]
    notes.append(f"{run.label}: {claims:,} claims carried {total / max(claims, 1):.1f} jobs each on average, "
                 f"{reports:,} result reports {total / max(reports, 1):.1f}; jobs was read by {seq_scans:,} "
                 f"sequential scans, {rows_scanned:,} rows ({rows_scanned / max(total, 1):,.0f} per job)")
    notes.append(cpu_note(f"{run.label}, from spawning the workers to the last result", cpu))
    if succeeded != total or retried:
        notes.append(f"WARNING: {succeeded:,} of {total:,} succeeded, {retried} needed a retry")
    return figures, notes, {"jobs": total, "span_s": float(span_s), "wall_s": wall, "steady": steady,
                            "claims": claims, "reports": reports}
