"""The figures of a chaos run, read from the database once it drained, and their printout.

*Lost*: jobs that did not end SUCCEEDED. *Completed twice*: jobs whose result was accepted
more than once — more than one attempt with outcome SUCCEEDED, or more than one
``job_attempts`` row that SUCCEEDED (a job that merely *ran* twice, because its lease lapsed, is counted in
the attempts, not here). *Rescue delay*: for each attempt whose lease expired, from its
``expires_at`` to the ``created_at`` of the job's next attempt (outages included: a lease that
lapsed while the API was down is rescued when it is back). *Drain after the last fault*: from
the last scheduled event (a kill, or the end of an outage) to the last job's ``finished_at``.
A worker we never signalled must not exit, and must claim work again after the last outage.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from bench.chaos.fleet import ChaosFleet
from bench.figures import percentile

_STATUSES = "SELECT status, count(*) FROM jobs GROUP BY status"
_SUCCEEDED_TWICE = """
    SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE outcome = 'SUCCEEDED'
                          GROUP BY job_id HAVING count(*) > 1) AS x
"""
# The results a job stored: one per succeeded attempt (the table's unique index allows no more).
_RESULTS_TWICE = """
    SELECT count(*) FROM (SELECT job_id FROM job_attempts WHERE result_payload IS NOT NULL
                          GROUP BY job_id HAVING count(*) > 1) AS x
"""
# Attempts per job: the ended ones, and the live one of a job still running.
_ATTEMPTS = """
    SELECT n, count(*) FROM (SELECT j.id, count(a.id) + (j.status = 'IN_PROGRESS')::int AS n FROM jobs j
                             LEFT JOIN job_attempts a ON a.job_id = j.id GROUP BY j.id) AS x
    GROUP BY n ORDER BY n
"""
_OUTCOMES = """
    SELECT outcome, count(*) FROM (SELECT outcome FROM job_attempts
                                   UNION ALL SELECT 'OPEN' FROM jobs WHERE status = 'IN_PROGRESS') AS o
    GROUP BY 1 ORDER BY 2 DESC
"""
# The next attempt's claim: its history row, or the job row while it runs.
_RESCUES = """
    SELECT extract(epoch FROM coalesce(n.started_at, CASE WHEN j.attempt = a.attempt + 1 THEN j.started_at END)
                              - a.lease_expires_at),
           extract(epoch FROM a.ended_at - a.lease_expires_at),
           w.name, extract(epoch FROM a.lease_expires_at)
    FROM job_attempts a
    JOIN jobs j ON j.id = a.job_id
    JOIN workers w ON w.id = a.worker_id
    LEFT JOIN job_attempts n ON n.job_id = a.job_id AND n.attempt = a.attempt + 1
    WHERE a.outcome = 'EXPIRED'
"""
_LAST_FINISHED = "SELECT max(finished_at) FROM jobs"
_CLAIMS_AFTER = """
    SELECT w.name, count(*) FROM (SELECT worker_id, started_at FROM job_attempts
                                  UNION ALL SELECT worker_id, started_at FROM jobs WHERE status = 'IN_PROGRESS') a
    JOIN workers w ON w.id = a.worker_id
    WHERE a.started_at > %s GROUP BY w.name
