"""Runs the maintenance services in the one API process that holds the advisory lock."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

import psycopg

from api.background import ReconnectingThread

log = logging.getLogger(__name__)

#: pg_advisory_lock key: "skyfleet" in ASCII, as a bigint.
ADVISORY_LOCK_KEY = 0x736B79666C656574
LEADER_RETRY_S = 5.0
#: The shortest wait between two looks at the services (and at the lock's session).
MIN_TICK_S = 0.05


class Service(Protocol):
    """A maintenance service: ``run_once`` does one bounded pass and returns what it did."""

    name: str
    interval_s: float

    def run_once(self) -> object: ...


class MaintenanceRunner(ReconnectingThread):
    """A daemon thread: take the advisory lock, then run each service on its own interval.

    The lock is a session lock on the thread's dedicated connection, so it is released by
    PostgreSQL the moment this process or its connection dies, and another API process
    takes over.
    """

    thread_name = "skyfleet-maintenance"

    def __init__(self, dsn: str, services: list[Service], retry_s: float = LEADER_RETRY_S) -> None:
        super().__init__(dsn, retry_s)
        self.services = services
        self.is_leader = threading.Event()

    def work(self, conn: psycopg.Connection) -> None:
        """Lead if the lock is free; otherwise return, to try again after ``retry_s``."""
        got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
        if got and got[0]:
            self.is_leader.set()
            log.info("maintenance leader: running %s", [s.name for s in self.services])
            self._lead(conn)

    def disconnected(self) -> None:
        self.is_leader.clear()

    def _lead(self, conn: psycopg.Connection) -> None:
        next_run = [0.0] * len(self.services)
        while not self.stopping.is_set():
            for i, service in enumerate(self.services):
                if time.monotonic() < next_run[i]:
                    continue
                try:
                    result = service.run_once()
                except Exception:  # a loop boundary: log and carry on with the next pass
                    log.exception("maintenance service %s failed", service.name)
                else:
                    log.debug("maintenance service %s: %s", service.name, result)
                next_run[i] = time.monotonic() + service.interval_s
            # Checks that we still hold the session (and so the lock); raises if it is gone.
            conn.execute("SELECT 1")
            wait = min(next_run) - time.monotonic()
            self.stopping.wait(max(MIN_TICK_S, wait))
