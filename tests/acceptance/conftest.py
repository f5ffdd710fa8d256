"""Acceptance fixtures: the API under gunicorn and worker processes, as real subprocesses."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import Engine

from api.auth import service as accounts
from api.auth.models import Role
from api.database import make_engine
from api.launcher import stop_processes
from tests.helpers import wait_for

PASSWORD = "acceptance password"
WORKER_EMAIL = accounts.service_email("fleet-worker")


def _wait_healthy(api: subprocess.Popen[bytes], url: str) -> None:
    def healthy() -> bool:
        assert api.poll() is None, "the API exited"
        try:
            return requests.get(f"{url}/api/health", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(healthy, timeout=30, interval=0.2, what="the API to start")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Fleet:
    url: str
    engine: Engine
    api: subprocess.Popen[bytes]
    token: str
    #: Where the API and the workers keep objects (shared, as on one machine).
    storage_dir: Path
    #: Where workers put each job's inputs and outputs while it runs.
    work_dir: Path
    api_env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def restart_api(self, down_s: float) -> None:
        """Stop the API, keep it down for ``down_s`` seconds, start it again on the same port."""
        stop_processes([self.api])
        time.sleep(down_s)
        self.api = subprocess.Popen(API_COMMAND, env=self.api_env)
        _wait_healthy(self.api, self.url)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def submit(self, job_type: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
        response = requests.post(f"{self.url}/api/jobs", json={"type": job_type, "input_payload": payload, **extra},
                                 headers=self.headers(), timeout=10)
        assert response.status_code in (200, 201), response.text
        return dict(response.json()["data"])

    def job(self, job_id: int) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/jobs/{job_id}", headers=self.headers(), timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])

    def wait_running(self, job_id: int, timeout: float = 15.0) -> None:
        """Wait until a worker has claimed the job."""
        wait_for(lambda: self.job(job_id)["status"] == "IN_PROGRESS", timeout=timeout, what=f"job {job_id} to start")

    def start_worker(self, **env: str) -> subprocess.Popen[bytes]:
        worker_env = os.environ | {
            "SKYFLEET_API_URL": self.url,
            "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL,
            "SKYFLEET_WORKER_PASSWORD": PASSWORD,
            "SKYFLEET_WORKER_CLAIM_WAIT_S": "2",
            "SKYFLEET_STORAGE_DIR": str(self.storage_dir),
            "SKYFLEET_WORKER_WORK_DIR": str(self.work_dir),
        } | env
        proc = subprocess.Popen([sys.executable, "-m", "worker"], env=worker_env)
        self.workers.append(proc)
        return proc


API_COMMAND = [sys.executable, "-m", "gunicorn", "-c", "python:api.gunicorn_conf", "api.wsgi:app"]


@pytest.fixture
def api_env() -> dict[str, str]:
    """Extra API settings; a test module overrides this fixture to change them."""
    return {}


@pytest.fixture
def fleet(clean_db: str, jwt_key_file: str, tmp_path: Path, api_env: dict[str, str]) -> Iterator[Fleet]:
    """The API under gunicorn with short leases (2 s), so rescue tests run in seconds."""
    engine = make_engine(clean_db, pool_size=2)
    with engine.begin() as conn:
        accounts.create_user(conn, "admin@example.org", PASSWORD, [Role.ADMIN])
        accounts.create_user(conn, WORKER_EMAIL, PASSWORD, [Role.WORKER], is_service=True)
    port = _free_port()
    env = os.environ | {
        "DATABASE_URL": clean_db,
        "SKYFLEET_JWT_PRIVATE_KEY_FILE": jwt_key_file,
        "PORT": str(port),
        "SKYFLEET_LEASE_S": "2",
        "SKYFLEET_HEARTBEAT_INTERVAL_S": "0.5",
        "SKYFLEET_RESCUE_INTERVAL_S": "0.25",
        "SKYFLEET_WEB_WORKERS": "2",
        "SKYFLEET_STORAGE_DIR": str(tmp_path / "storage"),
        # The tests poll jobs many times a second as one admin; rate limits have their own tests.
        "SKYFLEET_RATE_LIMIT_PER_MINUTE": "0",
    } | api_env
    api = subprocess.Popen(API_COMMAND, env=env)
    url = f"http://127.0.0.1:{port}"

    fleet = None
    try:
        _wait_healthy(api, url)
        login = requests.post(f"{url}/api/auth/login", json={"email": "admin@example.org", "password": PASSWORD},
                              timeout=10)
        fleet = Fleet(url, engine, api, login.json()["data"]["access_token"], tmp_path / "storage",
                      tmp_path / "work", env)
        yield fleet
    finally:
        # Workers first, as skyfleet run stops them: with the API still up, a cancelled job's stop
        # reaches its worker and held results are delivered, so no worker waits out its grace.
        stop_processes(fleet.workers if fleet else [])
        stop_processes([fleet.api if fleet else api])
        engine.dispose()
