"""Integration fixtures: the Flask app on the test database, accounts and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine

from api.app import create_app
from api.auth import service as accounts
from api.auth.models import Role
from api.config import Settings
from api.context import EXTENSION_KEY

PASSWORD = "correct horse battery"


@pytest.fixture
def settings(clean_db: str, jwt_private_key: str, tmp_path: Path) -> Settings:
    return Settings(database_url=clean_db, jwt_private_key=jwt_private_key, background=False, lease_s=5.0,
                    heartbeat_interval_s=1.0, claim_poll_fallback_s=0.5, storage_dir=str(tmp_path / "storage"))


@contextmanager
def running_app(settings: Settings) -> Iterator[Flask]:
    """The app for tests, its LISTEN thread stopped and its connections closed afterwards."""
    app = create_app(settings)
    app.config["TESTING"] = True
    try:
        yield app
    finally:
        context = app.extensions[EXTENSION_KEY]
        context.listener.stop()
        context.engine.dispose()


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    with running_app(settings) as app:
        yield app


@pytest.fixture
def engine(app: Flask) -> Engine:
    return app.extensions[EXTENSION_KEY].engine


@dataclass
class As:
    """A test client acting as one account."""

    client: FlaskClient
    token: str
    user_id: int

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(path, json=json, headers=self._headers(), **kw)

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, headers=self._headers() | kw.pop("headers", {}), **kw)

    def delete(self, path: str, **kw: Any) -> Any:
        return self.client.delete(path, headers=self._headers(), **kw)


def make_account(app: Flask, email: str, roles: list[Role], is_service: bool = False) -> As:
    context = app.extensions[EXTENSION_KEY]
    with context.engine.begin() as conn:
        account = accounts.create_user(conn, email, PASSWORD, roles, is_service=is_service)
    client = app.test_client()
    response = client.post("/api/auth/login", json={"email": email, "password": PASSWORD})
    assert response.status_code == 200, response.json
    return As(client, response.json["data"]["access_token"], account.id)


@pytest.fixture
def admin(app: Flask) -> As:
    return make_account(app, "admin@example.org", [Role.ADMIN])


@pytest.fixture
def alice(app: Flask) -> As:
    return make_account(app, "alice@example.org", [Role.USER])


@pytest.fixture
def bob(app: Flask) -> As:
    return make_account(app, "bob@example.org", [Role.USER])


@pytest.fixture
def worker_account(app: Flask) -> As:
    return make_account(app, accounts.service_email("w1"), [Role.WORKER], is_service=True)


def register(worker: As, types: tuple[str, ...] = ("noop", "sleep"), name: str = "w") -> int:
    response = worker.post("/api/workers", {"name": name, "job_types": list(types), "concurrency": 4})
    assert response.status_code == 201, response.json
    return int(response.json["data"]["id"])


def submit(user: As, job_type: str = "sleep", payload: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response = user.post("/api/jobs", {"type": job_type, "input_payload": payload or {}, **extra})
    assert response.status_code in (200, 201), response.json
    return dict(response.json["data"])


def claim(worker: As, worker_id: int, max_jobs: int = 10, wait_s: float = 0.0) -> list[dict[str, Any]]:
    response = worker.post(f"/api/workers/{worker_id}/claim", {"max_jobs": max_jobs, "wait_s": wait_s})
    assert response.status_code == 200, response.json
    return list(response.json["data"]["jobs"])


def report(worker: As, worker_id: int, job: dict[str, Any], status: str = "SUCCEEDED", **extra: Any) -> Any:
    body = {"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"], "status": status, **extra}
    return worker.post(f"/api/workers/{worker_id}/results", {"results": [body]})


@pytest.fixture
def app_factory(settings: Settings) -> Iterator[Any]:
    """Build extra apps from the test settings with some changed: ``app_factory(cors_origins=("*",))``."""
    with ExitStack() as stack:
        yield lambda **changes: stack.enter_context(running_app(settings.with_(**changes)))

