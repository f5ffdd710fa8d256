"""What every request handler needs: settings, the engine, the wake-up hub, storage."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TypeVar

from flask import current_app
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.config import DB_POOL_SIZE, Settings
from api.errors import ServiceUnavailable
from api.files.links import Linker
from api.queue.notify import Listener
from api.queue.wakeup import WakeHub
from storage import Storage
from storage.netguard import AddressGuard

EXTENSION_KEY = "skyfleet"
T = TypeVar("T")


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    hub: WakeHub
    listener: Listener
    storage: Storage
    linker: Linker
    #: Refuses URL inputs and callbacks to private, loopback and link-local addresses.
    guard: AddressGuard
    started_at: float = field(default_factory=time.time)
    #: Claim and report transactions in flight in this process: at most half of what the pool
    #: (with its overflow) holds, so that however many workers claim at once, heartbeats,
    #: health checks and submissions always find a connection (a heartbeat queued behind claims
    #: for longer than a lease costs a job its lease, and it runs twice).
    claim_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(DB_POOL_SIZE))

    @contextmanager
    def claim_transaction(self) -> Iterator[Connection]:
        """A transaction of the claim and report path, within :attr:`claim_slots`."""
        with self.claim_slots, self.transaction() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; a lost database becomes a 503 in the error envelope."""
        with self._mapped_errors(), self.engine.begin() as conn:
            yield conn

    def run_transaction(self, work: Callable[[Connection], T], attempts: int = 3) -> T:
        """``work`` in a transaction, run again (``attempts`` times in all) when PostgreSQL rolls
        it back for a deadlock or a serialization failure: nothing it did was kept. ``work``
        must have no effect outside the transaction."""
        for attempt in range(1, attempts + 1):
            try:
                with self.transaction() as conn:
                    return work(conn)
            except ServiceUnavailable as exc:
                cause = exc.__cause__
                if attempt == attempts or not (isinstance(cause, OperationalError) and rolled_back(cause)):
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection in autocommit for one read: no BEGIN and COMMIT round trips around it
        (two statements on it see two snapshots; use :meth:`transaction` when they must agree)."""
        with self._mapped_errors(), self.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def _mapped_errors(self) -> Iterator[None]:
        """A lost database, a full pool or a rolled-back transaction become 503s in the error envelope."""
        try:
            yield
        except OperationalError as exc:
            # A deadlock or serialization failure: nothing was written; the client may retry.
            if rolled_back(exc):
                raise ServiceUnavailable(
                    "the database rolled this request back (concurrent update); retry") from exc
            raise ServiceUnavailable("the database is unavailable; retry shortly") from exc
        except PoolTimeout as exc:
            raise ServiceUnavailable("the API is busy: no database connection came free in time; retry") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise ServiceUnavailable("the database connection was lost; retry shortly") from exc
            raise


def rolled_back(error: DBAPIError) -> bool:
    """Whether PostgreSQL rolled the transaction back to resolve a race (SQLSTATE class 40: a
    deadlock, a serialization failure): nothing was kept, and it may simply run again."""
    return str(getattr(error.orig, "sqlstate", "") or "").startswith("40")


def ctx() -> AppContext:
    """The context of the running app."""
    context: AppContext = current_app.extensions[EXTENSION_KEY]
    return context
