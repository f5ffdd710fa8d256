"""Scenario ``throughput`` with what each job costs: rows written, and CPU of the API and PostgreSQL.

The two runs of ``bench/throughput.py`` (claim batch 1 and concurrency 1, then batched), each
measured exactly as there by :func:`bench.throughput.throughput_run`, and around each of them
— from the reset and the batch submission through the API to the last job SUCCEEDED and the
workers stopped:

- Row writes per job: the change of ``n_tup_ins + n_tup_upd + n_tup_del`` in
  ``pg_stat_user_tables``, per table of skyfleet's database, over the jobs run (printed per
  table, with the HOT share of the updates). PostgreSQL (15 and later) publishes a backend's
  counters at most once a second, and an idle backend's within 10 s, so the counters are read
  once they have not moved for :data:`STATS_SETTLE_S`, before and after each run (the reading
  after the first run serves as the one before the second): about 11 s per reading.
- CPU per job: µs of CPU of the API (its gunicorn processes), of PostgreSQL and of the worker
  processes over the same span, from /proc (the workers', which have exited by then, from this
  process's children rusage), over the jobs run.
"""

from __future__ import annotations

import time

from bench.clients import Db
from bench.cputree import cpu_mark, cpu_since
from bench.figures import Figure, ScenarioResult, figure, say
from bench.fleet import Fleet
from bench.options import Options
from bench.throughput import throughput_run, throughput_runs

#: PGSTAT_IDLE_INTERVAL (10 s) and a margin.
STATS_SETTLE_S = 11.0
STATS_SETTLE_MAX_S = 40.0

_TABLE_WRITES = """
    SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd
    FROM pg_stat_user_tables WHERE schemaname = current_schema() AND relname <> 'alembic_version'
"""

Counters = dict[str, tuple[int, int, int, int]]


def bench_throughput_costs(fleet: Fleet, opts: Options) -> ScenarioResult:
    """End-to-end noop jobs/s (as ``bench.throughput``), with the rows and CPU each job cost."""
    result = ScenarioResult()
    fleet.ensure_api()
    say("  reading the table counters once PostgreSQL has published them (~11 s) …")
    before = settled_writes(fleet.sql())
    for run in throughput_runs(opts):
        roles = fleet.cpu_roles()
        mark = cpu_mark(roles)
        figures, notes, data = throughput_run(fleet, opts, run)
        cpu = cpu_since(mark, roles, exited_children="workers")  # stopped inside throughput_run
        say(f"  {run.label}: reading the table counters (~11 s) …")
        after = settled_writes(fleet.sql())
        short = run.label.split(",")[0]  # "claim batch 1": the figure names stay in their column
        cost_figures, cost_notes = job_costs(short, int(data["jobs"]), before, after, cpu)
        result.figures += figures + cost_figures
        result.notes += notes + cost_notes
        result.data[run.label] = data | {"row_writes": _delta(before, after), "cpu_s_submit_to_done": cpu}
        before = after
    return result


def table_writes(db: Db) -> Counters:
    """Per table: (inserted, updated, deleted, HOT-updated) rows so far, as published."""
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3]), int(r[4])) for r in db.rows(_TABLE_WRITES)}


def settled_writes(db: Db) -> Counters:
    """The counters once they have not moved for STATS_SETTLE_S (waiting STATS_SETTLE_MAX_S at most)."""
    started = moved_at = time.monotonic()
    last = table_writes(db)
    while time.monotonic() - moved_at < STATS_SETTLE_S and time.monotonic() - started < STATS_SETTLE_MAX_S:
        time.sleep(0.5)
        now = table_writes(db)
        if now != last:
            last, moved_at = now, time.monotonic()
    return last


def _delta(before: Counters, after: Counters) -> dict[str, dict[str, int]]:
    """Rows inserted, updated (and HOT-updated) and deleted per table between two readings."""
    delta = {}
    for table, (ins, upd, dele, hot) in after.items():
        b_ins, b_upd, b_del, b_hot = before.get(table, (0, 0, 0, 0))
        counts = {"ins": ins - b_ins, "upd": upd - b_upd, "del": dele - b_del, "hot_upd": hot - b_hot}
        if counts["ins"] or counts["upd"] or counts["del"]:
            delta[table] = counts
    return delta


def job_costs(label: str, jobs: int, before: Counters, after: Counters,
              cpu: dict[str, float]) -> tuple[list[Figure], list[str]]:
    """Row writes and CPU µs per job of one run, as figures and a breakdown per table."""
    delta = _delta(before, after)
    writes = sum(c["ins"] + c["upd"] + c["del"] for c in delta.values())
    per_job = max(jobs, 1)
    figures = [figure("throughput", f"row writes per job, {label}", writes / per_job, "rows",
                      jobs=jobs, writes=writes, tables=delta)]
    parts = []
    for table, c in sorted(delta.items(), key=lambda kv: -(kv[1]["ins"] + kv[1]["upd"] + kv[1]["del"])):
        counts = [f"{c[k] / per_job:.2f} {k}" for k in ("ins", "upd", "del") if c[k]]
        hot = f" ({c['hot_upd'] / per_job:.2f} HOT)" if c["hot_upd"] else ""
        parts.append(f"{table} {' + '.join(counts)}{hot}")
    notes = [f"{label}: {writes:,} row writes for {jobs:,} jobs, submit → SUCCEEDED, per job: " + "; ".join(parts)]
    for role, name in (("api", "API"), ("postgres", "PostgreSQL"), ("workers", "workers")):
        if role in cpu:
            figures.append(figure("throughput", f"{name} CPU per job, {label}", cpu[role] / per_job * 1e6, "µs",
                                  cpu_s=cpu[role], jobs=jobs, window_s=cpu["wall"]))
    notes.append(f"{label}: CPU per job over the same span, in µs (the workers' start-up included): "
                 + ", ".join(f"{role} {cpu[role] / per_job * 1e6:,.0f}" for role in cpu
                            if role in ("api", "postgres", "workers")))
    return figures, notes

