"""Every secured operation in the OpenAPI document refuses the roles it is not for.

Users and admins own jobs and files; only workers speak the worker protocol; only admins
administer. The matrix is read from the served document, so a new endpoint is covered
the day it is added.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from api.auth import service as accounts
from api.auth.models import Role
from tests.integration.conftest import make_account

#: Who may call what, by path prefix (first match wins).
ALLOWED = [
    ("/api/auth/me", {"ADMIN", "USER", "WORKER", "MANAGER"}),
    ("/api/admin", {"ADMIN"}),
    ("/api/workers", {"WORKER"}),
    ("/api/manager", {"MANAGER", "ADMIN"}),
    ("/api/jobs", {"ADMIN", "USER"}),
    ("/api/files", {"ADMIN", "USER"}),
]


METHODS = {"get", "post", "put", "patch", "delete"}


def _secured(spec: dict[str, Any]) -> list[tuple[str, str]]:
    """(method, path with every parameter = 1) of each operation that needs a token."""
    return [(method.upper(), path) for path, operations in spec["paths"].items()
            for method, operation in operations.items() if method in METHODS and operation.get("security")]


def _allowed(path: str) -> set[str]:
    return next(roles for prefix, roles in ALLOWED if path.startswith(prefix))


@pytest.fixture
def accounts_by_role(app: Any) -> dict[str, Any]:
    return {
        "ADMIN": make_account(app, "root@example.org", [Role.ADMIN]),
        "USER": make_account(app, "user@example.org", [Role.USER]),
        "WORKER": make_account(app, accounts.service_email("pool"), [Role.WORKER], is_service=True),
        "MANAGER": make_account(app, accounts.service_email("mgr"), [Role.MANAGER], is_service=True),
    }


def test_roles_outside_an_operations_audience_get_403(app, accounts_by_role):
    spec = app.test_client().get("/api/openapi.json").json
    checked = 0
    for method, path in _secured(spec):
        for role, account in accounts_by_role.items():
            if role in _allowed(path):
                continue
            response = account.client.open(re.sub(r"\{[^}]+\}", "1", path), method=method, json={},
                                           headers={"Authorization": f"Bearer {account.token}"})
            assert response.status_code == 403, (role, method, path, response.json)
            assert response.json["error"]["code"] == "FORBIDDEN"
            checked += 1
    assert checked > 60


def test_secured_operations_need_a_token(app):
    spec = app.test_client().get("/api/openapi.json").json
    client = app.test_client()
    for method, path in _secured(spec):
        response = client.open(re.sub(r"\{[^}]+\}", "1", path), method=method, json={})
        assert response.status_code == 401, (method, path)
        assert response.json["error"]["code"] == "UNAUTHORIZED"
