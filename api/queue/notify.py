"""Wake long-polling claims when jobs arrive: one LISTEN connection per API process.

Enqueue sends ``NOTIFY skyfleet_jobs, '<type>'`` in its transaction. The listener thread
bumps a per-type generation counter and wakes every waiter; a waiter snapshots the
counters *before* it tries to claim, so a notification that lands between its empty claim
and its wait is never missed. Waiters also poll with jitter, in case a notification is
lost (the LISTEN connection dropped, or the sender was another system).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterable

import psycopg

from api.queue import NOTIFY_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_DELAY_S = 1.0
NOTIFY_POLL_S = 1.0


class WakeHub:
    """Per-type generation counters with one condition variable."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation: dict[str, int] = defaultdict(int)
        self._everything = 0

    def snapshot(self, types: Iterable[str]) -> tuple[int, tuple[int, ...]]:
        """The counters for ``types`` now; pass it to :meth:`wait`."""
        with self._cond:
            return self._everything, tuple(self._generation[t] for t in types)

    def wait(self, types: list[str], seen: tuple[int, tuple[int, ...]], timeout: float) -> bool:
        """Block until a job of ``types`` may have arrived since ``seen``, or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if (self._everything, tuple(self._generation[t] for t in types)) != seen:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)

    def wake(self, job_type: str | None) -> None:
        """Jobs of ``job_type`` arrived (None: anything may have; after a reconnect)."""
        with self._cond:
            if job_type is None:
                self._everything += 1
            else:
                self._generation[job_type] += 1
            self._cond.notify_all()


class Listener:
    """A daemon thread holding ``LISTEN skyfleet_jobs`` and feeding a :class:`WakeHub`."""

    def __init__(self, dsn: str, hub: WakeHub) -> None:
        self._dsn = dsn
        self._hub = hub
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.connected = threading.Event()

    def ensure_started(self) -> None:
        """Start the thread once per process (safe to call on every request)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="skyfleet-listen", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    self.connected.set()
                    # Anything may have arrived while we were not listening.
                    self._hub.wake(None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=NOTIFY_POLL_S):
                            self._hub.wake(note.payload or None)
            except psycopg.Error:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("LISTEN connection lost; reconnecting", exc_info=True)
                self._stop.wait(RECONNECT_DELAY_S)
