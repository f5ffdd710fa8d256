"""Maintenance services through their run_once (the job pruner, the worker reaper's grace), how the API
builds them from its settings, and one active runner via the advisory lock."""

from __future__ import annotations

import io
import time
import uuid

from sqlalchemy import text

from api.database import libpq_url
from api.maintenance.callbacks import CallbackDispatcher
from api.maintenance.grace import OutageGraceConfig
from api.maintenance.pruner import JobPruner, JobPrunerConfig, PruneResult
from api.maintenance.reaper import ReapResult, WorkerReaper, WorkerReaperConfig
from api.maintenance.records import RECORD_PRUNERS, RecordPruner
from api.maintenance.rescuer import LeaseRescuer
from api.maintenance.runner import MaintenanceRunner
from api.maintenance.services import build_services
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
    pruner = JobPruner(engine, JobPrunerConfig(retention_days=7, batch_size=1), storage=storage)
    assert pruner.run_once() == PruneResult(jobs=1, outputs_deleted=1)
    assert pruner.run_once() == PruneResult(jobs=0)
    with engine.connect() as conn:
        left = set(conn.execute(text("SELECT id FROM jobs")).scalars())
    assert left == {recent["id"], pending["id"]}
    assert count(engine, "job_attempts") == 1  # the old job's attempt (with its result) went with it
    assert [o.key for o in storage.list("jobs")] == [keys[recent["id"]]]


def test_pruned_jobs_that_never_ran_have_no_outputs_to_delete(app, alice, engine):
    job = submit(alice, "noop", {"tag": "cancelled"})
    assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET finished_at = now() - interval '8 days'"))
    storage = app.extensions["skyfleet"].storage
    assert JobPruner(engine, storage=storage).run_once() == PruneResult(jobs=1, outputs_deleted=0)


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_worker_reaper_holds_off_after_a_start_or_an_outage(worker_account, engine):
    """After an outage every worker has been silent; those still running are heard again first."""
    back, gone = register(worker_account, name="back"), register(worker_account, name="gone")
    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'"))
    clock = _Clock()
    reaper = WorkerReaper(engine, WorkerReaperConfig(lost_after_s=60, grace=OutageGraceConfig(grace_s=8, after_s=3)),
                          clock=clock)
    assert reaper.run_once() == ReapResult(workers_lost=0, held_off=True)
    assert worker_account.post(f"/api/workers/{back}/heartbeat", {"jobs": []}).status_code == 200
    results = []
    for _ in range(9):  # a pass a second, as the runner does
        clock.now += 1
        results.append(reaper.run_once())
    assert sum(r.workers_lost for r in results) == 1 and results[-1] == ReapResult(workers_lost=0)
    with engine.connect() as conn:
        stopped = set(conn.execute(text("SELECT id FROM workers WHERE stopped_at IS NOT NULL")).scalars())
    assert stopped == {gone}
    clock.now += 30  # a gap: a possible outage again
    assert reaper.run_once().held_off


def test_the_api_builds_each_service_from_its_settings(app, settings, engine):
    settings = settings.with_(retention_days=3.0, prune_interval_s=60.0, idempotency_key_ttl_s=600.0,
                              callback_interval_s=2.0, outage_grace_s=0.0)
    context = app.extensions["skyfleet"]
    services = build_services(settings, engine, context.storage, context.guard)
    rescuer, reaper, jobs, *records, callbacks = services
    assert isinstance(rescuer, LeaseRescuer) and isinstance(reaper, WorkerReaper) and isinstance(jobs, JobPruner)
    assert [type(s) for s in records] == list(RECORD_PRUNERS) and isinstance(callbacks, CallbackDispatcher)
    assert len({s.name for s in services}) == len(services)
    assert reaper.config.lost_after_s == settings.worker_lost_after_s  # the one definition of "lost"
    assert reaper.config.grace == rescuer.config.grace == OutageGraceConfig(
        grace_s=settings.lease_s, after_s=settings.lease_s - settings.heartbeat_interval_s)
    assert [s.interval_s for s in services] == [1.0, 1.0] + [60.0] * 5 + [2.0]
    assert jobs.config.retention_days == 3.0
    assert all(isinstance(r, RecordPruner) and r.config.idempotency_key_ttl_s == 600.0 for r in records)
    callbacks.close()


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
