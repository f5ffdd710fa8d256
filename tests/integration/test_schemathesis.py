"""Property-based checks of every documented operation against the served OpenAPI document.

Bounded: a few generated cases per operation, run in-process through WSGI. A failure means
a 5xx, or a response whose body breaks the schema the document declares for its status.
The document is read from an app built at collection time (no database needed to serve
it); the cases run against the test's app on the test database.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from flask import Flask
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error, response_schema_conformance

from api.app import create_app
from api.auth import service as accounts
from api.auth.models import Role
from api.config import Settings, generate_private_key_pem
from tests.integration.conftest import As, make_account

MAX_EXAMPLES = 10

#: Each operation runs as every role it is for (first matching path prefix; see test_roles.py),
#: so the admin's, the workers' and the manager's code runs, not just their 403s.
AUDIENCES: list[tuple[str, tuple[Role, ...]]] = [
    ("/api/admin", (Role.ADMIN,)),
    ("/api/workers", (Role.WORKER,)),
    ("/api/manager", (Role.MANAGER, Role.ADMIN)),
    ("/api/jobs", (Role.USER, Role.ADMIN)),
    ("/api/files", (Role.USER, Role.ADMIN)),
    ("/", (Role.USER,)),
]


def _document_app() -> Any:
    return create_app(Settings(database_url="postgresql://localhost/unused", background=False,
                               jwt_private_key=generate_private_key_pem(2048),
                               storage_dir=tempfile.mkdtemp(prefix="skyfleet-spec-")))


schema = schemathesis.openapi.from_wsgi("/api/openapi.json", _document_app())


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Hundreds of requests a minute from one account: the rate limiter is tested elsewhere.
    return settings.with_(rate_limit_per_minute=0, login_limit_per_account=0, login_limit_per_address=0)


@pytest.fixture
def callers(app: Flask) -> Callable[[Role], As]:
    """An account of the given role, made the first time it is asked for."""
    made: dict[Role, As] = {}

    def caller(role: Role) -> As:
        if role not in made:
            email = (accounts.service_email(role.value.lower()) if role in (Role.WORKER, Role.MANAGER)
                     else f"{role.value.lower()}@example.org")
            made[role] = make_account(app, email, [role], is_service=role in (Role.WORKER, Role.MANAGER))
        return made[role]

    return caller


# The event stream is excluded: it stays open until its job ends (tested in test_events.py).
@schema.exclude(path_regex=r"/events$").parametrize()
@hypothesis_settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(HealthCheck))
def test_no_server_errors_and_documented_bodies(case: Any, app: Flask, callers: Callable[[Role], As]) -> None:
    roles = next(roles for prefix, roles in AUDIENCES if case.path.startswith(prefix))
    for role in roles:
        response = case.call(app=app, headers={"Authorization": f"Bearer {callers(role).token}"})
        case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
