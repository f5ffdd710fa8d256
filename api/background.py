"""The API process's background threads: each holds one dedicated PostgreSQL connection.

:class:`ReconnectingThread` is their one skeleton: connect, work on the connection until
stopped, and when the database goes away log it, wait and connect again. The LISTEN thread
(:class:`~api.queue.notify.Listener`) and the maintenance runner
(:class:`~api.maintenance.runner.MaintenanceRunner`) fill in :meth:`~ReconnectingThread.work`.
"""

from __future__ import annotations

import logging
import threading

import psycopg

log = logging.getLogger(__name__)


class ReconnectingThread:
    """A daemon thread that runs :meth:`work` on its own autocommit connection until stopped.

    A dedicated connection rather than one from the pool: what the thread holds on it (a
    LISTEN, a session advisory lock) lasts exactly as long as the connection, and PostgreSQL
    lets it go the moment the process or the connection dies.
    """

    #: The thread's name (and what the log calls it).
    thread_name = "skyfleet-background"

    def __init__(self, dsn: str, retry_s: float) -> None:
        self._dsn = dsn
        self._retry_s = retry_s
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def ensure_started(self) -> None:
        """Start the thread once per process (safe to call again, from any thread)."""
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end; :meth:`work` sees it through :attr:`stopping`."""
        self._stop.set()

    @property
    def stopping(self) -> threading.Event:
        """Set once :meth:`stop` was called; :meth:`work` returns soon after, and waits on it."""
        return self._stop

    def work(self, conn: psycopg.Connection) -> None:
        """Use the connection until :attr:`stopping` is set (or raise a psycopg error)."""
        raise NotImplementedError

    def disconnected(self) -> None:
        """The connection is gone (closed, lost or never made): drop what it held."""

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._dsn, autocommit=True) as conn:
                    self.work(conn)
            except psycopg.Error:
                if not self._stop.is_set():
                    log.warning("%s: connection lost; connecting again in %.1f s", self.thread_name, self._retry_s,
                                exc_info=True)
            finally:
                self.disconnected()
            # After a failure, or (the runner) after finding the lock taken: try again later.
            self._stop.wait(self._retry_s)
