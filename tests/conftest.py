"""Test fixtures: a real PostgreSQL (embedded, or TEST_DATABASE_URL), migrated once per session."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from api.config import generate_private_key_pem
from api.database import libpq_url
from api.migrate import upgrade

#: S3 through moto's server mode: the ``moto_server`` and ``moto_s3`` fixtures.
pytest_plugins = ["tests.moto"]

ROOT = Path(__file__).resolve().parent.parent
TABLES = ("idempotency_keys", "fleet_decisions", "fleet_pools", "manager_leases", "rate_limit_counters", "job_attempts",
          "job_requests", "jobs", "workers", "refresh_tokens", "users")


class Server:
    """Where test databases are created: the embedded server, or the one TEST_DATABASE_URL names."""

    def __init__(self) -> None:
        self.embedded = None
        given = os.environ.get("TEST_DATABASE_URL")
        if given:
            self.admin_url = libpq_url(given)
        else:
            from api.embedded import EmbeddedPostgres

            self.embedded = EmbeddedPostgres(ROOT / ".skyfleet" / "test-pgdata")
            self.admin_url = self.embedded.url()

    def url_for(self, database: str) -> str:
        return psycopg.conninfo.make_conninfo(self.admin_url, dbname=database)

    def create_database(self) -> tuple[str, str]:
        name = f"skyfleet_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name, _as_url(self.url_for(name))

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _as_url(conninfo: str) -> str:
    """A libpq key=value string → a postgresql:// URL (what SQLAlchemy and our settings take)."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    host = params.pop("host", "")
    dbname = params.pop("dbname")
    user = params.pop("user", "postgres")
    password = params.pop("password", "")
    port = params.pop("port", None)
    query = "&".join(f"{k}={v}" for k, v in params.items())
    if host.startswith("/"):
        query = f"host={host}" + (f"&port={port}" if port else "") + (f"&{query}" if query else "")
        netloc = ""
    else:
        netloc = host + (f":{port}" if port else "")
    auth = f"{user}:{password}@" if password else f"{user}@"
    return f"postgresql://{auth}{netloc}/{dbname}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def jwt_private_key() -> str:
    """One RSA signing key for the session (generating one takes a moment)."""
    return generate_private_key_pem(2048)


@pytest.fixture(scope="session")
def jwt_key_file(jwt_private_key: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("keys") / "jwt.pem"
    path.write_text(jwt_private_key)
    return str(path)


@pytest.fixture(scope="session")
def pg_server() -> Server:
    return Server()


@pytest.fixture(scope="session")
def database_url(pg_server: Server) -> Iterator[str]:
    """A fresh database, migrated to head, for the whole session."""
    name, url = pg_server.create_database()
    upgrade(url)
    yield url
    pg_server.drop_database(name)


@pytest.fixture
def clean_db(database_url: str) -> Iterator[str]:
    """The session database, emptied after the test (tests use many connections, so no savepoints)."""
    yield database_url
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
