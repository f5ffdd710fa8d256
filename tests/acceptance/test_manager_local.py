"""The manager as a real process with the local backend, against the API under gunicorn.

Short settings (tick 0.5 s, scale-in window 2 s, idle-to-zero 3 s, pool max 3, two jobs per
worker) so a burst goes 0 → max → 0 in seconds. "No busy worker killed" is read from the
database: every job finished in its first attempt, no attempt was RELEASED (a SIGTERMed busy
worker) or EXPIRED (a killed one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import text

from api.auth import service as accounts
from api.auth.models import Role
from tests.acceptance.conftest import PASSWORD, WORKER_EMAIL, Fleet
from tests.helpers import wait_for

MANAGER_EMAIL = accounts.service_email("fleet-manager")
POOL = "local"
MAX = 3


class ManagerProcess:
    def __init__(self, fleet: Fleet, log_path: Path) -> None:
        self.fleet, self.log_path = fleet, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, **pool: Any) -> None:
        config = {"name": POOL, "job_types": ["sleep"], "max": MAX, "jobs_per_worker": 2,
                  "scale_in_window_s": 2, "idle_to_zero_s": 3, "max_step": MAX, "start_timeout_s": 60,
                  "drain_grace_s": 15,
                  "env": {"SKYFLEET_WORKER_CONCURRENCY": "2", "SKYFLEET_WORKER_CLAIM_WAIT_S": "1"}} | pool
        env = os.environ | {
            "SKYFLEET_API_URL": self.fleet.url,
            "SKYFLEET_MANAGER_EMAIL": MANAGER_EMAIL,
            "SKYFLEET_MANAGER_PASSWORD": PASSWORD,
            "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL,
            "SKYFLEET_WORKER_PASSWORD": PASSWORD,
            "SKYFLEET_MANAGER_TICK_S": "0.5",
            "SKYFLEET_MANAGER_DECISION_REFRESH_S": "5",
            "SKYFLEET_MANAGER_POOLS": json.dumps([config]),
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 — the child holds it; closed after the wait
        self.proc = subprocess.Popen([sys.executable, "-m", "manager"], env=env, stdout=log,
                                     stderr=subprocess.STDOUT)
        log.close()

    def stop(self) -> int:
        """SIGTERM, as the launcher does; the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@pytest.fixture
def manager(fleet: Fleet, tmp_path: Path) -> Iterator[ManagerProcess]:
    with fleet.engine.begin() as conn:
        accounts.create_user(conn, MANAGER_EMAIL, PASSWORD, [Role.MANAGER], is_service=True)
    process = ManagerProcess(fleet, tmp_path / "manager.log")
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.stop()
        print(process.log() if process.log_path.exists() else "(no manager log)")


