"""The worker runtime as real processes: CPU hogs keep their leases, hard stops, ECS identity, API outages."""

from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from collections.abc import Iterator

import pytest
import requests
from sqlalchemy import text

from tests.acceptance.conftest import Fleet
from tests.helpers import wait_for


def _attempts(fleet: Fleet, job_id: int) -> list[tuple[int, str]]:
    """The attempts that ended (a running one has no row yet), with their outcomes."""
    with fleet.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT attempt, outcome FROM job_attempts WHERE job_id = :id ORDER BY attempt"), {"id": job_id})]


def test_a_job_holding_the_gil_keeps_its_lease(fleet: Fleet):
    """6 s of C code that never releases the GIL, on a 2 s lease: heartbeats go on from the parent."""
    fleet.start_worker()
    job = fleet.submit("sleep", {"seconds": 6, "mode": "hang"})
    wait_for(lambda: fleet.job(job["id"])["status"] == "SUCCEEDED", timeout=40, interval=0.2,
             what="the CPU-bound job to finish")
    assert fleet.job(job["id"])["attempt"] == 1
    assert _attempts(fleet, job["id"]) == [(1, "SUCCEEDED")]  # never rescued, never run twice


def test_a_cancelled_job_that_ignores_it_is_killed_after_the_grace(fleet: Fleet):
    fleet.start_worker(SKYFLEET_WORKER_CANCEL_GRACE_S="1", SKYFLEET_WORKER_CONCURRENCY="1")
    job = fleet.submit("sleep", {"seconds": 300, "mode": "hang"})
    fleet.wait_running(job["id"])
    response = requests.post(f"{fleet.url}/api/jobs/{job['id']}/cancel", headers=fleet.headers(), timeout=10)
    assert response.status_code == 200, response.text
    wait_for(lambda: fleet.job(job["id"])["status"] == "CANCELLED", timeout=15, interval=0.1,
             what="the job to be cancelled")
    # The worker's only slot is free again: the hung process was killed, not waited for.
    follow = fleet.submit("sleep", {"seconds": 0, "tag": "after"})
    wait_for(lambda: fleet.job(follow["id"])["status"] == "SUCCEEDED", timeout=15, what="the next job")


