"""The whole fleet as real processes: jobs flow end to end, SIGKILL and SIGTERM behave."""

from __future__ import annotations

import signal

import requests
from sqlalchemy import text

from tests.acceptance.conftest import Fleet
from tests.helpers import wait_for


def _statuses(fleet: Fleet) -> dict[str, int]:
    with fleet.engine.connect() as conn:
        return dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())


def _holder_pid(fleet: Fleet, job_id: int) -> int | None:
    with fleet.engine.connect() as conn:
        return conn.execute(text("""
            SELECT w.pid FROM jobs j JOIN workers w ON w.id = j.worker_id
            WHERE j.id = :id AND j.status = 'IN_PROGRESS'"""), {"id": job_id}).scalar_one_or_none()


def test_jobs_flow_through_two_workers(fleet: Fleet):
    fleet.start_worker(SKYFLEET_WORKER_CONCURRENCY="4")
    fleet.start_worker(SKYFLEET_WORKER_CONCURRENCY="4")
    batch = [{"type": "sleep", "input_payload": {"seconds": 0.05, "tag": str(i)}} for i in range(60)]
    batch += [{"type": "sleep", "input_payload": {"fail_attempts": 1, "tag": f"retry-{i}"}} for i in range(5)]
    batch += [{"type": "sleep", "input_payload": {"fail_attempts": 1, "permanent": True, "tag": "bad"}}]
    response = requests.post(f"{fleet.url}/api/jobs/batch", json={"jobs": batch}, headers=fleet.headers(), timeout=10)
    assert response.status_code == 201
    wait_for(lambda: _statuses(fleet) == {"SUCCEEDED": 65, "FAILED": 1}, timeout=60, interval=0.2,
             what="every job to finish")
    with fleet.engine.connect() as conn:
        workers_used = conn.execute(text("SELECT count(DISTINCT worker_id) FROM job_attempts")).scalar_one()
        retried = conn.execute(text("SELECT count(*) FROM jobs WHERE attempt = 2")).scalar_one()
    assert workers_used == 2
    assert retried == 5


def test_sigkilled_workers_job_is_rescued_then_times_out(fleet: Fleet):
    first = fleet.start_worker()
    job = fleet.submit("sleep", {"seconds": 300})
    fleet.wait_running(job["id"])
    assert _holder_pid(fleet, job["id"]) == first.pid
    first.send_signal(signal.SIGKILL)
    wait_for(lambda: fleet.job(job["id"])["status"] == "PENDING", timeout=15, interval=0.05,
             what="the rescuer to return the job")
    assert fleet.job(job["id"])["error"]["code"] == "LEASE_EXPIRED"
    # Rescued soon after the lease (2 s) expired, on the database's clock (the test process's
    # clock would also count how long this busy machine took to schedule it). The bound leaves
    # room for a rescuer pass a loaded machine delayed, and the grace such a gap triggers.
    # The job row keeps its last attempt's lease until the next claim (no worker runs now).
    with fleet.engine.connect() as conn:
        late_s = conn.execute(text("""SELECT extract(epoch FROM t.ended_at - j.lease_expires_at)
                                      FROM job_attempts t JOIN jobs j ON j.id = t.job_id
                                      WHERE t.job_id = :id AND t.attempt = 1 AND t.outcome = 'EXPIRED'"""),
                              {"id": job["id"]}).scalar_one()
    assert float(late_s) < 5

    # Attempts 2 and 3 die the same way; then the job is TIMED_OUT, not retried forever.
    for attempt in (2, 3):
        worker = fleet.start_worker()
        wait_for(lambda n=attempt, pid=worker.pid: fleet.job(job["id"])["attempt"] == n
                 and _holder_pid(fleet, job["id"]) == pid, timeout=20, what=f"attempt {attempt} to start")
        worker.send_signal(signal.SIGKILL)
    wait_for(lambda: fleet.job(job["id"])["status"] == "TIMED_OUT", timeout=10, what="the job to time out")


def test_sigterm_finishes_running_jobs_and_exits_zero(fleet: Fleet):
    worker = fleet.start_worker(SKYFLEET_WORKER_CONCURRENCY="2")
    job = fleet.submit("sleep", {"seconds": 1.5})
    fleet.wait_running(job["id"])
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert fleet.job(job["id"])["status"] == "SUCCEEDED"
    with fleet.engine.connect() as conn:
        stopped = conn.execute(text("SELECT stopped_at IS NOT NULL FROM workers")).scalar_one()
    assert stopped


def test_cancel_reaches_the_running_handler(fleet: Fleet):
    fleet.start_worker()
    job = fleet.submit("sleep", {"seconds": 120})
    fleet.wait_running(job["id"])
    response = requests.post(f"{fleet.url}/api/jobs/{job['id']}/cancel", headers=fleet.headers(), timeout=10)
    assert response.json()["data"]["cancel_requested"] is True
    wait_for(lambda: fleet.job(job["id"])["status"] == "CANCELLED", timeout=10, what="the worker to stop the job")
    with fleet.engine.connect() as conn:
        outcome = conn.execute(text("SELECT outcome FROM job_attempts")).scalar_one()
    assert outcome == "CANCELLED"  # acknowledged by the worker, not lapsed


def test_health(fleet: Fleet):
    body = requests.get(f"{fleet.url}/api/health", timeout=5).json()
    assert body["status"] == "healthy" and body["database"] == "connected"


def test_sigterm_releases_jobs_that_outlive_the_grace_period(fleet: Fleet):
    worker = fleet.start_worker(SKYFLEET_WORKER_STOP_GRACE_S="1")
    job = fleet.submit("sleep", {"seconds": 120})
    fleet.wait_running(job["id"])
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    released = fleet.job(job["id"])
    assert released["status"] == "PENDING" and released["max_attempts"] == 4  # not counted as an attempt
    with fleet.engine.connect() as conn:
        assert conn.execute(text("SELECT outcome FROM job_attempts")).scalar_one() == "RELEASED"
    other = fleet.start_worker(SKYFLEET_WORKER_STOP_GRACE_S="1")  # the teardown need not wait out the job
    wait_for(lambda: _holder_pid(fleet, job["id"]) == other.pid, timeout=15, what="another worker to take it")
