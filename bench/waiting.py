"""Waiting: for a condition to hold, and for the workers to drain the queue."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

from bench.clients import Db
from bench.errors import BenchError
from bench.figures import say

POLL_S = 0.05
STALL_TIMEOUT_S = 60.0

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout_s: float, what: str, interval_s: float = POLL_S) -> T:
    """Call ``probe`` every ``interval_s`` until it returns something truthy; BenchError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)


def active_jobs(db: Db) -> int:
    """Jobs still PENDING or IN_PROGRESS (an exact count: a scan of the table or of an index)."""
    return int(db.value("SELECT count(*) FROM jobs WHERE status IN ('PENDING', 'IN_PROGRESS')"))


def results_stored(db: Db) -> int:
    """How many attempts ended since the last reset (noop jobs: one each), read from the id sequence.

    O(1), where counting rows scans the table (10–20 ms with 50k jobs, every 50 ms, on the
    very server being measured). It overcounts if a report transaction rolled back, which is
    why :func:`wait_drained` confirms with :func:`active_jobs` at the end.
    """
    return int(db.value("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM job_attempts_id_seq"))


def wait_drained(db: Db, procs: list[subprocess.Popen[bytes]], what: str) -> None:
    """Return once every job has finished (noop jobs: one result each); polls every 50 ms."""
    expected = int(db.value("SELECT count(*) FROM jobs"))
    poll_until_zero(procs, what, lambda: expected - results_stored(db))
    if active_jobs(db):  # a report rolled back and left a gap in the sequence: count exactly
        poll_until_zero(procs, what, lambda: active_jobs(db))


def poll_until_zero(procs: list[subprocess.Popen[bytes]], what: str, left: Callable[[], int]) -> None:
    """Call ``left`` every 50 ms until it is 0 or less.

    BenchError when it has not moved for STALL_TIMEOUT_S or every worker has exited.
    """
    remaining = left()
    moved_at = reported_at = time.monotonic()
    while remaining > 0:
        time.sleep(POLL_S)
        now_remaining, now = left(), time.monotonic()
        if now_remaining != remaining:
            remaining, moved_at = now_remaining, now
        elif now - moved_at > STALL_TIMEOUT_S:
            raise BenchError(f"{what}: {remaining:,} jobs unfinished, none for {STALL_TIMEOUT_S:.0f} s")
        if all(p.poll() is not None for p in procs):
            raise BenchError(f"{what}: every worker exited with {remaining:,} jobs unfinished")
        if now - reported_at >= 5.0 and remaining > 0:
            say(f"    … {remaining:,} jobs to go")
            reported_at = now
