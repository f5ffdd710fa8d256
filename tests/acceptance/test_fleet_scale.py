"""A fleet of idle workers parked on the API starves nothing (the 1,000-worker figures: ``make bench``).

200 simulated workers register and long-poll their claims, one after another, as
``worker/runtime.py`` does when idle (and, idle, send nothing else). Meanwhile a real worker runs
a job across several leases, whose heartbeats must keep being answered, and ``/api/health``
must answer at once: with one thread parked per waiting claim (the API before gevent), 200
claims took every thread and both starved. Then a batch of jobs wakes as many parked claims
as it has jobs, and each job runs exactly once.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import requests
from sqlalchemy import text

from tests.acceptance.conftest import PASSWORD, WORKER_EMAIL, Fleet
from tests.helpers import wait_for

SIMULATED = 200
CLAIM_WAIT_S = 5.0


class IdleSwarm:
    """Simulated idle workers on threads sharing one access token."""

    def __init__(self, url: str, count: int) -> None:
        self.url = url
        self.stop = threading.Event()
        self.claimed: list[tuple[int, int]] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        login = requests.post(f"{url}/api/auth/login", json={"email": WORKER_EMAIL, "password": PASSWORD}, timeout=10)
        self.headers = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        self.threads = [threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(count)]
        for thread in self.threads:
            thread.start()

    def _work(self, index: int) -> None:
        session = requests.Session()
        try:
            response = session.post(f"{self.url}/api/workers", headers=self.headers, timeout=30,
                                    json={"name": f"sim-{index}", "job_types": ["noop"], "concurrency": 1})
            worker_id = response.json()["data"]["id"]
            reports: list[dict[str, Any]] = []
            while not self.stop.is_set():
                response = session.post(f"{self.url}/api/workers/{worker_id}/claim", headers=self.headers,
                                        json={"max_jobs": 1, "wait_s": CLAIM_WAIT_S, "results": reports},
                                        timeout=CLAIM_WAIT_S + 30)
                if response.status_code != 200:
                    self._error(f"claim answered {response.status_code}: {response.text[:200]}")
                    return
                reports = []
                for job in response.json()["data"]["jobs"]:
                    with self._lock:
                        self.claimed.append((job["job_id"], job["attempt"]))
                    reports.append({"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"],
                                    "status": "SUCCEEDED", "result_payload": {"ok": True}})
        except requests.RequestException as exc:
            self._error(f"{type(exc).__name__}: {exc}")
        finally:
            session.close()

    def _error(self, message: str) -> None:
        with self._lock:
            self.errors.append(message)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(CLAIM_WAIT_S + 35)


def _health_latencies(url: str, seconds: float) -> list[float]:
    """Probe /api/health every 100 ms for ``seconds``; the answers' latencies (any failure raises)."""
    latencies = []
    session = requests.Session()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        response = session.get(f"{url}/api/health", timeout=10)
        assert response.status_code == 200, response.text
        latencies.append(time.monotonic() - started)
        time.sleep(0.1)
    return latencies


