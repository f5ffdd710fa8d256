"""The long-polling claim around the queue engine, and the worker protocol's messages to and from it."""

from __future__ import annotations

import datetime as dt
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from api.context import AppContext
from api.errors import StaleAttempt
from api.queue.leases import (
    Held,
    Report,
    ReportOutcome,
    claim_jobs,
    next_due_at,
    release_attempts,
    report_attempts,
)
from api.queue.wakeup import FAN_OUT, Waiter
from api.queue.workers import WorkerRow, touch_worker
from jobtypes import protocol

#: Long polls at least this long are shortened at random (see :func:`long_poll_claim`).
JITTER_FROM_S = 5.0


def held_from(jobs: list[protocol.RunningJob]) -> list[Held]:
    """The attempts a worker says it holds → the queue engine's."""
    return [Held(job_id=j.job_id, token=str(j.token), attempt=j.attempt) for j in jobs]


def reports_from(reports: list[protocol.Report]) -> list[Report]:
    """The worker's reports → the queue engine's."""
    return [
        Report(
            job_id=r.job_id, token=str(r.token), attempt=r.attempt, outcome=r.status, result_payload=r.result_payload,
            storage_uri=r.storage_uri, files=None if r.files is None else [protocol.dump(f) for f in r.files],
            error=None if r.error is None else {"code": r.error.code, "message": r.error.message},
            permanent=bool(r.error and r.error.permanent),
        )
        for r in reports
    ]


_STALE = {"code": StaleAttempt.code, "message": (StaleAttempt.__doc__ or "").strip()}


def outcome_message(outcome: ReportOutcome) -> protocol.Outcome:
    return protocol.Outcome(job_id=outcome.job_id, attempt=outcome.attempt, token=uuid.UUID(outcome.token),
                            accepted=outcome.accepted,
                            status=outcome.status, error=None if outcome.accepted else _STALE)


@dataclass(frozen=True)
class ClaimAnswer:
    jobs: list[protocol.ClaimedJob]
    drain: bool
    reported: list[ReportOutcome]


