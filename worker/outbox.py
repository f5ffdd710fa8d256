"""Finished attempts on their way to the API, and what becomes of a batch the API cannot process.

A result is the worker's most valuable state: it stays here, its lease heartbeated, until the
API has accepted it or called it stale. An outage only delays it: the client retries through
what is transient, and a batch still unsent when the retrying ends is put back. A batch the
API fails on (a 500, an unexpected 4xx) is another matter: retried forever, it would wedge
the worker, its heartbeats keeping alive the leases of jobs that never end. Such a batch gets
``REPORT_TRIES`` tries, then is split in halves, each with tries of its own, until the one
report that still fails is dropped: logged at ERROR, its lease left to lapse, so that the
API's rescuer retries the job or times it out.

Most reports ride on the next claim (one round trip for a report and the next job). One that
was on a claim the API failed on is *suspect*: it then goes only by the results endpoint,
where the tries and splitting above apply, so it cannot fail every claim after it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from skyfleet_client.errors import CredentialsRefused, Rejected, Unavailable
from skyfleet_client.retry import Backoff

from jobtypes import protocol
from worker.client import RETRY_BASE_S, RETRY_CAP_S

log = logging.getLogger(__name__)

#: How long a finished job's report waits for the next claim to carry it before it is sent alone.
REPORT_DELAY_S = 0.05
#: Tries a batch gets when the API fails on it, before it is split (or, alone, dropped).
REPORT_TRIES = 3
#: Rejections about the worker's standing (a token refused even fresh), not about the batch:
#: nothing is dropped for them, the reports wait and are sent again later.
NOT_THE_BATCH = frozenset({401, 403})

#: Sends reports to the API, returns its outcomes; raises Rejected, Unavailable or CredentialsRefused.
Send = Callable[[list[protocol.Report]], list[protocol.Outcome]]
#: Told of reports that are done with (accepted, stale or dropped): their leases are no longer the worker's.
Forget = Callable[[list[protocol.Report]], None]


@dataclass
class Pending:
    """A report waiting to be taken by the API."""

    report: protocol.Report
    #: It was on a request the API failed on: send it only by itself (see the module's docstring).
    suspect: bool = False

    @property
    def key(self) -> tuple[int, int, uuid.UUID]:
        return self.report.job_id, self.report.attempt, self.report.token


class Outbox:
    """The reports of finished attempts, from the job's end until the API has answered for them."""

    def __init__(self, send: Send, forget: Forget, batch_size: int, backoff_base_s: float = RETRY_BASE_S) -> None:
        self._send = send
        self._forget = forget
        self.batch_size = batch_size
        self._backoff_base_s = backoff_base_s
        self._lock = threading.Lock()
        self._waiting: list[Pending] = []
        self._in_flight = 0
        #: Set while reports are waiting.
        self.ready = threading.Event()

    def put(self, report: protocol.Report) -> None:
        with self._lock:
            self._waiting.append(Pending(report))
            self.ready.set()

    def take(self, for_claim: bool = False) -> list[Pending]:
        """A batch of waiting reports, oldest first (``for_claim``: none that is suspect)."""
        with self._lock:
            batch = [p for p in self._waiting if not (for_claim and p.suspect)][: self.batch_size]
            taken = {id(p) for p in batch}
            self._waiting = [p for p in self._waiting if id(p) not in taken]
            if not self._waiting:
                self.ready.clear()
            self._in_flight += len(batch)
        return batch

    def give_back(self, batch: list[Pending], suspect: bool = False) -> None:
        """A request carrying ``batch`` got no answer for it: it waits again, ahead of newer reports."""
        if not batch:
            return
        with self._lock:
            for pending in batch:
                pending.suspect = pending.suspect or suspect
            self._waiting[:0] = batch
            self._in_flight -= len(batch)
            self.ready.set()

    def settle(self, batch: list[Pending], outcomes: Iterable[protocol.Outcome]) -> None:
        """The API answered for ``batch``: accepted or stale, these reports are done."""
        accepted = {o.token for o in outcomes if o.accepted}
        for pending in batch:
            if pending.report.token not in accepted:
                job_id, attempt, _ = pending.key
                log.warning("result for job %s attempt %s was not accepted (stale); dropped", job_id, attempt,
                            extra={"job_id": job_id, "attempt": attempt})
        self._done(batch)

    def idle(self) -> bool:
        """Nothing waiting and nothing on its way."""
        with self._lock:
            return not self._waiting and not self._in_flight

    def run(self, refused: Callable[[CredentialsRefused], None]) -> None:
        """The reporter thread: sends what the claim loop has not carried within REPORT_DELAY_S
        (it is long-polling), backing off while nothing gets through."""
        backoff = Backoff(self._backoff_base_s, RETRY_CAP_S)
        while True:
            self.ready.wait()
            time.sleep(REPORT_DELAY_S)
            batch = self.take()
            if not batch:
                continue
            try:
                delivered = self.deliver(batch)
            except CredentialsRefused as exc:
                refused(exc)
                delivered = False
            except Exception:  # the loop must go on: its reports are the worker's finished work
                log.exception("sending reports failed")
                delivered = False
            if delivered:
                backoff.reset()
            else:
                time.sleep(backoff.next_delay())

    def flush(self, within_s: float) -> None:
        """At shutdown: send everything still waiting, for at most ``within_s``."""
        deadline = time.monotonic() + within_s
        backoff = Backoff(self._backoff_base_s, RETRY_CAP_S)
        while time.monotonic() < deadline and not self.idle():
            batch = self.take()
            if not batch:
                time.sleep(REPORT_DELAY_S)  # the reporter has them on their way
            elif not self.deliver(batch):
                time.sleep(min(backoff.next_delay(), max(0.0, deadline - time.monotonic())))

    def deliver(self, batch: list[Pending]) -> bool:
        """Send ``batch`` by the results endpoint until the API has answered for every report.

        A part the API keeps failing on is split; a single report, dropped. False when the
        client gave up first (an outage while stopping) or the API refused the worker: what
        was not answered waits again.
        """
        parts = [batch]
        try:
            while parts:
                part = parts[-1]
                try:
                    outcomes = self._send_with_tries(part)
                except Rejected as exc:
                    if exc.status in NOT_THE_BATCH:
                        log.warning("results refused: %s; they wait", exc)
                        return False
                    parts.pop()
                    if len(part) == 1:
                        self._drop(part[0], exc)
                    else:
                        half = len(part) // 2
                        parts += [part[half:], part[:half]]  # the older half goes first
                    continue
                parts.pop()
                self.settle(part, outcomes)
            return True
        except Unavailable:
            return False
        finally:
            self.give_back([p for part in parts for p in part])

    def _send_with_tries(self, part: list[Pending]) -> list[protocol.Outcome]:
        backoff = Backoff(self._backoff_base_s, RETRY_CAP_S)
        tries = 1
        while True:
            try:
                return self._send([p.report for p in part])
            except Rejected as exc:
                if tries >= REPORT_TRIES or exc.status in NOT_THE_BATCH:
                    raise
                tries += 1
                delay = backoff.next_delay()
                log.warning("the API failed on a batch of %d report(s) (%s); try %d of %d in %.1f s",
                            len(part), exc, tries, REPORT_TRIES, delay)
                time.sleep(delay)

    def _drop(self, pending: Pending, exc: Rejected) -> None:
        job_id, attempt, _ = pending.key
        log.error("job %s attempt %s: the API cannot process its report (%s); dropped, its lease will lapse",
                  job_id, attempt, exc, extra={"job_id": job_id, "attempt": attempt})
        self._done([pending])

    def _done(self, batch: list[Pending]) -> None:
        with self._lock:
            self._in_flight -= len(batch)
        self._forget([p.report for p in batch])