def test_a_parked_fleet_starves_neither_heartbeats_nor_health_checks(fleet: Fleet):
    worker = fleet.start_worker(SKYFLEET_WORKER_TYPES="sleep")  # the noop jobs are the parked fleet's
    long_job = fleet.submit("sleep", {"seconds": 8, "tag": "across-four-leases"})  # leases are 2 s here
    fleet.wait_running(long_job["id"])
    swarm = IdleSwarm(fleet.url, SIMULATED)
    try:
        wait_for(lambda: _registered(fleet) >= SIMULATED, timeout=60, interval=0.25,
                 what="every simulated worker to register")
        time.sleep(1.0)  # their claims park
        latencies = sorted(_health_latencies(fleet.url, 5.0))
        # Generous bounds for a busy CI machine; the old API timed out here (> 10 s).
        assert latencies[-1] < 2.0, latencies[-5:]
        assert latencies[len(latencies) // 2] < 0.5, latencies

        wait_for(lambda: fleet.job(long_job["id"])["status"] == "SUCCEEDED", timeout=30, interval=0.25,
                 what="the long job to finish")
        # Its heartbeats were answered throughout: one attempt, never rescued.
        assert _attempts(fleet, long_job["id"]) == [(1, "SUCCEEDED")]

        response = requests.post(f"{fleet.url}/api/jobs/batch", headers=fleet.headers(), timeout=30, json={
            "jobs": [{"type": "noop", "input_payload": {"tag": f"wake-{i}"}} for i in range(SIMULATED)]})
        assert response.status_code in (200, 201), response.text
        ids = [job["id"] for job in response.json()["data"]]
        wait_for(lambda: _done(fleet, ids), timeout=60, interval=0.5, what="the batch to run")
        assert sorted(job_id for job_id, _ in swarm.claimed) == sorted(ids)  # each once, by the parked fleet
        assert swarm.errors == []
        assert _most_connections(fleet) <= 2 * (10 + 10) + 6  # the pools (+ overflow), LISTEN, maintenance
    finally:
        swarm.close()
    assert worker.poll() is None


def _registered(fleet: Fleet) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM workers WHERE name LIKE 'sim-%'")).scalar_one())


def _attempts(fleet: Fleet, job_id: int) -> list[tuple[int, str]]:
    with fleet.engine.connect() as conn:
        rows = conn.execute(text("SELECT attempt, outcome FROM job_attempts WHERE job_id = :id ORDER BY attempt"),
                            {"id": job_id}).all()
    return [(int(a), str(o)) for a, o in rows]


def _done(fleet: Fleet, ids: list[int]) -> bool:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND status = 'SUCCEEDED'"),
                                {"ids": ids}).scalar_one()) == len(ids)


def _most_connections(fleet: Fleet) -> int:
    with fleet.engine.connect() as conn:
        return int(conn.execute(text("""SELECT count(*) FROM pg_stat_activity
                                         WHERE datname = current_database() AND backend_type = 'client backend'"""))
                   .scalar_one())


def test_sigterm_answers_parked_claims_and_streams_and_the_api_stops_at_once(fleet: Fleet):
    """A stopping API (a deploy, a scale-in) does not sit out gunicorn's graceful timeout on its
    long polls, event streams and idle keep-alive connections: it answers them and exits."""
    login = requests.post(f"{fleet.url}/api/auth/login", json={"email": WORKER_EMAIL, "password": PASSWORD},
                          timeout=10)
    worker_headers = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
    session = requests.Session()  # its connection stays open, idle, after the registration
    worker_id = session.post(f"{fleet.url}/api/workers", headers=worker_headers, timeout=10,
                             json={"name": "parked", "job_types": ["noop"]}).json()["data"]["id"]
    job = fleet.submit("sleep", {"seconds": 30, "tag": "followed"})  # no worker runs sleep jobs here
    stream = requests.get(f"{fleet.url}/api/jobs/{job['id']}/events", headers=fleet.headers(), stream=True,
                          timeout=30)
    lines = stream.iter_lines()
    assert next(line for line in lines if line.startswith(b"event:")) == b"event: snapshot"
    answered: list[Any] = []
    claim = threading.Thread(target=lambda: answered.append(requests.post(
        f"{fleet.url}/api/workers/{worker_id}/claim", headers=worker_headers, timeout=40,
        json={"max_jobs": 1, "wait_s": 30})))
    claim.start()
    time.sleep(1.0)  # parked

    started = time.monotonic()
    fleet.api.terminate()
    claim.join(10)
    assert answered and answered[0].status_code == 200 and answered[0].json()["data"]["jobs"] == []
    rest = list(lines)  # the stream ends (the server closes it) rather than waiting out its keepalive
    assert any(b"stopping" in line for line in rest), rest
    assert fleet.api.wait(8) == 0
    assert time.monotonic() - started < 8  # well under graceful_timeout (10 s) + the parked waits
    session.close()