def long_poll_claim(c: AppContext, worker_id: int, user_id: int, types: list[str] | None,
                    max_jobs: int, wait_s: float, reports: list[Report] | None = None,
                    on_reported: Callable[[list[ReportOutcome]], None] | None = None,
                    client_gone: Callable[[], bool] = lambda: False) -> ClaimAnswer:
    """Record ``reports`` (if any), then claim up to ``max_jobs``, waiting up to ``wait_s`` for work.

    The reports and the first claim share one transaction, so a busy worker finishes a job
    and takes the next in one round trip and one commit. While it waits the claim holds no
    database connection and runs no query: it is parked on the process's
    :class:`~api.queue.wakeup.WakeHub` until jobs of its types arrive (as many claims wake as
    there are jobs), the earliest scheduled one becomes due, its worker is drained, or its
    wait ends. The open claim is how an idle worker shows it is alive (its first pass records
    that): an idle worker sends nothing else. ``client_gone`` says whether the worker hung up
    (a killed worker's parked claim must not take a job). ``on_reported`` hears of the
    reports as soon as they are committed, not when the wait ends.
    """
    settings = c.settings
    c.listener.ensure_started()
    limit = min(max_jobs, settings.max_claim_batch)
    wait_s = min(wait_s, settings.max_claim_wait_s)
    if wait_s >= JITTER_FROM_S:
        # Up to a quarter shorter at random: a fleet started together (or all answered at once by
        # a restart) would otherwise come back in lock-step, a thousand claims in the same second.
        wait_s *= random.uniform(0.75, 1.0)
    deadline = time.monotonic() + wait_s
    claim_types: list[str] = []
    reported: list[ReportOutcome] = []
    waiter: Waiter | None = None
    started_at: dt.datetime | None = None
    due_turn: bool | None = False
    announce = True
    try:
        while True:
            with c.claim_transaction() as conn:
                # Every pass re-reads the worker: one drained while it waited must not get work.
                # Reports commit durably; a claim alone asynchronously (its jobs would run again).
                worker = touch_worker(conn, worker_id, user_id, seen=waiter is None, claiming=True,
                                      durable=bool(reports) and waiter is None)
                if waiter is None:
                    started_at = worker.read_at
                    if reports:
                        reported = report_attempts(conn, worker_id, reports)
                    claim_types = sorted(set(types) & set(worker.job_types)) if types else worker.job_types
                    # Parked before the claim's snapshot: a job committed after it wakes this claim.
                    waiter = c.hub.park(worker_id, claim_types)
                jobs: list[protocol.ClaimedJob] = []
                due_at = None
                if claim_types and not worker.draining and not _lapsed_since(worker, started_at) and not client_gone():
                    waiter.clear()
                    jobs = claim_jobs(conn, worker_id, claim_types, limit, settings.lease_s)
                    if not jobs and deadline > time.monotonic():
                        due_at = next_due_at(conn, claim_types)
            if announce:  # once, after the commit that recorded the reports
                announce = False
                if on_reported is not None and reported:
                    on_reported(reported)
            if worker.draining or not claim_types:
                return ClaimAnswer([], worker.draining, reported)
            if jobs:
                if client_gone():
                    # The worker gave up on this request (its timeout, or it died) while the claim
                    # ran: nobody would run these jobs until their leases lapsed. Hand them back.
                    _give_back(c, worker_id, jobs)
                    return ClaimAnswer([], False, reported)
                if due_turn and len(jobs) >= limit:  # more may have fallen due at once
                    for job_type in {j.type for j in jobs}:
                        c.hub.wake(job_type, FAN_OUT)
                return ClaimAnswer(jobs, False, reported)
            if (time.monotonic() >= deadline or c.hub.closed or _lapsed_since(worker, started_at)
                    or client_gone()):
                return ClaimAnswer([], False, reported)
            c.hub.requeue(waiter)
            due_turn = _park(c, waiter, deadline, due_at)
            if due_turn is None:
                return ClaimAnswer([], False, reported)
    finally:
        if waiter is not None:
            c.hub.leave(waiter)


def _give_back(c: AppContext, worker_id: int, jobs: list[protocol.ClaimedJob]) -> None:
    """Release jobs claimed for a client that is gone (not counted as attempts)."""
    with c.claim_transaction() as conn:
        release_attempts(conn, worker_id, [Held(j.job_id, str(j.token), j.attempt) for j in jobs])


def _lapsed_since(worker: WorkerRow, started_at: dt.datetime | None) -> bool:
    """A lease of the worker lapsed after this claim began: the worker stopped heartbeating
    while the claim was parked, so it is likely dead, its claim left behind (the API cannot
    see a client go). A job given to it would lapse again, at the cost of an attempt; a
    living worker just claims again."""
    return worker.lapsed_at is not None and started_at is not None and worker.lapsed_at >= started_at


def _park(c: AppContext, waiter: Waiter, deadline: float, due_at: dt.datetime | None) -> bool | None:
    """Wait for a reason to claim again: True (this claim's turn at a due job), False (woken,
    or a fallback poll while notifications are down), None (the wait is over)."""
    due_by = None
    if due_at is not None:
        due_by = time.monotonic() + max(0.0, (due_at - dt.datetime.now(dt.UTC)).total_seconds())
    while True:
        now = time.monotonic()
        until = deadline if due_by is None else min(deadline, due_by)
        polling = not c.listener.connected.is_set()
        if polling:  # no notification can come: look again now and then
            until = min(until, now + c.settings.claim_poll_fallback_s * random.uniform(0.5, 1.5))
        if waiter.wait(until - now):
            return None if c.hub.closed else False
        now = time.monotonic()
        if due_by is not None and now >= due_by and due_at is not None:
            if c.hub.take_due_turn(waiter, due_at, now):
                return True
            due_by = None  # another claim of these types takes it; wait on for a wake
            continue
        if now >= deadline:
            return None
        if polling:
            return False