@pytest.fixture
def ecs_metadata() -> Iterator[str]:
    task = {"Cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/skyfleet",
            "TaskARN": "arn:aws:ecs:eu-west-1:123456789012:task/skyfleet/feedc0de"}

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(task).encode() if self.path == "/v4/c0ffee/task" else b"{}"
            self.send_response(200 if self.path == "/v4/c0ffee/task" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v4/c0ffee"
    server.shutdown()
    server.server_close()


def test_on_ecs_the_worker_registers_its_task_and_pool(fleet: Fleet, ecs_metadata: str):
    fleet.start_worker(ECS_CONTAINER_METADATA_URI_V4=ecs_metadata, SKYFLEET_WORKER_POOL="large",
                       SKYFLEET_WORKER_REVISION="skyfleet-worker-large:3", SKYFLEET_WORKER_LAUNCH_ID="l-1")

    def registered() -> tuple[str, str, dict[str, str]] | None:
        with fleet.engine.connect() as conn:
            row = conn.execute(text("SELECT ecs_task_arn, ecs_cluster_arn, attributes FROM workers")).first()
        return tuple(row) if row else None  # type: ignore[return-value]

    task_arn, cluster_arn, attributes = wait_for(registered, timeout=20, what="the worker to register")
    assert task_arn == "arn:aws:ecs:eu-west-1:123456789012:task/skyfleet/feedc0de"
    assert cluster_arn == "arn:aws:ecs:eu-west-1:123456789012:cluster/skyfleet"
    assert attributes == {"pool": "large", "revision": "skyfleet-worker-large:3", "launch_id": "l-1"}


class TestApiOutage:
    @pytest.fixture
    def api_env(self) -> dict[str, str]:
        return {"SKYFLEET_LEASE_S": "60", "SKYFLEET_HEARTBEAT_INTERVAL_S": "1"}

    def test_a_result_finished_while_the_api_is_down_is_delivered_later(self, fleet: Fleet):
        fleet.start_worker()
        job = fleet.submit("sleep", {"seconds": 2, "tag": "outage"})
        fleet.wait_running(job["id"])
        fleet.restart_api(down_s=5)  # the job finishes while nobody answers
        wait_for(lambda: fleet.job(job["id"])["status"] == "SUCCEEDED", timeout=40, interval=0.2,
                 what="the kept result to be delivered")
        assert _attempts(fleet, job["id"]) == [(1, "SUCCEEDED")]
        result = requests.get(f"{fleet.url}/api/jobs/{job['id']}/result", headers=fleet.headers(), timeout=10)
        assert result.json()["data"]["result_payload"]["tag"] == "outage"


class TestOutageLongerThanTheLease:
    @pytest.fixture
    def api_env(self) -> dict[str, str]:
        return {"SKYFLEET_OUTAGE_GRACE_S": "8"}

    def test_work_finished_during_the_outage_is_kept(self, fleet: Fleet):
        """Leases (2 s here) lapse while the API is down. The restarted API's rescuer must not
        take the jobs back before the workers' heartbeats and held results reach it, even when
        a worker comes back a while after the API (frozen here with SIGSTOP)."""
        worker = fleet.start_worker()
        jobs = [fleet.submit("sleep", {"seconds": 1.5, "tag": f"long-outage-{i}"}) for i in range(3)]
        for job in jobs:
            fleet.wait_running(job["id"])
        worker.send_signal(signal.SIGSTOP)  # its job processes run on and finish meanwhile
        try:
            fleet.restart_api(down_s=3)
            time.sleep(1.5)  # the new API's rescuer makes several passes while the worker is away
        finally:
            worker.send_signal(signal.SIGCONT)
        for job in jobs:
            wait_for(lambda job=job: fleet.job(job["id"])["status"] == "SUCCEEDED", timeout=40, interval=0.2,
                     what="the held result to be accepted")
            assert _attempts(fleet, job["id"]) == [(1, "SUCCEEDED")]  # not rescued and run again


def test_a_drained_worker_finishes_its_jobs_however_long_then_exits(fleet: Fleet):
    """Draining (scale-in, redeploy) is not SIGTERM: no grace period, nothing released."""
    worker = fleet.start_worker(SKYFLEET_WORKER_STOP_GRACE_S="1")
    job = fleet.submit("sleep", {"seconds": 4, "tag": "drained"})
    fleet.wait_running(job["id"])
    with fleet.engine.connect() as conn:
        worker_id = conn.execute(text("SELECT id FROM workers WHERE pid = :pid"), {"pid": worker.pid}).scalar_one()
    response = requests.post(f"{fleet.url}/api/manager/workers/drain", headers=fleet.headers(), timeout=10,
                             json={"worker_ids": [worker_id], "only_idle": False})
    assert response.json()["data"]["drained"] == [worker_id]
    assert worker.wait(30) == 0
    assert fleet.job(job["id"])["status"] == "SUCCEEDED"
    assert _attempts(fleet, job["id"]) == [(1, "SUCCEEDED")]  # finished, not released after 1 s


def _descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (Linux /proc)."""
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            with open(f"/proc/{parent}/task/{parent}/children") as f:
                children = [int(c) for c in f.read().split()]
        except FileNotFoundError:
            continue
        found.update(children)
        todo += children
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_a_sigkilled_workers_job_process_dies_with_it(fleet: Fleet):
    """No orphan keeps computing a job whose lease will be rescued and run elsewhere."""
    worker = fleet.start_worker(SKYFLEET_WORKER_CONCURRENCY="1")
    job = fleet.submit("sleep", {"seconds": 120, "mode": "hang"})
    fleet.wait_running(job["id"])
    below = wait_for(lambda: _descendants(worker.pid) if len(_descendants(worker.pid)) >= 2 else None,
                     timeout=10, what="the forkserver and the job's process")
    worker.kill()
    worker.wait(10)
    wait_for(lambda: not any(_alive(pid) for pid in below), timeout=10, interval=0.1,
             what="the job's process to die with its worker")