"""


@dataclass(frozen=True)
class Fault:
    """One event of the schedule as it happened."""

    at: float  # time.time()
    at_s: float  # seconds after the workers started
    kind: str
    detail: str = ""


@dataclass
class ChaosReport:
    """What a chaos run found; :attr:`ok` when nothing was lost, nothing accepted twice, no worker quit."""

    jobs: int
    statuses: dict[str, int]
    completed_twice: int
    results_twice: int
    attempts: dict[int, int]
    outcomes: dict[str, int]
    #: Seconds from an expired lease to the job's next attempt (None: there was none).
    rescue_delays: list[float | None]
    #: Seconds from an expired lease to the rescuer taking the attempt back.
    rescue_lags: list[float]
    #: Expired attempts whose worker was still alive when the lease lapsed (during an outage).
    lapsed_on_live_workers: int
    drain_after_last_fault_s: float | None
    run_s: float
    faults: list[Fault] = field(default_factory=list)
    #: "name (code n)" of each process that exited although we had not signalled it.
    exited_by_itself: list[str] = field(default_factory=list)
    #: SIGTERMed workers that did not exit with code 0.
    bad_stops: list[str] = field(default_factory=list)
    #: Workers that lived through the last outage, were never signalled, and claimed nothing after it.
    not_recovered: list[str] = field(default_factory=list)
    stalled: bool = False

    @property
    def lost(self) -> int:
        """Jobs that did not end SUCCEEDED."""
        return self.jobs - self.statuses.get("SUCCEEDED", 0)

    @property
    def twice(self) -> int:
        """Jobs whose result was accepted more than once, by either count."""
        return max(self.completed_twice, self.results_twice)

    @property
    def ok(self) -> bool:
        """The invariants held."""
        return (self.lost == 0 and self.twice == 0 and not self.exited_by_itself and not self.bad_stops
                and not self.not_recovered and not self.stalled)

    def count(self, kind: str) -> int:
        """How many events of ``kind`` were injected."""
        return sum(1 for f in self.faults if f.kind == kind)

    def lines(self) -> list[str]:
        """The printout."""
        delays = [d for d in self.rescue_delays if d is not None]
        other = {k: v for k, v in self.statuses.items() if k != "SUCCEEDED"}
        rows = [
            ("jobs", f"{self.jobs:,} in {self.run_s:.1f} s ({self.jobs / self.run_s:.0f} jobs/s)"),
            ("faults", (f"{self.count('kill-worker')} worker SIGKILLs, {self.count('term-worker')} SIGTERMs, "
                        f"{self.count('api-down')} API SIGKILLs, {self.count('db-down')} PostgreSQL crashes")),
            ("lost (not SUCCEEDED)", f"{self.lost}" + (f"  {other}" if other else "")),
            ("completed twice (result accepted twice)",
             f"{self.twice}  ({self.completed_twice} by attempts, {self.results_twice} by results)"),
            ("attempts per job", ", ".join(f"{n}: {c:,}" for n, c in self.attempts.items())),
            ("attempt outcomes", ", ".join(f"{k}: {v:,}" for k, v in self.outcomes.items())),
            ("leases expired", (f"{len(self.rescue_delays)} ({self.lapsed_on_live_workers} while their worker lived, "
                                f"{len(self.rescue_delays) - len(delays)} never retried)")),
            ("rescue delay p50 / max (lease expired → next attempt)", _p50_max(delays)),
            ("  of which lease expired → rescued, p50 / max", _p50_max(self.rescue_lags)),
            ("drain time after the last fault",
             "—" if self.drain_after_last_fault_s is None else f"{self.drain_after_last_fault_s:.1f} s"),
            ("workers that exited by themselves", ", ".join(self.exited_by_itself) or "none"),
            ("SIGTERMed workers that did not exit 0", ", ".join(self.bad_stops) or "none"),
            ("workers that did not work again after the last outage", ", ".join(self.not_recovered) or "none"),
        ]
        if self.stalled:
            rows.append(("stalled", "jobs were left unfinished"))
        return [f"  {name:<56} {value}" for name, value in rows]


def _p50_max(values: list[float]) -> str:
    return f"{percentile(values, 50):.2f} / {max(values):.2f} s" if values else "—"


def tally(fleet: ChaosFleet, jobs: int, faults: list[Fault], started: float, stalled: bool) -> ChaosReport:
    """Read the figures from the fleet's database and the record of its processes."""
    with fleet.connect() as conn:
        def pairs(query: str) -> dict[Any, int]:
            return {k: int(v) for k, v in conn.execute(query).fetchall()}

        def value(query: str) -> Any:
            row = conn.execute(query).fetchone()
            return None if row is None else row[0]

        statuses = pairs(_STATUSES)
        rescues = conn.execute(_RESCUES).fetchall()
        last_finished: dt.datetime | None = value(_LAST_FINISHED)
        outages = [f.at for f in faults if f.kind in ("api-up", "db-up")]
        claims_after = pairs_after(conn, max(outages)) if outages else {}
        report = ChaosReport(
            jobs=jobs, statuses=statuses,
            completed_twice=int(value(_SUCCEEDED_TWICE)), results_twice=int(value(_RESULTS_TWICE)),
            attempts=pairs(_ATTEMPTS), outcomes=pairs(_OUTCOMES),
            rescue_delays=[None if delay is None else float(delay) for delay, *_ in rescues],
            rescue_lags=[float(lag) for _delay, lag, *_ in rescues],
            lapsed_on_live_workers=0, drain_after_last_fault_s=None,
            run_s=(last_finished.timestamp() if last_finished else started) - started,
            faults=faults, stalled=stalled,
        )
    killed_at = {p.name: p.signalled_at for p in fleet.procs if p.signalled == "SIGKILL"}
    report.lapsed_on_live_workers = sum(1 for *_, name, expired in rescues
                                        if float(expired) < (killed_at.get(name) or float("inf")))
    if faults and last_finished is not None:
        report.drain_after_last_fault_s = last_finished.timestamp() - faults[-1].at
    workers = [p for p in fleet.procs if p.role == "worker"]
    report.exited_by_itself = [f"{p.name} (code {p.exit_code})" for p in fleet.procs
                               if p.signalled is None and p.exit_code is not None]
    report.bad_stops = [f"{p.name} (code {p.exit_code})" for p in workers
                        if p.signalled == "SIGTERM" and p.exit_code not in (0, None)]
    if outages and claims_after:  # there was work left after the last outage
        report.not_recovered = [p.name for p in workers if p.signalled is None and p.exit_code is None
                                and p.started_at < max(outages) and not claims_after.get(p.name)]
    return report


def pairs_after(conn: Any, at: float) -> dict[str, int]:
    """Attempts claimed after ``at`` (a time.time()), per worker name."""
    since = dt.datetime.fromtimestamp(at, dt.UTC)
    return {name: int(n) for name, n in conn.execute(_CLAIMS_AFTER, (since,)).fetchall()}
