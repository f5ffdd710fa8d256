"""Maintenance services: the pruner's run_once, and one active runner via the advisory lock."""

from __future__ import annotations

import io
import time
import uuid

from sqlalchemy import text

from api.database import libpq_url
from api.maintenance.pruner import Pruner, PrunerConfig
from api.maintenance.runner import MaintenanceRunner
from jobtypes import protocol
from tests.helpers import count, wait_for
from tests.integration.conftest import claim, register, report, submit


def test_pruner_deletes_only_old_finished_jobs_and_their_outputs(app, alice, worker_account, engine):
    old = submit(alice, "noop", {"tag": "old"})
    recent = submit(alice, "noop", {"tag": "recent"})
    pending = submit(alice, "noop", {"tag": "pending"})
    storage = app.extensions["skyfleet"].storage
    wid = register(worker_account)
    keys = {}
    for c in claim(worker_account, wid, max_jobs=2):
        prefix = protocol.output_prefix(c["job_id"], c["attempt"], uuid.UUID(c["token"]))
        stored = storage.put(f"{prefix}/out.txt", io.BytesIO(b"output"))
        keys[c["job_id"]] = stored.key
        report(worker_account, wid, c, files=[{"key": stored.key, "size": stored.size}])
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '8 days' WHERE id = :id"), {"id": old["id"]})
        conn.execute(text("UPDATE jobs SET created_at = now() - interval '30 days' WHERE id = :id"),
                     {"id": pending["id"]})
    pruner = Pruner(engine, PrunerConfig(retention_days=7, batch_size=1), storage=storage)
    assert pruner.run_once() == 1
    assert pruner.run_once() == 0
    with engine.connect() as conn:
        left = set(conn.execute(text("SELECT id FROM jobs")).scalars())
    assert left == {recent["id"], pending["id"]}
    assert count(engine, "job_attempts") == 1  # the old job's attempt (with its result) went with it
    assert [o.key for o in storage.list("jobs")] == [keys[recent["id"]]]


class _Counter:
    name = "counter"
    interval_s = 0.05

    def __init__(self) -> None:
        self.runs = 0

    def run_once(self) -> int:
        self.runs += 1
        return self.runs


def test_only_one_runner_is_active_and_another_takes_over(clean_db):
    dsn = libpq_url(clean_db)
    first, second = _Counter(), _Counter()
    a = MaintenanceRunner(dsn, [first], retry_s=0.2)
    b = MaintenanceRunner(dsn, [second], retry_s=0.2)
    a.ensure_started()
    assert a.is_leader.wait(5)
    b.ensure_started()
    time.sleep(0.5)
    assert not b.is_leader.is_set()
    assert first.runs > 0 and second.runs == 0
    a.stop()
    wait_for(lambda: b.is_leader.is_set(), timeout=10, what="the second runner to take over")
    wait_for(lambda: second.runs > 0, timeout=5, what="the second runner to run its service")
    b.stop()
