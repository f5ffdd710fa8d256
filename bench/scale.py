"""Scenario ``scale``: a fleet of simulated workers against the API, idle and then under a burst.

``--scale-workers`` simulated workers (``bench/swarm.py``: each registers, long-polls its
claims with ``wait_s`` 20 one after another and heartbeats every interval with the jobs it
holds, as ``worker/runtime.py`` does) are spread over ``--scale-processes`` client processes
and pointed at the API as ``make run`` starts it (gunicorn, ``SKYFLEET_WEB_WORKERS`` ×
``SKYFLEET_WEB_THREADS``, 2 × 32 by default). Phases:

1. Ramp-up: until every simulated worker has a live row in ``workers`` (at most
   :data:`REGISTER_TIMEOUT_S`; the scenario goes on with those that made it), then
   :data:`SETTLE_S` for the claims to park.
2. Idle, ``--scale-idle-s`` seconds, no job: ``/api/health`` probed from here every 250 ms
   (p50/p99/max of the answers, and the failures: 5 s timeouts, errors, non-200); the fleet's
   heartbeats from the swarm's record (p50/p99/max of the answered ones, failures, and how many
   workers went longer than a lease without an answered heartbeat, i.e. would have lost a
   running job); CPU of the API (% of one core), PostgreSQL and the swarm itself, from /proc;
   database connections (``pg_stat_activity``, client backends of the skyfleet database,
   sampled every second: the most seen).
3. Burst (``--scale-burst-jobs``, 0 skips it): that many ``sleep`` jobs of 50–200 ms submitted
   by the admin through the batch endpoint; until none is pending or running (at most
   :data:`BURST_TIMEOUT_S`): the time from the first ``created_at`` to the last
   ``finished_at``, jobs that did not succeed, leases lost (assignments ended ``EXPIRED``),
   jobs run more than once (more than one assignment, and jobs the swarm ran twice), reports
   answered ``accepted: false``, and the heartbeats meanwhile.

Every parked claim holds one of the API's threads for up to its 20 s wait, so past a few dozen
workers the API is expected to fall behind: the timeouts and failures are what is measured,
and the scenario does not fail on them. Afterwards the swarm is stopped (its record is
read), the API is given until ``/api/health`` answers within a second again (the parked
claims run out their waits), and the tables are emptied.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from api.config import LEASE_S
from bench.children import Children
from bench.clients import RUN_ID, Api, submit_batches
from bench.cpu import cpu_note
from bench.cputree import cpu_mark, cpu_since
from bench.errors import BenchError
from bench.figures import Figure, ScenarioResult, figure, percentile, say
from bench.fleet import WORKER_EMAIL, Fleet
from bench.options import Options
from bench.waiting import active_jobs

SETTLE_S = 5.0
REGISTER_TIMEOUT_S = 120.0
BURST_TIMEOUT_S = 180.0
CALM_TIMEOUT_S = 45.0
HEALTH_EVERY_S = 0.25
HEALTH_TIMEOUT_S = 5.0

_REGISTERED = "SELECT count(DISTINCT name) FROM workers WHERE stopped_at IS NULL AND name LIKE 'sim-%'"
_CONNECTIONS = """
    SELECT count(*), count(*) FILTER (WHERE state = 'active')
    FROM pg_stat_activity
    WHERE datname = current_database() AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""
_BURST = """
    SELECT count(*), count(*) FILTER (WHERE status = 'SUCCEEDED'),
           extract(epoch FROM max(finished_at) - min(created_at))
    FROM jobs WHERE type = 'sleep'
"""
_LEASES_LOST = "SELECT count(*) FROM job_assignments WHERE outcome = 'EXPIRED'"
_RUN_TWICE = "SELECT count(*) FROM (SELECT job_id FROM job_assignments GROUP BY job_id HAVING count(*) > 1) t"


@dataclass(frozen=True)
class Window:
    """A phase, in wall-clock seconds (the swarm's record is in epoch seconds)."""

    start: float
    end: float


