"""Scenario ``claim``: ``claim_jobs`` time with a small and a large pending queue, and its plan."""

from __future__ import annotations

import statistics
import time

from sqlalchemy import Engine, TextClause, text

from api.database import make_engine
from api.queue.leases import claim_jobs
from api.queue.sql import Q
from bench.errors import BenchError
from bench.figures import ScenarioResult, Target, figure, percentile, say
from bench.fleet import Fleet
from bench.options import Options

CLAIM_LIMIT = 10
CLAIM_LEASE_S = 30.0
CLAIM_WARMUP = 12
CLAIM_MIN_SAMPLES = 20


_FILL = """
    INSERT INTO jobs (type, input_payload, input_hash, max_attempts, user_id)
    SELECT 'noop', jsonb_build_object('tag', g), md5(g::text) || md5((g + 1)::text), 3, %s
    FROM generate_series(1, %s) g
"""

_BENCH_WORKER = """
    INSERT INTO workers (name, user_id, job_types, concurrency) VALUES ('bench', %s, ARRAY['noop'], 1)
    RETURNING id
"""


_ANY_TYPE = "type = ANY(CAST(:types AS text[]))"

#: What-if: the same claim with an equality on ``type`` (one type), which the index can
#: serve in ``ORDER BY priority, run_after, id`` order and stop after LIMIT rows. None when
#: the claim statement no longer filters with ``type = ANY(...)``.
_CLAIM_ONE_TYPE = (text(Q.claim.text.replace(_ANY_TYPE, "type = (CAST(:types AS text[]))[1]"))
                   if _ANY_TYPE in Q.claim.text else None)


def bench_claim(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Claim time with a small and a large pending queue, and the claim's plan at the largest."""
    result = ScenarioResult()
    engine = make_engine(fleet.database_url, pool_size=1)
    medians: dict[int, float] = {}
    try:
        for size in opts.claim_sizes:
            worker_id = fill_queue(fleet, size)
            medians[size] = claim_at_size(engine, worker_id, size, opts, result)
            if size == max(opts.claim_sizes):
                result.notes += plan_notes(engine, worker_id, size, result)
        small, large = min(opts.claim_sizes), max(opts.claim_sizes)
        if small != large:
            result.figures.append(figure(
                "claim", f"claim({_count_label(large)}) / claim({_count_label(small)}), medians",
                medians[large] / medians[small], "×", Target("<=", 1.5),
            ))
    finally:
        engine.dispose()
        fleet.reset()  # gives back the disk the big queue took
    return result


def claim_at_size(engine: Engine, worker_id: int, size: int, opts: Options, result: ScenarioResult) -> float:
    """Time ``claim_jobs`` with ``size`` pending jobs, plus the one-type what-if; the median in ms."""
    label = _count_label(size)
    say(f"  timing up to {opts.claim_repeats} claims of {CLAIM_LIMIT} (≤ {opts.claim_budget_s:.0f} s) "
        f"with {size:,} pending …")
    ms = [x * 1000 for x in time_claims(engine, worker_id, opts.claim_repeats, opts.claim_budget_s)]
    median = statistics.median(ms)
    result.figures += [
        figure("claim", f"claim {CLAIM_LIMIT} at {label} pending, median", median, "ms",
               pending=size, samples=len(ms)),
        figure("claim", f"claim {CLAIM_LIMIT} at {label} pending, p95", percentile(ms, 95), "ms",
               pending=size),
    ]
    result.data[str(size)] = {"median_ms": median, "p95_ms": percentile(ms, 95), "samples_ms": ms}
    note = f"at {label}: {len(ms)} claims timed"
    if _CLAIM_ONE_TYPE is not None:
        samples = time_claims(engine, worker_id, min(50, opts.claim_repeats), 10.0, _CLAIM_ONE_TYPE)
        what_if = statistics.median(samples) * 1000
        result.data[str(size)]["one_type_what_if_median_ms"] = what_if
        note += f"; what-if `type = <one type>` instead of `{_ANY_TYPE}`: median {what_if:.2f} ms"
    result.notes.append(note)
    return median


def plan_notes(engine: Engine, worker_id: int, size: int, result: ScenarioResult) -> list[str]:
    """The claim's EXPLAIN (ANALYZE, BUFFERS) as lines to print, saying whether it uses the claim index."""
    plan = explain_claim(engine, worker_id)
    result.data["plan"] = plan
    uses = any("ix_jobs_claimable" in line for line in plan)
    header = (f"EXPLAIN (ANALYZE, BUFFERS) of the claim at {_count_label(size)} pending "
              f"(uses ix_jobs_claimable: {'yes' if uses else 'NO'}):")
    return [header] + [f"    {line}" for line in plan]


def fill_queue(fleet: Fleet, size: int) -> int:
    """Empty the tables, insert ``size`` pending noop jobs by SQL, VACUUM ANALYZE; a worker row's id."""
    db = fleet.sql()
    fleet.reset()
    say(f"  inserting {size:,} pending jobs …")
    started = time.monotonic()
    db.execute(_FILL, (fleet.admin_id(), size))
    db.execute("VACUUM ANALYZE jobs")
    say(f"    done in {time.monotonic() - started:.1f} s (with VACUUM ANALYZE)")
    return int(db.value(_BENCH_WORKER, (fleet.admin_id(),)))


def time_claims(engine: Engine, worker_id: int, repeats: int, budget_s: float,
                statement: TextClause | None = None) -> list[float]:
    """Seconds per claim, each in a rolled-back transaction, after CLAIM_WARMUP untimed ones.

    ``statement`` None: ``api.queue.leases.claim_jobs`` itself; otherwise that statement with
    the same parameters. Stops early once ``budget_s`` is spent (with CLAIM_MIN_SAMPLES taken).
    """
    params = {"types": ["noop"], "limit": CLAIM_LIMIT, "worker_id": worker_id, "lease_s": CLAIM_LEASE_S}
    timings: list[float] = []
    deadline = time.monotonic() + budget_s
    with engine.connect() as conn:
        for i in range(CLAIM_WARMUP + repeats):
            trans = conn.begin()
            try:
                started = time.perf_counter()
                if statement is None:
                    claimed = len(claim_jobs(conn, worker_id, ["noop"], CLAIM_LIMIT, CLAIM_LEASE_S))
                else:
                    claimed = len(conn.execute(statement, params).all())
                elapsed = time.perf_counter() - started
            finally:
                trans.rollback()
            if claimed != CLAIM_LIMIT:
                raise BenchError(f"claimed {claimed} jobs, expected {CLAIM_LIMIT}")
            if i >= CLAIM_WARMUP:
                timings.append(elapsed)
            if len(timings) >= CLAIM_MIN_SAMPLES and time.monotonic() > deadline:
                break
    return timings


def explain_claim(engine: Engine, worker_id: int) -> list[str]:
    """``EXPLAIN (ANALYZE, BUFFERS)`` of the claim statement, in a rolled-back transaction."""
    params = {"types": ["noop"], "limit": CLAIM_LIMIT, "worker_id": worker_id, "lease_s": CLAIM_LEASE_S}
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            rows = conn.execute(text("EXPLAIN (ANALYZE, BUFFERS) " + Q.claim.text), params).scalars().all()
        finally:
            trans.rollback()
    return [str(r) for r in rows]


def _count_label(n: int) -> str:
    """``n`` for a figure's name: 10k, 1M, or 1,234."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return f"{n:,}"
