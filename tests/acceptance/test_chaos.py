"""Fault injection: a real fleet drains its queue while its workers, the API and PostgreSQL are killed.

The same runner as ``make chaos`` (``bench/chaos``), at a size that takes about a minute: its
own embedded PostgreSQL (restarting it disturbs no other test), 1,000 half-second ``sleep``
jobs on 4 workers × 4, and, over the first ~22 s, a worker SIGKILLed every 3 s (every fourth
one SIGTERMed instead), each replaced a second later, one SIGKILL of the API (down 3 s) and
one immediate-mode stop of PostgreSQL (down 3 s), with 2 s leases and 10 s access tokens.
"""

from __future__ import annotations

from pathlib import Path

from bench.chaos.run import ChaosOptions, run_chaos

OPTIONS = ChaosOptions(jobs=1000, workers=4, concurrency=4, job_s=0.5, batch_size=500, kill_every_s=3.0,
                       sigterm_every=4, api_restarts=1, db_restarts=1, api_down_s=3.0, db_down_s=3.0)


def test_no_job_lost_or_accepted_twice_and_every_worker_recovers(tmp_path: Path) -> None:
    report = run_chaos(OPTIONS, tmp_path / "logs")
    summary = "\n".join(report.lines())
    print(summary)

    # Every fault was injected, and while there was still work to do.
    assert report.count("kill-worker") >= 5, summary
    assert report.count("term-worker") >= 1, summary
    assert report.count("api-down") == report.count("api-up") == 1, summary
    assert report.count("db-down") == report.count("db-up") == 1, summary
    assert report.drain_after_last_fault_s is not None and report.drain_after_last_fault_s > 0, summary

    assert not report.stalled, summary
    assert report.lost == 0, summary
    assert report.twice == 0, summary
    # Workers ride out the outages by themselves: none quits, each works again afterwards, and the
    # ones we SIGTERM finish and exit cleanly.
    assert report.exited_by_itself == [], summary
    assert report.not_recovered == [], summary
    assert report.bad_stops == [], summary