def get(fleet: Fleet, path: str) -> dict[str, Any]:
    response = requests.get(f"{fleet.url}{path}", headers=fleet.headers(), timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


def post(fleet: Fleet, path: str, body: dict[str, Any]) -> Any:
    response = requests.post(f"{fleet.url}{path}", json=body, headers=fleet.headers(), timeout=10)
    assert response.status_code in (200, 201), response.text
    return response.json()["data"]


def live_workers(fleet: Fleet) -> list[dict[str, Any]]:
    return [w for w in get(fleet, "/api/manager/workers")["workers"] if w["pool"] == POOL]


def pool_status(fleet: Fleet) -> dict[str, Any]:
    pools = {p["name"]: p for p in get(fleet, "/api/admin/status")["pools"]}
    return dict(pools.get(POOL) or {})


def submit_sleeps(fleet: Fleet, count: int, seconds: float, tag: str) -> None:
    jobs = [{"type": "sleep", "input_payload": {"seconds": seconds, "tag": f"{tag}-{i}"}}
            for i in range(count)]
    post(fleet, "/api/jobs/batch", {"jobs": jobs})


def job_summary(fleet: Fleet) -> dict[str, Any]:
    with fleet.engine.connect() as conn:
        statuses: dict[str, int] = dict(
            conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        # Attempts that ended, and the running ones (on their job rows) as OPEN.
        outcomes: dict[str, int] = dict(conn.execute(text(
            """SELECT outcome, count(*) FROM job_attempts GROUP BY 1
               UNION ALL
               SELECT 'OPEN', count(*) FROM jobs WHERE status = 'IN_PROGRESS' HAVING count(*) > 0""")).all())
        retried = conn.execute(text("SELECT count(*) FROM jobs WHERE attempt > 1")).scalar_one()
    return {"statuses": statuses, "outcomes": outcomes, "retried": retried}


def watch(fleet: Fleet, until: Any, timeout: float, what: str) -> int:
    """Poll every 0.1 s until ``until()``; the most live workers of the pool seen meanwhile."""
    most = 0
    deadline = time.monotonic() + timeout
    while True:
        most = max(most, len(live_workers(fleet)))
        if until():
            return most
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.1)


def test_burst_scales_zero_to_max_and_back_losing_nothing(fleet: Fleet, manager: ManagerProcess):
    manager.start()
    wait_for(lambda: pool_status(fleet).get("decisions"), timeout=20, interval=0.2, what="the first decision")
    assert live_workers(fleet) == []
    submit_sleeps(fleet, 30, 0.5, "burst")
    most = watch(fleet, lambda: job_summary(fleet)["statuses"] == {"SUCCEEDED": 30}, 90,
                 "the burst to finish")
    assert most == MAX
    # Back to zero once idle (window 2 s, idle-to-zero 3 s, drained workers exit after one 1 s long poll).
    most_after = watch(fleet, lambda: not live_workers(fleet), 40, "the pool to scale back to zero")
    assert most_after <= MAX
    summary = job_summary(fleet)
    assert summary == {"statuses": {"SUCCEEDED": 30}, "outcomes": {"SUCCEEDED": 30}, "retried": 0}
    status = pool_status(fleet)
    actions = [d["action"] for d in status["decisions"]]
    assert "scale_out" in actions and "scale_in" in actions
    assert all(d["reason"] for d in status["decisions"])
    assert get(fleet, "/api/admin/status")["manager"]["active"]
    with fleet.engine.connect() as conn:
        # Every worker of the pool registered with what the manager gave it, and stopped by itself.
        rows = conn.execute(text("SELECT attributes, stopped_at FROM workers")).all()
    assert len(rows) >= MAX
    assert all(r.attributes["pool"] == POOL and r.attributes["revision"].startswith("g0-") for r in rows)
    assert all(r.stopped_at is not None for r in rows)
    assert manager.stop() == 0
    assert not get(fleet, "/api/admin/status")["manager"]["active"]   # the lease was released


def test_redeploy_replaces_every_worker_losing_no_job(fleet: Fleet, manager: ManagerProcess):
    manager.start()
    wait_for(lambda: pool_status(fleet).get("decisions"), timeout=20, interval=0.2, what="the first decision")
    post(fleet, "/api/admin/scale", {"pool": POOL, "count": 2})
    wait_for(lambda: len(live_workers(fleet)) == 2, timeout=30, interval=0.2, what="two pinned workers")
    old = {w["id"] for w in live_workers(fleet)}
    submit_sleeps(fleet, 16, 1.0, "redeploy")
    wait_for(lambda: job_summary(fleet)["statuses"].get("IN_PROGRESS", 0) >= 2, timeout=20, interval=0.1,
             what="jobs to run")
    answer = post(fleet, "/api/admin/redeploy", {"pool": POOL})
    assert answer["redeploy_generation"] == 1 and set(answer["drained"]) == old

    def replaced() -> bool:
        workers = live_workers(fleet)
        return len(workers) == 2 and all(w["id"] not in old and w["revision"].startswith("g1-")
                                         for w in workers)

    wait_for(replaced, timeout=40, interval=0.2, what="two new-generation workers")
    wait_for(lambda: job_summary(fleet)["statuses"] == {"SUCCEEDED": 16}, timeout=60, interval=0.2,
             what="every job to finish")
    summary = job_summary(fleet)
    # EXPIRED here means a drained worker exited before its last results were sent: the worker's
    # _execute marks the lease finished and frees the slot before queueing the report.
    assert summary["outcomes"] == {"SUCCEEDED": 16} and summary["retried"] == 0, summary
    with fleet.engine.connect() as conn:
        stopped = conn.execute(text("SELECT count(*) FROM workers WHERE id = ANY(:ids) "
                                    "AND stopped_at IS NOT NULL"), {"ids": list(old)}).scalar_one()
    assert stopped == len(old)   # the old ones finished their jobs and exited on their own
    assert manager.stop() == 0
