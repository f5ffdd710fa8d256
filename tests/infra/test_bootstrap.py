"""The ops task's bootstrap (infra/bootstrap.py) against a real PostgreSQL: accounts appear and can log in."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import select

from api.auth import service as accounts
from api.auth.models import User
from api.database import make_engine

BOOTSTRAP = Path(__file__).resolve().parents[2] / "infra" / "bootstrap.py"


@pytest.fixture(scope="module")
def bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("infra_bootstrap", BOOTSTRAP)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def _env(admin_password: str, worker_password: str) -> dict[str, str]:
    accounts_json = [
        {"email": "Ops-Admin@Example.org", "role": "ADMIN", "name": "admin", "password_env": "ADMIN_PW"},
        {"email": "worker-bulk@service.skyfleet.internal", "role": "WORKER", "name": "worker-bulk",
         "service": True, "password_env": "WORKER_PW"},
    ]
    return {"SKYFLEET_BOOTSTRAP_ACCOUNTS": json.dumps(accounts_json), "ADMIN_PW": admin_password,
            "WORKER_PW": worker_password}


def test_bootstrap_creates_then_resyncs_accounts(bootstrap, clean_db):
    database_url = clean_db  # emptied afterwards: the accounts must not leak into other tests
    first = bootstrap.bootstrap(database_url, bootstrap.account_specs(_env("first admin secret 1", "w" * 8 + "x1y2z3")))
    again = bootstrap.bootstrap(database_url, bootstrap.account_specs(_env("rotated admin secret 2", "rotated-w0rker")))
    assert first == again  # the same accounts, their passwords reset
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            admin = accounts.authenticate(conn, "ops-admin@example.org", "rotated admin secret 2")
            worker = accounts.authenticate(conn, "worker-bulk@service.skyfleet.internal", "rotated-w0rker")
            flags = dict(conn.execute(select(User.email, User.is_service).where(User.id.in_(first))).all())
    finally:
        engine.dispose()
    assert admin.roles == ["ADMIN"] and worker.roles == ["WORKER"]
    assert flags == {"ops-admin@example.org": False, "worker-bulk@service.skyfleet.internal": True}


@pytest.mark.parametrize(("env", "message"), [
    ({}, "SKYFLEET_BOOTSTRAP_ACCOUNTS is not set"),
    ({"SKYFLEET_BOOTSTRAP_ACCOUNTS": "{"}, "not valid JSON"),
    ({"SKYFLEET_BOOTSTRAP_ACCOUNTS": '[{"email": "a@b.c", "role": "ADMIN"}]'}, r"\[0\] needs"),
    ({"SKYFLEET_BOOTSTRAP_ACCOUNTS": '[{"email": "a@b.c", "role": "ROOT", "password_env": "P"}]', "P": "x"},
     r"\[0\]\.role"),
    ({"SKYFLEET_BOOTSTRAP_ACCOUNTS": '[{"email": "a@b.c", "role": "ADMIN", "password_env": "P"}]'}, "P is not set"),
])
def test_bad_bootstrap_configuration_names_the_variable(bootstrap, env, message):
    with pytest.raises(bootstrap.BootstrapError, match=message):
        bootstrap.account_specs(env)
