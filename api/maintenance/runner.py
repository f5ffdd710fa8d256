"""Runs the maintenance services in the one API process that holds the advisory lock."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import psycopg

log = logging.getLogger(__name__)

#: pg_advisory_lock key: "skyfleet" in ASCII, as a bigint.
ADVISORY_LOCK_KEY = 0x736B79666C656574
LEADER_RETRY_S = 5.0


class Service(Protocol):
    name: str
    interval_s: float

    def run_once(self) -> Any: ...


class MaintenanceRunner:
    """A daemon thread: take the advisory lock, then run each service on its interval.

    The lock is a session lock on a dedicated connection, so it is released by PostgreSQL
    the moment this process or its connection dies, and another API process takes over.
    """

    def __init__(self, dsn: str, services: list[Service], retry_s: float = LEADER_RETRY_S) -> None:
        self._dsn = dsn
        self._services = services
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.is_leader = threading.Event()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="skyfleet-maintenance", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    got = conn.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
                    if got and got[0]:
                        self.is_leader.set()
                        log.info("maintenance leader: running %s", [s.name for s in self._services])
                        self._lead(conn)
            except psycopg.Error:
                log.warning("maintenance connection failed", exc_info=True)
            finally:
                self.is_leader.clear()
            self._stop.wait(self._retry_s)

    def _lead(self, conn: psycopg.Connection) -> None:
        next_run = {s.name: 0.0 for s in self._services}
        while not self._stop.is_set():
            for service in self._services:
                if time.monotonic() < next_run[service.name]:
                    continue
                try:
                    service.run_once()
                except Exception:  # a loop boundary: log and carry on with the next pass
                    log.exception("maintenance service %s failed", service.name)
                next_run[service.name] = time.monotonic() + service.interval_s
            # Checks that we still hold the session (and so the lock); raises if it is gone.
            conn.execute("SELECT 1")
            wait = min(next_run.values()) - time.monotonic()
            self._stop.wait(max(0.05, wait))
