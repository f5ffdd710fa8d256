"""Scenario ``scale``: a fleet of simulated workers against the API, idle and then under a burst.

What the issue asks of one API (``make run``: gunicorn's ``gevent`` workers,
``SKYFLEET_WEB_WORKERS`` processes × ``SKYFLEET_WEB_CONNECTIONS`` connections, 2 × 2000 by
default) with 1,000 workers connected: while the fleet is idle, ``/api/health`` p99 ≤ 100 ms,
heartbeat p99 ≤ 250 ms, API CPU ≤ 25 % of one core and database connections bounded by the
pool settings; then, under a burst of 20,000 jobs of 50–200 ms, no lease lost, every job run
exactly once, and the pickup p99. The targets are printed next to the figures; a missed one
is reported, not fatal.

``--scale-workers`` simulated workers (``bench/swarm.py``: each registers, long-polls its
claims with ``wait_s`` 20 one after another and, only while it holds a job, heartbeats every
interval with the jobs it holds, as ``worker/runtime.py`` does) are spread over
``--scale-processes`` client processes. They register within seconds of each other and, like
real workers (a fixed ``wait_s``, no jitter; a fleet that starts together, or re-claims
together after an API restart answered every parked claim, stays in step), the idle ones
claim again together once per wait: the idle figures include those herds, a claim each from
most of the fleet within a few seconds every 20 s. Phases:

1. Ramp-up: until every simulated worker has a live row in ``workers`` (at most
   :data:`REGISTER_TIMEOUT_S`; the scenario goes on with those that made it), then
   :data:`SETTLE_S` for the claims to park.
2. Busy few: ``--scale-busy`` ``sleep`` jobs lasting the idle phase plus :data:`BUSY_MARGIN_S`
   are submitted and the scenario waits until all are running. An idle worker no longer
   heartbeats (its parked claim keeps it alive), so without them there would be no heartbeat
   to time: these workers hold their leases through the idle phase by heartbeating while the
   rest of the fleet is parked, as a mostly idle production fleet would.
3. Idle, ``--scale-idle-s`` seconds: ``/api/health`` probed from here every 250 ms
   (p50/p99/max of the answers, and the failures: 5 s timeouts, errors, non-200); the busy
   workers' heartbeats from the swarm's record (p50/p99/max of the answered ones, failures,
   and how many workers holding a job went longer than a lease without an answered heartbeat,
   counting the window's edges and the moments they took and gave back the job: those would
   have lost it); claims started per second (what an idle fleet costs: each idle worker claims
   again once per wait; a parked claim costs no query); CPU of the API (% of one core),
   PostgreSQL and the swarm itself, from /proc; database connections (``pg_stat_activity``,
   client backends of the skyfleet database, sampled every second: the most seen) against
   their bound, :func:`connection_bound`. Then the busy jobs are let finish.
4. Burst (``--scale-burst-jobs``, 0 skips it): that many ``sleep`` jobs of 50–200 ms submitted
   by the admin through the batch endpoint; until none is pending or running (at most
   :data:`BURST_TIMEOUT_S`): the time from the first ``created_at`` to the last
   ``finished_at``, jobs that did not succeed, leases lost (attempts ended ``EXPIRED``),
   jobs run more than once (more than one attempt, and jobs the swarm ran twice), reports
   answered ``accepted: false``, pickup latency p50/p99 (``started_at − greatest(created_at,
   run_after)`` of each job, PostgreSQL's clock: the rest of its submit transaction and its
   wait in the queue behind the burst), the API's CPU µs per job, and the heartbeats meanwhile.

Afterwards the swarm is stopped (its record is read), the API is given until ``/api/health``
answers within a second again, and the tables are emptied. The machine's load matters: on
2 cores the swarm, PostgreSQL and the API share the CPU, so the run's load average is worth
reading next to the figures (results.json has it).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import requests

from api.config import DB_POOL_SIZE, LEASE_S, env_name
from bench.children import Children
from bench.clients import RUN_ID, Api, submit_batches
from bench.cpu import cpu_note
from bench.cputree import cpu_mark, cpu_since
from bench.errors import BenchError
from bench.figures import Figure, ScenarioResult, Target, figure, percentile, say
from bench.fleet import WORKER_EMAIL, Fleet
from bench.options import Options
from bench.waiting import active_jobs

SETTLE_S = 5.0
REGISTER_TIMEOUT_S = 120.0
#: The busy jobs sleep this much longer than the idle phase (they start a little before it).
BUSY_MARGIN_S = 10.0
BUSY_START_TIMEOUT_S = 30.0
BURST_TIMEOUT_S = 300.0
CALM_TIMEOUT_S = 45.0
RESET_ATTEMPTS = 5
HEALTH_EVERY_S = 0.25
HEALTH_TIMEOUT_S = 5.0

#: The issue's targets for an idle fleet of 1,000 workers.
HEALTH_P99_MS = 100.0
HEARTBEAT_P99_MS = 250.0
API_CPU_PCT = 25.0

_REGISTERED = "SELECT count(DISTINCT name) FROM workers WHERE stopped_at IS NULL AND name LIKE 'sim-%'"
_CONNECTIONS = """
    SELECT count(*), count(*) FILTER (WHERE state = 'active')
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
# The phases' jobs are told apart by their tag: '<run>-busy-<i>' and '<run>-burst-<i>'.
_TAGGED = "input_payload->>'tag' LIKE %s"
_RUNNING = f"SELECT count(*) FROM jobs WHERE status = 'IN_PROGRESS' AND {_TAGGED}"
_ACTIVE = f"SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS') AND {_TAGGED}"
_JOBS = f"""
    SELECT count(*), count(*) FILTER (WHERE status = 'SUCCEEDED'),
           extract(epoch FROM max(finished_at) - min(created_at))
    FROM jobs WHERE {_TAGGED}
"""
_LEASES_LOST = f"""
    SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id
    WHERE a.outcome = 'EXPIRED' AND j.{_TAGGED}
"""
# Handed to a worker more than once. A claim whose client had hung up by the time it had jobs
# (its timeout ran out under load) releases them at once (RELEASED, never run): not counted.
_RUN_TWICE = f"""
    SELECT count(*) FROM (
        SELECT a.job_id FROM job_attempts a JOIN jobs j ON j.id = a.job_id
        WHERE j.{_TAGGED} AND a.outcome <> 'RELEASED' GROUP BY a.job_id HAVING count(*) > 1) t
"""
_RELEASED = f"""
    SELECT count(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id
    WHERE a.outcome = 'RELEASED' AND j.{_TAGGED}
"""
_PICKUP_MS = f"""
    SELECT extract(epoch FROM started_at - greatest(created_at, run_after)) * 1000
    FROM jobs WHERE started_at IS NOT NULL AND {_TAGGED}
"""


