"""``/metrics`` of the API under gunicorn (2 processes) while a real worker runs jobs.

Each gunicorn process writes its counters to its own files in PROMETHEUS_MULTIPROC_DIR; a
scrape, whichever process answers it, must give the sum over all of them. The test reads
each process's files on its own too, so it can tell a real sum from one process's view.
"""

from __future__ import annotations

import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.acceptance.conftest import PASSWORD, WORKER_EMAIL, Fleet
from tests.helpers import wait_for

SLEEP_OK, SLEEP_RETRIED, SLEEP_BAD, SCHEDULED = 12, 2, 1, 3
#: How long the claim carrying a report waits for work (well under the API's 30 s cap).
CARRIER_WAIT_S = 10.0


@pytest.fixture
def metrics_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory the API is given, holding a file from an "earlier run" it must wipe."""
    directory = tmp_path / "metrics"
    directory.mkdir()
    (directory / "counter_1.db").write_bytes(b"left over from an earlier server")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return directory


@pytest.fixture
def metered_fleet(metrics_dir: Path, request: pytest.FixtureRequest) -> Fleet:
    """The fleet, started only once the metrics directory is in the environment it inherits."""
    fleet: Fleet = request.getfixturevalue("fleet")
    return fleet


def scrape(fleet: Fleet) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    # A new connection per scrape, so scrapes land on either gunicorn process.
    response = requests.get(f"{fleet.url}/metrics", timeout=10)
    assert response.status_code == 200
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def per_process(directory: Path, name: str, **labels: str) -> dict[int, float]:
    """One sample's value in each process's own files."""
    pids = {int(path.stem.rsplit("_", 1)[1]) for path in directory.glob("*.db")}
    values = {}
    for pid in pids:
        with tempfile.TemporaryDirectory() as alone:
            for path in directory.glob(f"*_{pid}.db"):
                shutil.copy(path, alone)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=alone)
            values[pid] = registry.get_sample_value(name, labels) or 0.0
    return values


class TestWorker:
    """The test acting as a second worker for ``noop`` jobs, one new connection per request."""

    __test__ = False

    def __init__(self, url: str) -> None:
        self.url = url
        login = requests.post(f"{url}/api/auth/login", json={"email": WORKER_EMAIL, "password": PASSWORD},
                              timeout=10)
        self.headers = {"Authorization": f"Bearer {login.json()['data']['access_token']}"}
        registered = requests.post(f"{url}/api/workers", json={"name": "test", "job_types": ["noop"]},
                                   headers=self.headers, timeout=10)
        self.worker_id = registered.json()["data"]["id"]

    def run_one(self) -> None:
        claimed = self.post("claim", {"max_jobs": 1, "wait_s": 5})["jobs"]
        assert len(claimed) == 1
        job = claimed[0]
        self.post("results", {"results": [{"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"],
                                           "status": "SUCCEEDED", "result_payload": {}}]})

    def post(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        response = requests.post(f"{self.url}/api/workers/{self.worker_id}/{action}", json=body,
                                 headers=self.headers, timeout=15)
        assert response.status_code == 200, response.text
        return dict(response.json()["data"])


def test_counters_sum_over_gunicorn_processes_and_gauges_match_the_queue(metered_fleet: Fleet, metrics_dir: Path):
    fleet = metered_fleet
    assert not (metrics_dir / "counter_1.db").exists(), "the master did not wipe the metrics directory"
    fleet.start_worker(SKYFLEET_WORKER_TYPES="sleep", SKYFLEET_WORKER_CONCURRENCY="4")
    batch = [{"type": "sleep", "input_payload": {"seconds": 0.02, "tag": f"ok-{i}"}} for i in range(SLEEP_OK)]
    batch += [{"type": "sleep", "input_payload": {"fail_attempts": 1, "tag": f"retry-{i}"}}
              for i in range(SLEEP_RETRIED)]
    batch += [{"type": "sleep", "input_payload": {"fail_attempts": 1, "permanent": True, "tag": "bad"}}]
    batch += [{"type": "sleep", "input_payload": {"tag": f"later-{i}"}, "run_after": "2099-01-01T00:00:00Z"}
              for i in range(SCHEDULED)]
    response = requests.post(f"{fleet.url}/api/jobs/batch", json={"jobs": batch}, headers=fleet.headers(),
                             timeout=10)
    assert response.status_code == 201

    # noop jobs run by the test, until the reports have landed in both gunicorn processes.
    helper = TestWorker(fleet.url)
    noop_done = 0
    while len([v for v in per_process(metrics_dir, "skyfleet_jobs_completed_total", type="noop").values() if v]) < 2:
        assert noop_done < 40, "every report reached the same gunicorn process"
        fleet.submit("noop", {"tag": str(noop_done)})
        helper.run_one()
        noop_done += 1

    def statuses() -> dict[str, int]:
        with fleet.engine.connect() as conn:
            return dict(conn.execute(text("SELECT status, count(*) FROM jobs WHERE type = 'sleep' GROUP BY status"))
                        .all())

    wait_for(lambda: statuses() == {"SUCCEEDED": SLEEP_OK + SLEEP_RETRIED, "FAILED": SLEEP_BAD,
                                    "PENDING": SCHEDULED}, timeout=60, interval=0.2, what="the sleep jobs to finish")
    sleep_attempts = SLEEP_OK + 2 * SLEEP_RETRIED + SLEEP_BAD
    expected = {
        ("skyfleet_jobs_completed_total", "sleep"): SLEEP_OK + SLEEP_RETRIED,
        ("skyfleet_jobs_retried_total", "sleep"): SLEEP_RETRIED,
        ("skyfleet_jobs_failed_total", "sleep"): SLEEP_BAD,
        ("skyfleet_job_claim_latency_seconds_count", "sleep"): sleep_attempts,
        ("skyfleet_job_duration_seconds_count", "sleep"): sleep_attempts,
        ("skyfleet_jobs_completed_total", "noop"): noop_done,
        ("skyfleet_job_duration_seconds_count", "noop"): noop_done,
    }
    with fleet.engine.connect() as conn:
        pending = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'PENDING'")).scalar_one()
    assert pending == SCHEDULED

    # The API counts a report once its transaction has committed, so the queue can show the last job
    # finished a moment before the counters do (the worker's report is not the test's request): wait
    # for them to catch up; from then on every scrape must be exact. (That the moment is short, not a
    # whole long poll, is the next test's.)
    def caught_up() -> bool:
        got = scrape(fleet)
        return all(got.get((name, frozenset({("type", job_type)})), 0.0) >= want
                   for (name, job_type), want in expected.items())

    wait_for(caught_up, timeout=10, interval=0.1, what="the counters to catch up with the queue")

    # Scrapes, each answered by whichever process takes its connection, until both have answered:
    # every one gives the sums over both processes.
    def scrapers() -> int:
        served = per_process(metrics_dir, "skyfleet_http_requests_total", method="GET", route="/metrics",
                             status="200")
        return len([v for v in served.values() if v])

    scrapes = 0
    while scrapes < 3 or scrapers() < 2:
        assert scrapes < 40, "every scrape reached the same gunicorn process"
        got = scrape(fleet)
        scrapes += 1
        for (name, job_type), want in expected.items():
            assert got.get((name, frozenset({("type", job_type)}))) == want, (name, job_type)
        assert got[("pending_tasks_total", frozenset())] == pending
        assert got[("skyfleet_jobs_pending", frozenset({("type", "sleep"), ("state", "scheduled")}))] == SCHEDULED
        assert got[("skyfleet_database_up", frozenset())] == 1
    for (name, job_type), want in expected.items():
        assert sum(per_process(metrics_dir, name, type=job_type).values()) == want, (name, job_type)


def test_a_report_carried_by_a_long_polling_claim_counts_once_accepted_not_when_the_claim_answers(
        metered_fleet: Fleet):
    """A worker's next claim carries its finished reports, then may wait up to 30 s for work. The queue
    shows those jobs finished at once; the counters must too, not only once the wait is over."""
    fleet = metered_fleet
    helper = TestWorker(fleet.url)
    fleet.submit("noop", {"tag": "carried"})
    (job,) = helper.post("claim", {"max_jobs": 1, "wait_s": 5})["jobs"]
    report = {"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"], "status": "SUCCEEDED",
              "result_payload": {}}

    def completed() -> float:
        return scrape(fleet).get(("skyfleet_jobs_completed_total", frozenset({("type", "noop")})), 0.0)

    with ThreadPoolExecutor(1) as pool:
        # No other noop job is queued, so this claim waits its whole CARRIER_WAIT_S after the report.
        carrier = pool.submit(helper.post, "claim", {"max_jobs": 1, "wait_s": CARRIER_WAIT_S, "results": [report]})
        wait_for(lambda: fleet.job(job["job_id"])["status"] == "SUCCEEDED", timeout=CARRIER_WAIT_S / 2,
                 what="the carried report to be accepted")
        wait_for(lambda: completed() == 1, timeout=CARRIER_WAIT_S / 2, interval=0.1,
                 what="the accepted report to be counted while its claim still waits")
        assert not carrier.done(), "the claim answered before the report was counted"
        answer = carrier.result()
    assert answer["jobs"] == [] and [r["accepted"] for r in answer["results"]] == [True]
    assert completed() == 1
