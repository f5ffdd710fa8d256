"""The ops task's default command: migrate the database, then make sure the deployment's accounts exist.

``SKYFLEET_BOOTSTRAP_ACCOUNTS`` (set by the stack) lists them — the first admin, the manager and one
worker account per pool — each naming the variable that carries its password (injected by ECS
from Secrets Manager). An account that exists gets its password reset to the secret's value, so
running this again after rotating a secret brings the database in line. Safe to repeat.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("skyfleet.bootstrap")
ROLES = ("ADMIN", "USER", "WORKER", "MANAGER")  # api.auth.models.Role


class BootstrapError(ValueError):
    """The bootstrap configuration is missing or malformed; the message names the variable."""


@dataclass(frozen=True)
class AccountSpec:
    """One account the deployment needs."""

    email: str
    role: str
    name: str
    service: bool
    password: str


def account_specs(env: Mapping[str, str]) -> list[AccountSpec]:
    """Parse SKYFLEET_BOOTSTRAP_ACCOUNTS and look up each password variable."""
    raw = env.get("SKYFLEET_BOOTSTRAP_ACCOUNTS")
    if not raw:
        raise BootstrapError("SKYFLEET_BOOTSTRAP_ACCOUNTS is not set")
    try:
        entries: Any = json.loads(raw)
    except ValueError as exc:
        raise BootstrapError(f"SKYFLEET_BOOTSTRAP_ACCOUNTS is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise BootstrapError("SKYFLEET_BOOTSTRAP_ACCOUNTS must be a JSON list")
    specs = []
    for i, entry in enumerate(entries):
        try:
            variable = entry["password_env"]
            spec = AccountSpec(email=entry["email"], role=entry["role"], name=entry.get("name") or entry["email"],
                               service=bool(entry.get("service", False)), password=env.get(variable, ""))
        except (KeyError, TypeError):
            raise BootstrapError(f"SKYFLEET_BOOTSTRAP_ACCOUNTS[{i}] needs email, role and password_env") from None
        if spec.role not in ROLES:
            raise BootstrapError(f"SKYFLEET_BOOTSTRAP_ACCOUNTS[{i}].role must be one of {', '.join(ROLES)}")
        if not spec.password:
            raise BootstrapError(f"{variable} is not set (the password of {spec.email})")
        specs.append(spec)
    return specs


def bootstrap(database_url: str, specs: list[AccountSpec]) -> list[int]:
    """Migrate to head, then create or update every account; returns their ids in order."""
    from api.auth import service as accounts
    from api.auth.models import Role
    from api.database import make_engine
    from api.migrate import upgrade

    upgrade(database_url)
    ids = []
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:  # all accounts or none
            for spec in specs:
                account, _ = accounts.ensure_account(conn, spec.email, spec.password, [Role(spec.role)],
                                                     spec.name, is_service=spec.service)
                log.info("account %s (role %s) ready: id %s", spec.email, spec.role, account.id)
                ids.append(account.id)
    finally:
        engine.dispose()
    return ids


def main() -> int:
    """Run the bootstrap from the environment (DATABASE_URL is joined by infra/entrypoint.py)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    url = os.environ.get("DATABASE_URL")
    try:
        if not url:
            raise BootstrapError("DATABASE_URL is not set")
        bootstrap(url, account_specs(os.environ))
    except BootstrapError as exc:
        print(f"bootstrap: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