@dataclass(frozen=True)
class Window:
    """A phase, in wall-clock seconds (the swarm's record is in epoch seconds)."""

    start: float
    end: float


def _tag(phase: str) -> str:
    """The LIKE pattern of the tags of this run's jobs of ``phase`` (busy or burst)."""
    return f"{RUN_ID}-{phase}-%"


def connection_bound() -> int:
    """The most database connections the API may open: per process, its engine's pool and as
    many overflow (``SKYFLEET_DB_POOL_SIZE`` each), its LISTEN connection and its maintenance
    runner's; plus the one a ``/api/health`` probe opens for itself (one probe at a time here)."""
    processes = int(os.environ.get("SKYFLEET_WEB_WORKERS", "2"))
    pool = int(os.environ.get(env_name("db_pool_size"), str(DB_POOL_SIZE)))
    return processes * (2 * pool + 2) + 1


def bench_scale(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Idle fleet of ``--scale-workers`` simulated workers (a few kept busy), then a burst of short jobs."""
    fleet.reset()
    api = fleet.admin_api()  # logged in before the API gets busy
    result = ScenarioResult()
    n = opts.scale_workers
    processes = max(1, min(opts.scale_processes, n))
    out_dir = fleet.log_dir / "scale"
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("swarm-*.json"):
        old.unlink()
    password = (fleet.data_dir / "local-worker-password").read_text().strip()
    env = {"SKYFLEET_WORKER_EMAIL": WORKER_EMAIL, "SKYFLEET_WORKER_PASSWORD": password}
    api_log = fleet.log_dir / "api.log"
    log_offset = api_log.stat().st_size if api_log.exists() else 0
    try:
        with Children(fleet.log_dir) as children:
            say(f"  {n} simulated workers in {processes} processes against {fleet.api_url} …")
            swarm = [children.spawn(["bench.swarm", "--api", fleet.api_url, "--workers", str(count),
                                     "--first-index", str(first), "--out", str(out_dir / f"swarm-{i}.json")],
                                    f"swarm-{i}.log", env)
                     for i, (first, count) in enumerate(_shares(n, processes))]
            registered, ramp_s = ramp_up(fleet, swarm, n)
            time.sleep(SETTLE_S)
            busy = start_busy(fleet, api, min(opts.scale_busy, registered), opts, result)
            say(f"  idle fleet ({busy} busy): measuring for {opts.scale_idle_s:.0f} s …")
            idle = measure_idle(fleet, swarm, opts.scale_idle_s)
            idle.data.update(busy=busy, **finish_busy(fleet, swarm, busy))
            burst = run_burst(fleet, api, swarm, opts, result) if opts.scale_burst_jobs else None
            say("  stopping the swarm …")
            children.stop(swarm, timeout_s=15.0)
        records = read_records(out_dir, processes)
        result.figures.append(figure("scale", f"workers registered (of {n})", registered, "workers",
                                     ramp_s=ramp_s, processes=processes))
        result.notes.append(f"{registered} of {n} registered in {ramp_s:.1f} s "
                            f"({processes} client processes, 2 threads and 2 connections per worker)")
        idle_figures(result, records, idle, registered)
        if burst is not None:
            burst_figures(result, records, burst)
        result.data.update(idle=idle.data, burst=burst.data if burst else None,
                           stale_reports=records["stale_reports"])
    finally:
        api.close()
        calm_down(fleet)
        errors = api_log_errors(api_log, log_offset)
        result.data["api_log_errors"] = errors
        result.notes.append(f"API log ({api_log}) during the scenario: "
                            + (", ".join(f"{n} × {line}" for line, n in errors.items()) or "no error"))
        empty_tables(fleet)
    return result


def _shares(total: int, parts: int) -> list[tuple[int, int]]:
    """(first index, count) of each of ``parts`` near-equal shares of ``total``."""
    base, extra = divmod(total, parts)
    shares, first = [], 0
    for i in range(parts):
        count = base + (1 if i < extra else 0)
        shares.append((first, count))
        first += count
    return shares


def ramp_up(fleet: Fleet, swarm: list[subprocess.Popen[bytes]], n: int) -> tuple[int, float]:
    """Wait until ``n`` simulated workers are registered, or REGISTER_TIMEOUT_S; (registered, seconds)."""
    started = time.monotonic()
    registered = reported = 0
    while time.monotonic() - started < REGISTER_TIMEOUT_S:
        if any(p.poll() is not None for p in swarm):
            raise BenchError("a swarm process exited during the ramp-up; see its log in logs/")
        registered = int(fleet.sql().value(_REGISTERED))
        if registered >= n:
            break
        if time.monotonic() - started - reported >= 10:
            reported += 10
            say(f"    … {registered} of {n} registered")
        time.sleep(0.25)
    return registered, time.monotonic() - started


def start_busy(fleet: Fleet, api: Api, count: int, opts: Options, result: ScenarioResult) -> int:
    """Submit ``count`` sleep jobs outlasting the idle phase and wait until they run; how many run."""
    if count <= 0:
        return 0
    seconds = opts.scale_idle_s + BUSY_MARGIN_S
    jobs = [{"type": "sleep", "cache": False,
             "input_payload": {"seconds": seconds, "tag": f"{RUN_ID}-busy-{i}"}} for i in range(count)]
    say(f"  keeping {count} workers busy: {count} sleep jobs of {seconds:.0f} s …")
    submit_batches(api, jobs, opts.batch_size, 1)
    deadline = time.monotonic() + BUSY_START_TIMEOUT_S
    running = 0
    while time.monotonic() < deadline:
        running = int(fleet.sql().value(_RUNNING, (_tag("busy"),)))
        if running >= count:
            return running
        time.sleep(0.1)
    result.notes.append(f"busy jobs: only {running} of {count} were running after {BUSY_START_TIMEOUT_S:.0f} s")
    return running


def finish_busy(fleet: Fleet, swarm: list[subprocess.Popen[bytes]], busy: int) -> dict[str, Any]:
    """Wait until the busy jobs have finished (they outlast the idle phase by BUSY_MARGIN_S); their fate."""
    if busy:
        say("  letting the busy jobs finish …")
        deadline = time.monotonic() + BUSY_MARGIN_S + 30.0
        while (int(fleet.sql().value(_ACTIVE, (_tag("busy"),))) and time.monotonic() < deadline
               and any(p.poll() is None for p in swarm)):
            time.sleep(0.25)
    total, succeeded, _span = fleet.sql().one(_JOBS, (_tag("busy"),)) or (0, 0, None)
    return {"busy_jobs": int(total), "busy_succeeded": int(succeeded),
            "busy_leases_lost": int(fleet.sql().value(_LEASES_LOST, (_tag("busy"),)))}


@dataclass
class Phase:
    """What was measured from here during a phase; ``data`` goes to results.json."""

    window: Window
    cpu: dict[str, float]
    data: dict[str, Any]


def measure_idle(fleet: Fleet, swarm: list[subprocess.Popen[bytes]], seconds: float) -> Phase:
    """Probe /api/health and sample pg_stat_activity for ``seconds``, with the CPU used meanwhile."""
    roles = fleet.cpu_roles() | {"swarm": [p.pid for p in swarm]}
    health_ms: list[float] = []
    failures: dict[str, int] = {}
    connections: list[tuple[int, int]] = []
    session = requests.Session()
    mark, start = cpu_mark(roles), time.time()
    next_sample = time.monotonic()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tick = time.monotonic()
        if tick >= next_sample:
            total, active = fleet.sql().one(_CONNECTIONS) or (0, 0)
            connections.append((int(total), int(active)))
            next_sample = tick + 1.0
        probed = time.monotonic()
        try:
            response = session.get(f"{fleet.api_url}/api/health", timeout=HEALTH_TIMEOUT_S)
            if response.status_code == 200:
                health_ms.append((time.monotonic() - probed) * 1000)
            else:
                failures[f"HTTP {response.status_code}"] = failures.get(f"HTTP {response.status_code}", 0) + 1
        except requests.Timeout:
            failures["timeout"] = failures.get("timeout", 0) + 1
        except requests.ConnectionError:
            failures["connection error"] = failures.get("connection error", 0) + 1
        time.sleep(max(0.0, tick + HEALTH_EVERY_S - time.monotonic()))
    cpu = cpu_since(mark, roles)
    session.close()
    data = {"health_ms": health_ms, "health_failures": failures, "connections": connections}
    return Phase(Window(start, time.time()), cpu, data)


def run_burst(fleet: Fleet, api: Api, swarm: list[subprocess.Popen[bytes]], opts: Options,
              result: ScenarioResult) -> Phase:
    """Submit the burst of sleep jobs and wait until none is pending or running (or BURST_TIMEOUT_S)."""
    count = opts.scale_burst_jobs
    jobs = [{"type": "sleep", "cache": False,
             "input_payload": {"seconds": round(0.05 + 0.15 * i / max(1, count - 1), 4),
                               "tag": f"{RUN_ID}-burst-{i}"}} for i in range(count)]
    say(f"  burst: {count} sleep jobs of 50–200 ms …")
    roles = fleet.cpu_roles() | {"swarm": [p.pid for p in swarm]}
    mark, start = cpu_mark(roles), time.time()
    try:
        submit_batches(api, jobs, opts.batch_size, 1)
    except (BenchError, requests.RequestException) as exc:
        result.notes.append(f"burst: the submission failed part-way: {exc}")
    deadline = time.monotonic() + BURST_TIMEOUT_S
    left = active_jobs(fleet.sql())
    while left and time.monotonic() < deadline and any(p.poll() is None for p in swarm):
        time.sleep(0.5)
        left = active_jobs(fleet.sql())
    cpu = cpu_since(mark, roles)
    tag = (_tag("burst"),)
    total, succeeded, span_s = fleet.sql().one(_JOBS, tag) or (0, 0, None)
    pickup_ms = [float(row[0]) for row in fleet.sql().rows(_PICKUP_MS, tag)]
    data = {"submitted": count, "jobs": int(total), "succeeded": int(succeeded), "unfinished": left,
            "span_s": float(span_s) if span_s is not None else None,
            "leases_lost": int(fleet.sql().value(_LEASES_LOST, tag)),
            "run_more_than_once": int(fleet.sql().value(_RUN_TWICE, tag)),
            "released_unrun": int(fleet.sql().value(_RELEASED, tag)),
            "pickup_ms": pickup_ms}
    return Phase(Window(start, time.time()), cpu, data)


def read_records(out_dir: Path, processes: int) -> dict[str, Any]:
    """The swarm processes' records, merged; BenchError if one did not write its record."""
    merged: dict[str, Any] = {"requests": [], "jobs": [], "stale_reports": 0}
    for i in range(processes):
        path = out_dir / f"swarm-{i}.json"
        if not path.exists():
            raise BenchError(f"swarm process {i} wrote no record ({path}); see logs/swarm-{i}.log")
        record = json.loads(path.read_text())
        merged["requests"] += record["requests"]
        merged["jobs"] += record["jobs"]
        merged["stale_reports"] += record["stale_reports"]
    return merged


def _requests(records: dict[str, Any], kind: str, window: Window) -> list[list[Any]]:
    """The swarm's requests of ``kind`` started inside ``window``: [kind, worker, started, ms, outcome]."""
    return [r for r in records["requests"] if r[0] == kind and window.start <= r[2] < window.end]


def latency_figures(label: str, ms: list[float], target: Target | None = None) -> list[Figure]:
    """p50, p99 (judged against ``target``) and max of ``ms`` (— when nothing was answered)."""
    names = ("p50", "p99", "max")
    if not ms:
        return [Figure("scale", f"{label} {name}", None, "ms",
                       target=f"{target} ms" if target and name == "p99" else None) for name in names]
    return [figure("scale", f"{label} p50", percentile(ms, 50), "ms", samples=len(ms)),
            figure("scale", f"{label} p99", percentile(ms, 99), "ms", target, samples=len(ms)),
            figure("scale", f"{label} max", max(ms), "ms", samples=len(ms))]


def _outcomes(rows: list[list[Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[4]] = counts.get(row[4], 0) + 1
    return counts


def _failed(outcomes: dict[str, int]) -> int:
    return sum(n for outcome, n in outcomes.items() if outcome != "ok")


def starved_workers(beats: list[list[Any]], holds: list[list[Any]], window: Window,
                    lease_s: float) -> tuple[set[int], set[int]]:
    """(workers that held a job inside ``window``, those of them that went longer than ``lease_s``
    without an answered heartbeat while holding it).

    ``holds`` are the swarm's job rows ``[job_id, attempt, worker, held from, held until]``; a
    stretch is measured between answered heartbeats, the window's edges and the hold's own.
    """
    answered: dict[int, list[float]] = {}
    for _kind, worker, started, ms, outcome in beats:
        if outcome == "ok":
            answered.setdefault(worker, []).append(started + ms / 1000)
    busy: set[int] = set()
    starved: set[int] = set()
    for _job, _attempt, worker, held_from, held_until in holds:
        low = max(window.start, held_from)
        high = min(window.end, window.end if held_until is None else held_until)
        if high <= low:
            continue
        busy.add(worker)
        edges = [low, *sorted(t for t in answered.get(worker, []) if low < t < high), high]
        if max(b - a for a, b in itertools.pairwise(edges)) > lease_s:
            starved.add(worker)
    return busy, starved


def idle_figures(result: ScenarioResult, records: dict[str, Any], idle: Phase, registered: int) -> None:
    """Health, heartbeats, claims, CPU and connections of the idle phase; the busy jobs' fate."""
    wall = idle.window.end - idle.window.start
    health_fail = idle.data["health_failures"]
    result.figures += latency_figures("idle: /api/health", idle.data["health_ms"], Target("<=", HEALTH_P99_MS))
    result.figures.append(figure("scale", "idle: /api/health failed", sum(health_fail.values()), "probes",
                                 answered=len(idle.data["health_ms"]), failures=health_fail))
    all_beats = [r for r in records["requests"] if r[0] == "heartbeat"]
    beats = _requests(records, "heartbeat", idle.window)
    outcomes = _outcomes(beats)
    busy, starved = starved_workers(all_beats, records["jobs"], idle.window, LEASE_S)
    idle_beaters = {r[1] for r in beats} - busy
    result.figures += latency_figures("idle: heartbeat (busy workers)", [r[3] for r in beats if r[4] == "ok"],
                                      Target("<=", HEARTBEAT_P99_MS))
    result.figures.append(figure("scale", "idle: heartbeats failed", _failed(outcomes), "beats",
                                 sent=len(beats), outcomes=outcomes))
    result.figures.append(figure("scale", f"idle: busy workers > {LEASE_S:.0f} s (a lease) without a beat",
                                 len(starved), "workers", busy_workers=len(busy), registered=registered))
    claims = _outcomes(_requests(records, "claim", idle.window))
    result.figures.append(figure("scale", "idle: claims started per second", sum(claims.values()) / wall, "/s",
                                 claims=claims, idle_workers=registered - len(busy)))
    if idle.cpu:
        result.figures.append(figure("scale", "idle: API CPU", idle.cpu["api"] / idle.cpu["wall"] * 100,
                                     "% core", Target("<=", API_CPU_PCT), cpu_s=idle.cpu))
    peak = max(idle.data["connections"], default=(0, 0))
    result.figures.append(figure("scale", "idle: database connections, most seen", peak[0], "conns",
                                 Target("<=", connection_bound()), active_at_peak=peak[1],
                                 samples=len(idle.data["connections"])))
    if idle.data["busy"]:
        result.figures.append(figure("scale", "idle: busy jobs' leases lost (EXPIRED)",
                                     idle.data["busy_leases_lost"], "leases", Target("<=", 0),
                                     jobs=idle.data["busy_jobs"], succeeded=idle.data["busy_succeeded"]))
    result.notes.append(f"idle {wall:.0f} s: /api/health {len(idle.data['health_ms'])} answered, failures "
                        f"{health_fail or 'none'}; heartbeats {len(beats)} sent ({outcomes}) by {len(busy)} "
                        f"busy workers (and {len(idle_beaters)} idle ones); claims started "
                        f"{sum(claims.values())} ({claims}); {len(starved)} of {len(busy)} busy workers went over "
                        f"{LEASE_S:.0f} s without an answered heartbeat; busy jobs {idle.data['busy_succeeded']} "
                        f"of {idle.data['busy_jobs']} succeeded; database connections bound "
                        f"{connection_bound()} (pool settings)")
    result.notes.append(cpu_note("idle fleet", idle.cpu))


def burst_figures(result: ScenarioResult, records: dict[str, Any], burst: Phase) -> None:
    """Completion, leases lost, double runs, pickup and API CPU of the burst, and its heartbeats."""
    data = burst.data
    pickup_ms = data.pop("pickup_ms")
    twice_by_swarm = len(_run_twice(records["jobs"]))
    if data["span_s"]:
        result.figures.append(figure("scale", f"burst of {data['submitted']}: first submit → last finish",
                                     data["span_s"], "s", **data))
    result.figures += [
        figure("scale", "burst: jobs not succeeded", data["submitted"] - data["succeeded"], "jobs",
               Target("<=", 0), unfinished=data["unfinished"]),
        figure("scale", "burst: leases lost (EXPIRED)", data["leases_lost"], "leases", Target("<=", 0)),
        figure("scale", "burst: jobs run more than once", data["run_more_than_once"], "jobs", Target("<=", 0),
               ran_twice_by_swarm=twice_by_swarm, stale_reports=records["stale_reports"]),
        figure("scale", "burst: claims released unrun (client gone)", data["released_unrun"], "jobs"),
    ]
    result.figures += latency_figures("burst: pickup", pickup_ms)[:2]
    data["pickup_ms"] = {"p50": percentile(pickup_ms, 50) if pickup_ms else None,
                         "p99": percentile(pickup_ms, 99) if pickup_ms else None,
                         "max": max(pickup_ms, default=None), "samples": len(pickup_ms)}
    if burst.cpu and data["jobs"]:
        result.figures.append(figure("scale", "burst: API CPU per job", burst.cpu["api"] / data["jobs"] * 1e6,
                                     "µs", cpu_s=burst.cpu))
    beats = _requests(records, "heartbeat", burst.window)
    result.figures += latency_figures("burst: heartbeat", [r[3] for r in beats if r[4] == "ok"])
    result.notes.append(f"burst: {data['jobs']} of {data['submitted']} submitted, {data['succeeded']} succeeded, "
                        f"{data['unfinished']} unfinished at the end; the swarm ran {twice_by_swarm} jobs more "
                        f"than once, {records['stale_reports']} reports came back accepted: false; heartbeats "
                        f"{_outcomes(beats)}; claims {_outcomes(_requests(records, 'claim', burst.window))}")
    result.notes.append(cpu_note("burst", burst.cpu))


def _run_twice(jobs: list[list[Any]]) -> set[int]:
    """Job ids the swarm ran more than once (any attempts, any workers)."""
    seen: set[int] = set()
    twice: set[int] = set()
    for job_id, *_rest in jobs:
        (twice if job_id in seen else seen).add(job_id)
    return twice


_ERROR_LINE = re.compile(r"^([\w.]+(?:Error|Exception|Timeout\w*|Detected)): ?(.{0,90})")


def api_log_errors(path: Path, offset: int) -> dict[str, int]:
    """The exceptions the API logged past ``offset`` of its log: their last traceback line
    (cut short), with how many times each was logged."""
    if not path.exists():
        return {}
    with path.open("rb") as log:
        log.seek(offset)
        text = log.read().decode(errors="replace")
    counts: dict[str, int] = {}
    for line in text.splitlines():
        match = _ERROR_LINE.match(line)
        # A chained exception shows its cause first; both are counted, each under its own line.
        if match:
            key = f"{match[1]}: {match[2]}".rstrip(": ")
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


def empty_tables(fleet: Fleet) -> None:
    """:meth:`Fleet.reset`, tried again when its TRUNCATE deadlocks with the API finishing a request
    that was still queued when the swarm stopped (it takes its locks in another order)."""
    for _ in range(RESET_ATTEMPTS - 1):
        try:
            fleet.reset()
            return
        except psycopg.errors.DeadlockDetected:
            time.sleep(1.0)
    fleet.reset()


def calm_down(fleet: Fleet) -> None:
    """Wait until /api/health answers within a second again (the swarm's connections are closing)."""
    deadline = time.monotonic() + CALM_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{fleet.api_url}/api/health", timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    say(f"  WARNING: the API still did not answer /api/health within 1 s after {CALM_TIMEOUT_S:.0f} s")
