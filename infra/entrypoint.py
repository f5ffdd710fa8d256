"""The image's entrypoint: complete the environment, then ``exec`` the component's command.

ECS injects the database credentials as separate variables (user and password from the RDS
secret, host and port from the stack) so that no task definition holds a password; this joins
them into the ``DATABASE_URL`` the API and ``skyfleet migrate`` read. A ``DATABASE_URL`` that is
already set wins. The command replaces this process, so signals reach it directly.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from urllib.parse import quote

DB_PARTS = ("SKYFLEET_DB_HOST", "SKYFLEET_DB_USER", "SKYFLEET_DB_PASSWORD", "SKYFLEET_DB_NAME")
DEFAULT_DB_PORT = "5432"


def database_url(env: Mapping[str, str]) -> str | None:
    """``postgresql://user:password@host:port/name?sslmode=…`` from the parts, or None if a part is missing."""
    if not all(env.get(part) for part in DB_PARTS):
        return None
    user = quote(env["SKYFLEET_DB_USER"], safe="")
    password = quote(env["SKYFLEET_DB_PASSWORD"], safe="")
    port = env.get("SKYFLEET_DB_PORT") or DEFAULT_DB_PORT
    url = f"postgresql://{user}:{password}@{env['SKYFLEET_DB_HOST']}:{port}/{quote(env['SKYFLEET_DB_NAME'])}"
    sslmode = env.get("SKYFLEET_DB_SSLMODE")
    return f"{url}?sslmode={quote(sslmode)}" if sslmode else url


def main(argv: list[str]) -> None:
    """Exec ``argv`` with DATABASE_URL filled in when the parts are given."""
    if not argv:
        sys.exit("entrypoint: no command given")
    if not os.environ.get("DATABASE_URL"):
        url = database_url(os.environ)
        if url is not None:
            os.environ["DATABASE_URL"] = url
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
