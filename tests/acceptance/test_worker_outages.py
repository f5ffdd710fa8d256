"""Workers keep working through API outages and answers the API cannot give.

A fault-injecting proxy (tests/acceptance/faultproxy.py) sits between the worker and the API:
it stages the outage (503s, dropped connections, expired tokens answered 401 while logins
get 503, as during a database restart) or fails the one request that carries a bad report.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from tests.acceptance.conftest import PASSWORD, WORKER_EMAIL, Fleet
from tests.acceptance.faultproxy import FaultProxy, fault_proxy, reports_in
from tests.helpers import wait_for
from worker.runtime import EXIT_REFUSED


@pytest.fixture
def proxy(fleet: Fleet) -> Iterator[FaultProxy]:
    with fault_proxy(fleet.url) as proxy:
        yield proxy


def _attempts(fleet: Fleet, job_id: int) -> list[tuple[int, str]]:
    """The attempts that ended (a running one has no row yet), with their outcomes."""
    with fleet.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT attempt, outcome FROM job_attempts WHERE job_id = :id ORDER BY attempt"), {"id": job_id})]


def _succeeded(fleet: Fleet, *jobs: dict[str, Any]) -> bool:
    return all(fleet.job(job["id"])["status"] == "SUCCEEDED" for job in jobs)


def test_a_worker_started_during_an_outage_waits_for_the_api_then_works(fleet: Fleet, proxy: FaultProxy):
    dropped = proxy.drop(times=2)
    unavailable = proxy.fail(503)
    worker = fleet.start_worker(SKYFLEET_API_URL=proxy.url, SKYFLEET_WORKER_STOP_GRACE_S="2")
    wait_for(lambda: worker.poll() is not None or unavailable.hits >= 3, timeout=30,
             what="the worker to try to log in through the outage")
    assert worker.poll() is None, "the worker exited during the outage"
    assert dropped.hits == 2

    proxy.heal()
    job = fleet.submit("sleep", {"seconds": 0, "tag": "after the outage"})
    wait_for(lambda: _succeeded(fleet, job), timeout=40, interval=0.2, what="the worker to register and run the job")
    assert worker.poll() is None


def _worker_env(url: str, tmp_path: Path, password: str = PASSWORD) -> dict[str, str]:
    return os.environ | {
        "SKYFLEET_API_URL": url,
        "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL,
        "SKYFLEET_WORKER_PASSWORD": password,
        "SKYFLEET_STORAGE_DIR": str(tmp_path / "storage"),
        "SKYFLEET_WORKER_WORK_DIR": str(tmp_path / "work"),
    }


def test_a_worker_waiting_for_the_api_stops_on_sigterm(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        nobody = f"http://127.0.0.1:{s.getsockname()[1]}"
    worker = subprocess.Popen([sys.executable, "-m", "worker"], env=_worker_env(nobody, tmp_path),
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: worker.poll() is not None or os.path.isdir(tmp_path / "work"), timeout=30,
                 what="the worker to start")
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=30)
    finally:
        worker.kill()
    assert worker.returncode == 0, stderr


def test_wrong_credentials_end_the_worker_with_one_line(fleet: Fleet, tmp_path: Path):
    worker = subprocess.Popen([sys.executable, "-m", "worker"], env=_worker_env(fleet.url, tmp_path, "not it"),
                              stderr=subprocess.PIPE, text=True)
    try:
        _, stderr = worker.communicate(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == EXIT_REFUSED
    errors = [line for line in stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and "login refused" in errors[0] and "SKYFLEET_WORKER_PASSWORD" in errors[0], stderr
    assert "Traceback" not in stderr


class TestTokenExpiringDuringAnOutage:
    @pytest.fixture
    def api_env(self) -> dict[str, str]:
        # The lease outlasts the outage (as one of PostgreSQL restarting would: nobody rescues
        # anything meanwhile); the access token does not.
        return {"SKYFLEET_ACCESS_TOKEN_TTL_S": "2", "SKYFLEET_LEASE_S": "60"}

    @pytest.fixture
    def admin(self, fleet: Fleet) -> Callable[[], Fleet]:
        """The fleet with an admin token young enough to use (they live 2 s here)."""
        logged_in_at = [0.0]

        def fresh() -> Fleet:
            if time.monotonic() - logged_in_at[0] > 1.0:
                login = requests.post(f"{fleet.url}/api/auth/login", timeout=10,
                                      json={"email": "admin@example.org", "password": PASSWORD})
                fleet.token = login.json()["data"]["access_token"]
                logged_in_at[0] = time.monotonic()
            return fleet

        return fresh

    def test_the_worker_survives_and_its_finished_job_is_accepted(self, admin: Callable[[], Fleet],
                                                                  proxy: FaultProxy):
        fleet = admin()
        worker = fleet.start_worker(SKYFLEET_API_URL=proxy.url, SKYFLEET_WORKER_STOP_GRACE_S="2")
        job = admin().submit("sleep", {"seconds": 4, "tag": "finished during the outage"})
        wait_for(lambda: admin().job(job["id"])["status"] == "IN_PROGRESS", timeout=15, what="the job to start")
        proxy.outage()

        def tried_to_report() -> bool:
            return bool(proxy.seen(where=lambda path, body: any(r["job_id"] == job["id"] for r in reports_in(body))))

        def tried_to_renew() -> bool:
            return bool(proxy.seen("/api/auth/refresh", 503) or proxy.seen("/api/auth/login", 503))

        wait_for(lambda: worker.poll() is not None or (tried_to_report() and tried_to_renew()),
                 timeout=30, what="the job to finish and the token to need renewing during the outage")
        assert worker.poll() is None, "the worker exited during the outage"
        assert proxy.seen(status=401), "no request was refused for an expired token"

        proxy.heal()
        wait_for(lambda: _succeeded(admin(), job), timeout=40, interval=0.2, what="the kept result to be accepted")
        assert _attempts(fleet, job["id"]) == [(1, "SUCCEEDED")]  # delivered, not rerun
        assert admin().job(job["id"])["attempt"] == 1
        assert worker.poll() is None


def _carries_poison(path: str, body: Any) -> bool:
    return any((r.get("result_payload") or {}).get("tag") == "poison" and r.get("attempt") == 1
               for r in reports_in(body))


def test_a_report_the_api_fails_on_is_dropped_and_the_worker_carries_on(fleet: Fleet, proxy: FaultProxy):
    """The API answers 500 to any request carrying one job's first report (claims and results alike)."""
    poison = proxy.fail(500, when=_carries_poison)
    worker = fleet.start_worker(SKYFLEET_API_URL=proxy.url, SKYFLEET_WORKER_STOP_GRACE_S="2")
    bad = fleet.submit("sleep", {"seconds": 0, "tag": "poison"})
    before = [fleet.submit("sleep", {"seconds": 0, "tag": f"before {i}"}) for i in range(3)]
    wait_for(lambda: poison.hits, timeout=30, what="the worker to report the poisoned job")
    after = [fleet.submit("sleep", {"seconds": 0, "tag": f"after {i}"}) for i in range(3)]
    wait_for(lambda: _succeeded(fleet, *before, *after), timeout=40, interval=0.2,
             what="the worker to go on claiming and reporting")

    # Dropped after bounded tries, its lease lapsed: the rescuer gave the job a second attempt,
    # whose report the API takes.
    wait_for(lambda: _succeeded(fleet, bad), timeout=40, interval=0.2, what="the dropped job to run again")
    assert _attempts(fleet, bad["id"]) == [(1, "EXPIRED"), (2, "SUCCEEDED")]
    # One claim, then REPORT_TRIES tries for each batch that held it as it was halved (≤ 7 reports).
    assert poison.hits <= 1 + 3 * 4
    assert worker.poll() is None


def test_a_worker_the_api_declared_lost_registers_again(fleet: Fleet):
    worker = fleet.start_worker(SKYFLEET_WORKER_STOP_GRACE_S="2")

    def registrations() -> int:
        with fleet.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM workers WHERE pid = :pid"),
                                    {"pid": worker.pid}).scalar_one())

    wait_for(registrations, timeout=30, what="the worker to register")
    # What the rescuer does to a worker silent for a minute (a partition, say): its claims get 409.
    with fleet.engine.begin() as conn:
        conn.execute(text("UPDATE workers SET stopped_at = now()"))
    job = fleet.submit("sleep", {"seconds": 0, "tag": "after being declared lost"})
    wait_for(lambda: _succeeded(fleet, job), timeout=30, interval=0.2, what="the worker to come back and run the job")
    assert registrations() == 2
    assert worker.poll() is None
