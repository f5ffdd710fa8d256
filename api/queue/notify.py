"""One LISTEN connection per API process, feeding the parked claims and the event streams.

Enqueue, retry, rescue and release send ``NOTIFY skyfleet_jobs, '<type>:<count>'`` in their
transactions, a drain ``'worker:<id>'``; the listener thread hands them to the
:class:`~api.queue.wakeup.WakeHub`, which wakes as many parked claims as there is work for.
While the connection is down, parked claims fall back to polling (``claim_poll_fallback_s``);
after a reconnect every one of them claims again.

The same connection listens on ``skyfleet_job_events``: the ``jobs_changed`` trigger sends
the ids of jobs whose status or progress changed (every claim, progress heartbeat and
result of the fleet). A :class:`JobEventHub` wakes only the event streams following those
ids; with nobody following, a notification costs one dict lookup.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from api.background import ReconnectingThread
from api.queue import JOB_EVENTS_CHANNEL, NOTIFY_CHANNEL
from api.queue.wakeup import WakeHub

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0
NOTIFY_POLL_S = 1.0


class Subscription:
    """One event stream's interest in one job: a flag raised when the job may have changed."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self._event = threading.Event()

    def notify(self) -> None:
        """The job may have changed (or a notification may have been missed)."""
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Block until :meth:`notify` or ``timeout``; True if notified. Resets the flag.

        Read the job *after* this returns: NOTIFY is delivered after its transaction
        commits, so that read sees every change notified so far, and a change notified
        during the read raises the flag again for the next wait.
        """
        notified = self._event.wait(timeout)
        self._event.clear()
        return notified


class JobEventHub:
    """Which streams follow which job, fed with the ids the ``jobs_changed`` trigger sends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[int, set[Subscription]] = {}

    def subscribe(self, job_id: int) -> Subscription:
        """Follow a job; subscribe *before* the first read, so no change falls in between."""
        subscription = Subscription(job_id)
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Stop following (safe to call twice)."""
        with self._lock:
            followers = self._subscribers.get(subscription.job_id)
            if followers is not None:
                followers.discard(subscription)
                if not followers:
                    del self._subscribers[subscription.job_id]

    def publish(self, ids: str) -> int:
        """Wake the followers of the jobs in a comma-separated id list; how many were woken."""
        # This channel carries every claim and heartbeat of the fleet: with no stream open
        # in this process (the usual case), do not even parse the payload. Reading the dict
        # without the lock is safe: a stream subscribing concurrently reads the job afterwards.
        if not self._subscribers:
            return 0
        job_ids: set[int] = set()
        for part in ids.split(","):
            try:
                job_ids.add(int(part))
            except ValueError:
                log.warning("ignoring a malformed job id %r on %s", part, JOB_EVENTS_CHANNEL)
        with self._lock:
            woken = [s for job_id in job_ids for s in self._subscribers.get(job_id, ())]
        for subscription in woken:
            subscription.notify()
        return len(woken)

    def wake_all(self) -> None:
        """Wake every stream (after a reconnect: a change may have gone unnoticed)."""
        with self._lock:
            woken = [s for followers in self._subscribers.values() for s in followers]
        for subscription in woken:
            subscription.notify()

    def followed(self) -> int:
        """How many subscriptions are open (for tests and metrics)."""
        with self._lock:
            return sum(len(followers) for followers in self._subscribers.values())


class Listener(ReconnectingThread):
    """A daemon thread holding ``LISTEN skyfleet_jobs`` and ``LISTEN skyfleet_job_events``,
    feeding a :class:`WakeHub` (claims) and a :class:`JobEventHub` (event streams)."""

    thread_name = "skyfleet-listen"

    def __init__(self, dsn: str, hub: WakeHub, events: JobEventHub | None = None) -> None:
        super().__init__(dsn, RECONNECT_DELAY_S)
        self._hub = hub
        self.events = events if events is not None else JobEventHub()
        self.connected = threading.Event()

    def work(self, conn: psycopg.Connection) -> None:
        """Listen on both channels and hand every notification on until stopped."""
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        conn.execute(f"LISTEN {JOB_EVENTS_CHANNEL}")
        self.connected.set()
        # Anything may have arrived while we were not listening.
        self._hub.wake_all()
        self.events.wake_all()
        while not self.stopping.is_set():
            for note in conn.notifies(timeout=NOTIFY_POLL_S):
                if note.channel == JOB_EVENTS_CHANNEL:
                    self.events.publish(note.payload)
                else:
                    self._hub.dispatch(note.payload)

    def disconnected(self) -> None:
        """Parked claims poll (``claim_poll_fallback_s``) until the connection is back."""
        self.connected.clear()
