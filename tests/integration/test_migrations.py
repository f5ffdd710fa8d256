"""Models and migrations agree, and the migration goes down and up again."""

from __future__ import annotations

import psycopg

from api.database import libpq_url
from api.migrate import check, downgrade, upgrade


def test_upgrade_check_downgrade_upgrade(pg_server):
    name, url = pg_server.create_database()
    try:
        upgrade(url)
        check(url)  # raises if the models have drifted from the migrations
        downgrade(url, "base")
        with psycopg.connect(libpq_url(url)) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()
        assert [t for (t,) in tables if t != "alembic_version"] == []
        upgrade(url)
        check(url)
    finally:
        pg_server.drop_database(name)
