"""The chaos run: submit the jobs, inject the faults on a schedule, wait for the drain, tally.

The schedule is fixed by the options (and the random choice of victims by ``seed``): a worker
fault every ``kill_every_s`` — a SIGKILL of its whole process group, every ``sigterm_every``-th
one a SIGTERM instead — each followed by a replacement ``replace_after_s`` later, as ECS would
start one; and the API and PostgreSQL outages spread evenly over the fault window, alternating.
The window defaults to 70 % of the time the jobs need at full capacity, so every fault lands
while work is left, however fast the machine.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.chaos.fleet import ChaosFleet, FleetSettings, Proc
from bench.chaos.tally import ChaosReport, Fault, tally
from bench.clients import RUN_ID, Api, in_batches, login, post_parallel
from bench.errors import BenchError
from bench.figures import say
from bench.fleet import ADMIN_EMAIL, ADMIN_PASSWORD
from bench.waiting import wait_for

TICK_S = 0.1
POLL_S = 0.5
PROGRESS_EVERY_S = 5.0
START_TIMEOUT_S = 90.0
#: A SIGTERMed worker finishes its running jobs (fractions of a second) and exits.
STOP_WAIT_S = 30.0


@dataclass(frozen=True)
class ChaosOptions:
    """Sizes and the fault schedule (the ``make chaos`` defaults; the test passes smaller ones)."""

    jobs: int = 10_000
    workers: int = 6
    concurrency: int = 8
    #: Each job is a ``sleep`` of this long (so the run outlasts the faults on any machine).
    job_s: float = 0.4
    batch_size: int = 1000
    kill_every_s: float = 3.0
    #: Every n-th worker fault is a SIGTERM (0: none).
    sigterm_every: int = 4
    api_restarts: int = 2
    db_restarts: int = 2
    api_down_s: float = 3.0
    db_down_s: float = 3.0
    #: Faults happen during this many seconds after the workers started (None: 70 % of the ideal run).
    chaos_s: float | None = None
    replace_after_s: float = 1.0
    lease_s: float = 2.0
    heartbeat_interval_s: float = 0.5
    rescue_interval_s: float = 0.25
    #: Short, so that workers must renew their tokens during the outages.
    token_ttl_s: int = 10
    #: Give up when no job has finished for this long after the last fault.
    stall_s: float = 60.0
    seed: int | None = None

    def window_s(self) -> float:
        """The fault window."""
        if self.chaos_s is not None:
            return self.chaos_s
        return 0.7 * self.jobs * self.job_s / (self.workers * self.concurrency)


@dataclass(frozen=True)
class Event:
    """A scheduled fault (or the end of an outage), ``at_s`` seconds after the workers started."""

    at_s: float
    kind: str  # kill-worker, term-worker, api-down, api-up, db-down, db-up


def schedule(opts: ChaosOptions) -> list[Event]:
    """Every event of the run, in order."""
    window = opts.window_s()
    events = []
    count = int(window // opts.kill_every_s) if opts.kill_every_s > 0 else 0
    for n in range(1, count + 1):
        term = opts.sigterm_every and n % opts.sigterm_every == 0
        events.append(Event(n * opts.kill_every_s, "term-worker" if term else "kill-worker"))
    outages = [what for i in range(max(opts.api_restarts, opts.db_restarts))
               for what, n in (("api", opts.api_restarts), ("db", opts.db_restarts)) if i < n]
    for k, what in enumerate(outages):
        at = window * (k + 1) / (len(outages) + 1)
        down = opts.api_down_s if what == "api" else opts.db_down_s
        events += [Event(at, f"{what}-down"), Event(at + down, f"{what}-up")]
    return sorted(events, key=lambda e: e.at_s)


@dataclass
class Injector:
    """Applies the schedule to the fleet and watches it until the queue is drained."""

    fleet: ChaosFleet
    opts: ChaosOptions
    log: Callable[[str], None]
    rng: random.Random
    faults: list[Fault] = field(default_factory=list)
    #: (monotonic due time, role) of each process still to be started again.
    replacements: list[tuple[float, str]] = field(default_factory=list)
    api_down: bool = False
    stalled: bool = False
    started: float = 0.0
    started_wall: float = 0.0
    _conn: psycopg.Connection[Any] | None = None
    #: PostgreSQL's restart (crash recovery takes seconds; the schedule goes on meanwhile).
    _db_restart: threading.Thread | None = None
    _db_restart_error: BaseException | None = None

    def run(self) -> None:
        """Inject every fault, then wait until no job is PENDING or IN_PROGRESS (or it stalls)."""
        events = deque(schedule(self.opts))
        self.started, self.started_wall = time.monotonic(), time.time()
        active, moved_at, polled_at, reported_at = None, self.started, 0.0, self.started
        while True:
            now = time.monotonic()
            self._watch_exits(now)
            while events and events[0].at_s <= now - self.started:
                self._apply(events.popleft())
            self._start_replacements(now)
            self._watch_db_restart()
            if now - polled_at >= POLL_S:
                polled_at, count = now, self._active_jobs()
                if count is not None and count != active:
                    active, moved_at = count, now
            if not events and active == 0:
                return
            if not events and now - moved_at > self.opts.stall_s:
                self.log(f"  stalled: {active} jobs unfinished, none for {self.opts.stall_s:.0f} s")
                self.stalled = True
                return
            if now - reported_at >= PROGRESS_EVERY_S:
                reported_at = now
                self.log(f"  +{now - self.started:5.1f} s  {'?' if active is None else f'{active:,}'} jobs left, "
                         f"{len(self.fleet.live_workers())} workers")
            time.sleep(TICK_S)

    def _apply(self, event: Event) -> None:
        fleet, kind = self.fleet, event.kind
        detail, at, began = "", time.time(), time.monotonic()
        if kind in ("kill-worker", "term-worker"):
            victims = fleet.live_workers()
            if not victims:
                self._record(kind, "no live worker to stop")
                return
            victim = self.rng.choice(sorted(victims, key=lambda p: p.name))
            (fleet.kill if kind == "kill-worker" else fleet.terminate)(victim)
            self.replacements.append((time.monotonic() + self.opts.replace_after_s, "worker"))
            detail = victim.name
        elif kind == "api-down":
            self.api_down = True
            if fleet.api is not None:
                fleet.kill(fleet.api)
        elif kind == "api-up":
            self.api_down = False
            fleet.start_api()
        elif kind == "db-down":
            self.disconnect()
            fleet.crash_database()
        elif kind == "db-up":
            self._db_restart = threading.Thread(target=self._restart_database, args=(began,), daemon=True)
            self._db_restart.start()
        self._record(kind, detail, at)

    def _restart_database(self, began: float) -> None:
        try:
            self.fleet.restart_database()  # returns once it accepts connections (crash recovery done)
            self.log(f"  +{time.monotonic() - self.started:5.1f} s  PostgreSQL accepts connections again "
                     f"({time.monotonic() - began:.1f} s after its start)")
        except BaseException as exc:  # noqa: BLE001 — raised again in the injector's thread
            self._db_restart_error = exc

    def _watch_db_restart(self) -> None:
        if self._db_restart_error is not None:
            raise BenchError(f"PostgreSQL did not start again: {self._db_restart_error}")

    def _record(self, kind: str, detail: str, at: float | None = None) -> None:
        at = time.time() if at is None else at
        fault = Fault(at, at - self.started_wall, kind, detail)
        self.faults.append(fault)
        self.log(f"  +{fault.at_s:5.1f} s  {kind} {detail}".rstrip())

    def _watch_exits(self, now: float) -> None:
        """Record every exit; replace a worker (or restart the API) that went by itself, as ECS would."""
        for proc in self.fleet.reap():
            self._report_exit(proc)
            if proc.signalled is None:
                self.replacements.append((now + self.opts.replace_after_s, proc.role))

    def _report_exit(self, proc: Proc) -> None:
        how = "by itself" if proc.signalled is None else f"after {proc.signalled}"
        if proc.signalled != "SIGKILL":
            self.log(f"  +{time.monotonic() - self.started:5.1f} s  {proc.name} exited {how} "
                     f"(code {proc.exit_code}); see {self.fleet.log_dir / (proc.name + '.log')}")

    def _start_replacements(self, now: float) -> None:
        due = [role for t, role in self.replacements if t <= now]
        self.replacements = [(t, role) for t, role in self.replacements if t > now]
        for role in due:
            if role == "worker":
                self.fleet.start_worker()
            elif not self.api_down:  # else the scheduled api-up starts it
                self.fleet.start_api()

    def _active_jobs(self) -> int | None:
        """Jobs PENDING or IN_PROGRESS; None while the database is unreachable."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = self.fleet.connect()
            row = self._conn.execute(
                "SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS')").fetchone()
            return None if row is None else int(row[0])
        except psycopg.OperationalError:
            self.disconnect()
            return None

    def close(self) -> None:
        """Wait for a restart of PostgreSQL still under way; close the injector's connection."""
        if self._db_restart is not None:
            self._db_restart.join()
        self.disconnect()

    def disconnect(self) -> None:
        """Close the injector's own database connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def submit_jobs(fleet: ChaosFleet, opts: ChaosOptions) -> None:
    """Every job, through ``POST /api/jobs/batch`` (distinct inputs, no result reuse)."""
    api = Api(fleet.api_url, login(fleet.api_url, ADMIN_EMAIL, ADMIN_PASSWORD))
    try:
        jobs = [{"type": "sleep", "input_payload": {"seconds": opts.job_s, "tag": f"{RUN_ID}-chaos-{i}"},
                 "cache": False} for i in range(opts.jobs)]
        post_parallel(api, "/api/jobs/batch", [{"jobs": chunk} for chunk in in_batches(jobs, opts.batch_size)], 2)
    finally:
        api.close()


def _registered(fleet: ChaosFleet, procs: list[Proc]) -> bool:
    dead = [p for p in procs if p.popen.poll() is not None]
    if dead:
        raise BenchError(f"worker {dead[0].name} exited during start-up; see {fleet.log_dir}")
    with fleet.connect() as conn:
        row = conn.execute("SELECT count(*) FROM workers WHERE stopped_at IS NULL AND name = ANY(%s)",
                           ([p.name for p in procs],)).fetchone()
    return row is not None and row[0] == len(procs)


def _wait_stopped(fleet: ChaosFleet, timeout_s: float) -> None:
    """Give the workers we SIGTERMed time to finish, so that how they exited is known."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.signalled and p.alive for p in fleet.procs):
        fleet.reap()
        time.sleep(TICK_S)