def bench_scale(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Idle fleet of ``--scale-workers`` simulated workers, then a burst of short jobs."""
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
    try:
        with Children(fleet.log_dir) as children:
            say(f"  {n} simulated workers in {processes} processes against {fleet.api_url} …")
            swarm = [children.spawn(["bench.swarm", "--api", fleet.api_url, "--workers", str(count),
                                     "--first-index", str(first), "--out", str(out_dir / f"swarm-{i}.json")],
                                    f"swarm-{i}.log", env)
                     for i, (first, count) in enumerate(_shares(n, processes))]
            registered, ramp_s = ramp_up(fleet, swarm, n)
            time.sleep(SETTLE_S)
            say(f"  idle fleet: measuring for {opts.scale_idle_s:.0f} s …")
            idle = measure_idle(fleet, swarm, opts.scale_idle_s)
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
        fleet.reset()
    calm_down(fleet)
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
        try:
            response = session.get(f"{fleet.api_url}/api/health", timeout=HEALTH_TIMEOUT_S)
            if response.status_code == 200:
                health_ms.append((time.monotonic() - tick) * 1000)
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
    total, succeeded, span_s = fleet.sql().one(_BURST) or (0, 0, None)
    data = {"submitted": count, "jobs": int(total), "succeeded": int(succeeded), "unfinished": left,
            "span_s": float(span_s) if span_s is not None else None,
            "leases_lost": int(fleet.sql().value(_LEASES_LOST)),
            "run_more_than_once": int(fleet.sql().value(_RUN_TWICE))}
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


def latency_figures(label: str, ms: list[float]) -> list[Figure]:
    """p50, p99 and max of ``ms`` (— when nothing was answered)."""
    names = ("p50", "p99", "max")
    if not ms:
        return [Figure("scale", f"{label} {name}", None, "ms") for name in names]
    return [figure("scale", f"{label} p50", percentile(ms, 50), "ms", samples=len(ms)),
            figure("scale", f"{label} p99", percentile(ms, 99), "ms", samples=len(ms)),
            figure("scale", f"{label} max", max(ms), "ms", samples=len(ms))]


def _outcomes(rows: list[list[Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[4]] = counts.get(row[4], 0) + 1
    return counts


def _failed(outcomes: dict[str, int]) -> int:
    return sum(n for outcome, n in outcomes.items() if outcome != "ok")


def starved_workers(beats: list[list[Any]], workers: set[int], window: Window, lease_s: float) -> int:
    """Workers with a stretch longer than ``lease_s`` inside ``window`` without an answered heartbeat."""
    answered: dict[int, list[float]] = {w: [] for w in workers}
    for _kind, worker, started, ms, outcome in beats:
        if outcome == "ok":
            answered.setdefault(worker, []).append(started + ms / 1000)
    starved = 0
    for times in answered.values():
        edges = [window.start, *sorted(times), window.end]
        if max(b - a for a, b in itertools.pairwise(edges)) > lease_s:
            starved += 1
    return starved


def idle_figures(result: ScenarioResult, records: dict[str, Any], idle: Phase, registered: int) -> None:
    """Health, heartbeats, CPU and connections of the idle phase."""
    wall = idle.window.end - idle.window.start
    health_fail = idle.data["health_failures"]
    result.figures += latency_figures("idle: /api/health", idle.data["health_ms"])
    result.figures.append(figure("scale", "idle: /api/health failed", sum(health_fail.values()), "probes",
                                 answered=len(idle.data["health_ms"]), failures=health_fail))
    beats = _requests(records, "heartbeat", idle.window)
    outcomes = _outcomes(beats)
    workers = {r[1] for r in records["requests"] if r[0] == "register" and r[4] == "ok"}
    starved = starved_workers(beats, workers, idle.window, LEASE_S)
    result.figures += latency_figures("idle: heartbeat", [r[3] for r in beats if r[4] == "ok"])
    result.figures.append(figure("scale", "idle: heartbeats failed", _failed(outcomes), "beats",
                                 sent=len(beats), outcomes=outcomes))
    result.figures.append(figure("scale", f"idle: workers > {LEASE_S:.0f} s (a lease) without a beat",
                                 starved, "workers", registered=registered))
    if idle.cpu:
        result.figures.append(figure("scale", "idle: API CPU", idle.cpu["api"] / idle.cpu["wall"] * 100,
                                     "% core", cpu_s=idle.cpu))
    peak = max(idle.data["connections"], default=(0, 0))
    result.figures.append(figure("scale", "idle: database connections, most seen", peak[0], "conns",
                                 active_at_peak=peak[1], samples=len(idle.data["connections"])))
    claims = _outcomes(_requests(records, "claim", idle.window))
    result.notes.append(f"idle {wall:.0f} s: /api/health {len(idle.data['health_ms'])} answered, failures "
                        f"{health_fail or 'none'}; heartbeats {len(beats)} sent ({outcomes}); claims started "
                        f"{sum(claims.values())} ({claims}); {starved} of {len(workers)} workers went over "
                        f"{LEASE_S:.0f} s without an answered heartbeat")
    result.notes.append(cpu_note("idle fleet", idle.cpu))


def burst_figures(result: ScenarioResult, records: dict[str, Any], burst: Phase) -> None:
    """Completion, leases lost and double runs of the burst, and its heartbeats."""
    data = burst.data
    twice_by_swarm = len(_run_twice(records["jobs"]))
    if data["span_s"]:
        result.figures.append(figure("scale", f"burst of {data['submitted']}: first submit → last finish",
                                     data["span_s"], "s", **data))
    result.figures += [
        figure("scale", "burst: jobs not succeeded", data["submitted"] - data["succeeded"], "jobs",
               unfinished=data["unfinished"]),
        figure("scale", "burst: leases lost (EXPIRED)", data["leases_lost"], "leases"),
        figure("scale", "burst: jobs run more than once", data["run_more_than_once"], "jobs",
               ran_twice_by_swarm=twice_by_swarm, stale_reports=records["stale_reports"]),
    ]
    beats = _requests(records, "heartbeat", burst.window)
    result.figures += latency_figures("burst: heartbeat", [r[3] for r in beats if r[4] == "ok"])
    result.notes.append(f"burst: {data['jobs']} of {data['submitted']} submitted, {data['succeeded']} succeeded, "
                        f"{data['unfinished']} unfinished at the end; the swarm ran {twice_by_swarm} jobs more "
                        f"than once, {records['stale_reports']} reports came back accepted: false; heartbeats "
                        f"{_outcomes(beats)}")
    result.notes.append(cpu_note("burst", burst.cpu))


def _run_twice(jobs: list[list[int]]) -> set[int]:
    """Job ids the swarm ran more than once (any attempts, any workers)."""
    seen: set[int] = set()
    twice: set[int] = set()
    for job_id, _attempt, _worker in jobs:
        (twice if job_id in seen else seen).add(job_id)
    return twice


def calm_down(fleet: Fleet) -> None:
    """Wait until /api/health answers within a second again (parked claims run out their waits)."""
    deadline = time.monotonic() + CALM_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{fleet.api_url}/api/health", timeout=1.0).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    say(f"  WARNING: the API still did not answer /api/health within 1 s after {CALM_TIMEOUT_S:.0f} s")
