"""A claim commits asynchronously; PostgreSQL crashing right after answering it is harmless.

The claim's commit record is still in PostgreSQL's WAL buffers when the worker gets its
answer. The server is killed there (its WAL writer held stopped, so nothing else flushes the
record first): recovery rolls the claim back, and the job is PENDING at attempt 0 again. The
worker already holds that attempt's token. The test shows that token is dead for good: its
heartbeat hears "lost", its report is refused, and the next claim — attempt 1 again — gets a
new token, whose report is the one accepted. A submission, committed synchronously, survives.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
from flask import Flask

from api.auth import service as accounts
from api.auth.models import Role
from api.config import Settings
from api.embedded import EmbeddedPostgres
from api.migrate import upgrade
from tests.integration.conftest import As, make_account, running_app


class CrashablePostgres:
    """A PostgreSQL of this test's own, which it kills like a power cut (every process SIGKILLed)."""

    def __init__(self, pgdata: Path) -> None:
        self.embedded = EmbeddedPostgres(pgdata)
        with psycopg.connect(self.embedded.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET autovacuum = off")  # no writer of its own in the way
            conn.execute("SELECT pg_reload_conf()")
        self.url = _sqlalchemy_url(self.embedded.ensure_database("crash"))

    def postmaster(self) -> psutil.Process:
        pid = int((self.embedded.pgdata / "postmaster.pid").read_text().split()[0])
        return psutil.Process(pid)

    def hold_wal_writer(self) -> None:
        """SIGSTOP the WAL writer: an asynchronous commit stays in memory until something flushes it."""
        with psycopg.connect(self.embedded.url(), autocommit=True) as conn:
            row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walwriter'").fetchone()
        assert row is not None, "no WAL writer process"
        os.kill(row[0], signal.SIGSTOP)

    def crash(self) -> None:
        postmaster = self.postmaster()
        for process in [postmaster, *postmaster.children(recursive=True)]:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs([postmaster], timeout=10)

    def restart(self) -> None:
        self.embedded._server.start()  # crash recovery on the same data directory and socket

    def stop(self) -> None:
        self.embedded.stop()


def _sqlalchemy_url(libpq: str) -> str:
    from tests.conftest import _as_url

    return _as_url(libpq)


@pytest.fixture
def crashable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashablePostgres]:
    # A short path: the server's Unix socket lives in its data directory (108-byte limit).
    server = CrashablePostgres(Path(tmp_path_factory.mktemp("crash")) / "pg")
    upgrade(server.url)
    yield server
    server.stop()


@pytest.fixture
def app(crashable: CrashablePostgres, jwt_private_key: str, tmp_path: Path) -> Iterator[Flask]:
    settings = Settings(database_url=crashable.url, jwt_private_key=jwt_private_key, background=False,
                        lease_s=30.0, storage_dir=str(tmp_path / "storage"))
    with running_app(settings) as app:
        yield app


def until_answered(call: Any, timeout_s: float = 30.0) -> Any:
    """Repeat a request while the API answers 503 (the database is recovering), as a worker does."""
    deadline = time.monotonic() + timeout_s
    while True:
        response = call()
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


def test_a_claim_lost_in_a_crash_leaves_a_token_that_is_never_valid_again(crashable: CrashablePostgres, app: Flask):
    user = make_account(app, "astro@example.org", [Role.USER])
    worker = make_account(app, accounts.service_email("crash"), [Role.WORKER], is_service=True)
    worker_id = worker.post("/api/workers", {"name": "w", "job_types": ["noop"]}).json["data"]["id"]
    submitted = user.post("/api/jobs", {"type": "noop", "input_payload": {}})
    assert submitted.status_code == 201, submitted.json
    job_id = submitted.json["data"]["id"]

    crashable.hold_wal_writer()
    answer = worker.post(f"/api/workers/{worker_id}/claim", {"max_jobs": 1})
    assert answer.status_code == 200, answer.json
    [lost] = answer.json["data"]["jobs"]
    assert (lost["job_id"], lost["attempt"]) == (job_id, 1)
    crashable.crash()
    crashable.restart()

    # The claim was rolled back; the submission (a synchronous commit) was not.
    job = until_answered(lambda: user.get(f"/api/jobs/{job_id}"))
    assert job.status_code == 200, job.json
    assert (job.json["data"]["status"], job.json["data"]["attempt"]) == ("PENDING", 0)

    held = {"job_id": job_id, "attempt": 1, "token": lost["token"]}
    beat = until_answered(lambda: worker.post(f"/api/workers/{worker_id}/heartbeat", {"jobs": [held]}))
    assert beat.status_code == 200, beat.json
    assert [(s["job_id"], s["reason"]) for s in beat.json["data"]["stop"]] == [(job_id, "lost")]

    # The same attempt number comes round again, under a new token.
    [again] = until_answered(lambda: worker.post(f"/api/workers/{worker_id}/claim", {"max_jobs": 1})).json["data"]["jobs"]
    assert (again["job_id"], again["attempt"]) == (job_id, 1)
    assert uuid.UUID(again["token"]) != uuid.UUID(lost["token"])

    # The run that began from the lost claim reports first: refused, whatever it says.
    stale = _report(worker, worker_id, held | {"status": "SUCCEEDED", "result_payload": {"run": "lost"}})
    assert stale.status_code == 409 and stale.json["error"]["details"]["results"][0]["accepted"] is False
    fresh = _report(worker, worker_id, {"job_id": job_id, "attempt": 1, "token": again["token"],
                                        "status": "SUCCEEDED", "result_payload": {"run": "again"}})
    assert fresh.status_code == 200 and fresh.json["data"]["results"][0]["accepted"] is True

    result = user.get(f"/api/jobs/{job_id}/result")
    assert result.json["data"]["result_payload"] == {"run": "again"}
    with psycopg.connect(crashable.embedded.url("crash")) as conn:
        outcomes = conn.execute("SELECT outcome, lease_token FROM job_attempts WHERE job_id = %s", (job_id,)).fetchall()
    assert outcomes == [("SUCCEEDED", uuid.UUID(again["token"]))]


def _report(worker: As, worker_id: int, report: dict[str, Any]) -> Any:
    return worker.post(f"/api/workers/{worker_id}/results", {"results": [report]})