def run_chaos(opts: ChaosOptions, log_dir: Path, log: Callable[[str], None] = say,
              before_cleanup: Callable[[], None] | None = None) -> ChaosReport:
    """Start a fleet (its processes' logs in ``log_dir``), run the jobs through the faults, return the
    figures; stop it all.

    ``before_cleanup`` runs before the fleet is stopped (``make chaos`` ignores Ctrl-C from then on).
    """
    settings = FleetSettings(opts.concurrency, opts.lease_s, opts.heartbeat_interval_s, opts.rescue_interval_s,
                             opts.token_ttl_s)
    fleet = ChaosFleet(log_dir, settings)
    try:
        log(f"chaos: starting a fleet in {fleet.run_dir} (logs in {fleet.log_dir}) …")
        fleet.start_database()
        api = fleet.start_api()
        wait_for(lambda: api.popen.poll() is None and fleet.api_healthy(), START_TIMEOUT_S, "the API to start",
                 interval_s=0.2)
        submit_jobs(fleet, opts)
        log(f"  {opts.jobs:,} sleep jobs of {opts.job_s} s submitted; starting {opts.workers} workers "
            f"× {opts.concurrency} …")
        first = [fleet.start_worker() for _ in range(opts.workers)]
        wait_for(lambda: _registered(fleet, first), START_TIMEOUT_S, "the workers to register", interval_s=0.2)
        seed = random.randrange(1 << 30) if opts.seed is None else opts.seed
        log(f"  faults over {opts.window_s():.0f} s: a worker every {opts.kill_every_s} s, "
            f"{opts.api_restarts} API and {opts.db_restarts} PostgreSQL restarts (seed {seed})")
        injector = Injector(fleet, opts, log, random.Random(seed))
        try:
            injector.run()
        finally:
            injector.close()
        _wait_stopped(fleet, STOP_WAIT_S)
        return tally(fleet, opts.jobs, injector.faults, injector.started_wall, injector.stalled)
    finally:
        if before_cleanup is not None:
            before_cleanup()
        log("  stopping the fleet …")
        fleet.close()
