"""Parked claims, and which of them to wake when jobs arrive.

A long-polling claim that found nothing parks here (a :class:`Waiter`: a flag, no database
connection, no query) until it is worth claiming again. Waking every parked claim on every
arrival would have a fleet of idle workers stampede the database for each job, so the hub
wakes only as many as there is work for:

- ``NOTIFY skyfleet_jobs, '<type>:<count>'`` (sent by enqueue, retry, rescue and release in
  their transactions) wakes up to ``count`` waiters of that type, the longest parked first;
- a job scheduled for later (``run_after``) wakes the waiters whose wait ends at its due time,
  but only one of them claims (:meth:`WakeHub.take_due_turn`); a due claim that comes back
  full wakes two more, so a batch falling due at once fans out in a few round trips;
- a waiter woken but leaving without having claimed since (its request was answered with
  jobs from an earlier pass, or it ran out its wait) passes its wake on to another waiter;
- a drain wakes the drained worker's waiters (``'worker:<id>'``); a reconnect of the LISTEN
  connection, when notifications may have been missed, wakes everyone.

The flag is raised before the claim that answers it and cleared just before each claim
(:meth:`Waiter.clear`), so a job committed after that claim's snapshot always wakes it again:
no arrival is missed between an empty claim and the wait that follows.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections import deque
from collections.abc import Iterable

#: How many more waiters a due claim that came back full wakes.
FAN_OUT = 2
#: Due turns are remembered this long (a waiter whose timer fired late still finds its turn taken).
DUE_TURN_MEMORY_S = 60.0


class Waiter:
    """One parked claim: the job types it takes and a flag raised when it should claim again."""

    __slots__ = ("_event", "gone", "queued", "types", "woken_for", "worker_id")

    def __init__(self, worker_id: int, types: Iterable[str]) -> None:
        self.worker_id = worker_id
        self.types = frozenset(types)
        #: The type whose arrival raised the flag (None: a drain, a reconnect or a due time).
        self.woken_for: str | None = None
        self.gone = False
        #: The types whose queues hold this waiter now (it is taken off one when woken from it).
        self.queued: set[str] = set()
        self._event = threading.Event()

    @property
    def woken(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        """About to claim: whatever raised the flag so far, this claim answers."""
        self._event.clear()
        self.woken_for = None

    def wait(self, timeout: float) -> bool:
        """Block until woken or ``timeout``; True if woken."""
        return self._event.wait(max(0.0, timeout))

    def wake(self, job_type: str | None) -> None:
        self.woken_for = job_type
        self._event.set()


class WakeHub:
    """The parked claims of this process, queued per job type (oldest first)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str, deque[Waiter]] = {}
        self._by_worker: dict[int, set[Waiter]] = {}
        self._due_turns: dict[tuple[dt.datetime, frozenset[str]], float] = {}
        self._parked = 0
        #: The process is shutting down: parked claims answer now, new ones do not wait.
        self.closed = False

    def park(self, worker_id: int, types: Iterable[str]) -> Waiter:
        """Register a claim before its first look at the queue; :meth:`leave` when it answers."""
        waiter = Waiter(worker_id, types)
        with self._lock:
            self._by_worker.setdefault(worker_id, set()).add(waiter)
            self._parked += 1
            self._enqueue(waiter)
        return waiter

    def requeue(self, waiter: Waiter) -> None:
        """Back in line for every type (after an empty claim, before waiting again)."""
        with self._lock:
            self._enqueue(waiter)

    def _enqueue(self, waiter: Waiter) -> None:
        for job_type in waiter.types - waiter.queued:
            self._queues.setdefault(job_type, deque()).append(waiter)
            waiter.queued.add(job_type)

    def leave(self, waiter: Waiter) -> None:
        """The claim answered. A wake it did not act on goes to another waiter."""
        with self._lock:
            if waiter.gone:
                return
            waiter.gone = True
            self._parked -= 1
            for job_type in waiter.queued:
                line = self._queues.get(job_type)
                if line is not None:
                    line.remove(waiter)
                    if not line:
                        del self._queues[job_type]
            waiter.queued.clear()
            mine = self._by_worker.get(waiter.worker_id)
            if mine is not None:
                mine.discard(waiter)
                if not mine:
                    del self._by_worker[waiter.worker_id]
            passed_on = waiter.woken_for if waiter.woken else None
        if passed_on is not None:
            self.wake(passed_on, 1)

    def wake(self, job_type: str, count: int = 1) -> int:
        """Wake up to ``count`` waiters that take ``job_type``; how many were woken."""
        woken = 0
        with self._lock:
            line = self._queues.get(job_type)
            while line and woken < count:
                waiter = line.popleft()
                waiter.queued.discard(job_type)
                if waiter.gone or waiter.woken:
                    continue
                waiter.wake(job_type)
                woken += 1
            if line is not None and not line:
                del self._queues[job_type]
        return woken

    def wake_worker(self, worker_id: int) -> None:
        """Wake the claims of one worker (it was drained, or told something)."""
        with self._lock:
            waiters = list(self._by_worker.get(worker_id, ()))
        for waiter in waiters:
            waiter.wake(None)

    def close(self) -> None:
        """Shutting down: answer every parked claim now (empty), and let no new one wait."""
        self.closed = True
        self.wake_all()

    def wake_all(self) -> None:
        """Wake every parked claim (notifications may have been missed)."""
        with self._lock:
            waiters = [w for mine in self._by_worker.values() for w in mine]
        for waiter in waiters:
            waiter.wake(None)

    def take_due_turn(self, waiter: Waiter, due_at: dt.datetime, now: float) -> bool:
        """True for the first waiter of these types to reach ``due_at``: it claims, the others wait on."""
        key = (due_at, waiter.types)
        with self._lock:
            if len(self._due_turns) > 1000:
                self._due_turns = {k: t for k, t in self._due_turns.items() if now - t < DUE_TURN_MEMORY_S}
            if key in self._due_turns:
                return False
            self._due_turns[key] = now
            return True

    def parked(self) -> int:
        """How many claims are parked in this process now."""
        with self._lock:
            return self._parked

    def dispatch(self, payload: str) -> None:
        """A ``skyfleet_jobs`` notification: ``<type>:<count>``, ``<type>`` or ``worker:<id>``."""
        name, _, count = payload.rpartition(":") if ":" in payload else (payload, "", "1")
        if name == "worker":
            try:
                self.wake_worker(int(count))
            except ValueError:
                pass
            return
        try:
            self.wake(name, max(1, int(count)))
        except ValueError:  # not a count: at least one claim looks
            self.wake(name, 1)
