"""What every request handler needs: settings, the engine, the wake-up hub, storage."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from flask import current_app
from psycopg.errors import TransactionRollback
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from api.config import Settings
from api.errors import ServiceUnavailable
from api.files.links import Linker
from api.queue.notify import Listener
from api.queue.wakeup import WakeHub
from storage import Storage
from storage.netguard import AddressGuard

EXTENSION_KEY = "skyfleet"


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

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One transaction; a lost database becomes a 503 in the error envelope."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            # A deadlock or serialization failure: nothing was written; the client may retry.
            if isinstance(exc.orig, TransactionRollback):
                raise ServiceUnavailable(
                    "the database rolled this request back (concurrent update); retry") from exc
            raise ServiceUnavailable("the database is unavailable; retry shortly") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise ServiceUnavailable("the database connection was lost; retry shortly") from exc
            raise


def ctx() -> AppContext:
    """The context of the running app."""
    context: AppContext = current_app.extensions[EXTENSION_KEY]
    return context
