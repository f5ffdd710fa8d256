"""Fencing and rescue through the maintenance service's run_once (no sleeping)."""

from __future__ import annotations

from sqlalchemy import text

from api.maintenance.rescuer import Rescuer, RescuerConfig
from tests.helpers import job_row
from tests.integration.conftest import As, claim, make_account, register, report, submit


def _expire(engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("""UPDATE job_assignments SET expires_at = now() - interval '1 second'
                             WHERE job_id = :id AND completed_at IS NULL"""), {"id": job_id})


def _make_due(engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job_id})


def test_rescued_attempt_cannot_report_and_the_new_attempt_stands(app, alice, worker_account, engine):
    other: As = make_account(app, "w2@service.skyfleet.internal", worker_account_roles())
    job = submit(alice)
    old_worker = register(worker_account, name="old")
    new_worker = register(other, name="new")
    (old,) = claim(worker_account, old_worker)
    _expire(engine, job["id"])
    rescued = Rescuer(engine).run_once().rescued
    assert rescued == [(job["id"], "sleep", "PENDING")]
    assert job_row(engine, job["id"])["error"]["code"] == "LEASE_EXPIRED"
    _make_due(engine, job["id"])
    (new,) = claim(other, new_worker)
    assert new["attempt"] == 2

    late = report(worker_account, old_worker, old, result_payload={"slept_s": 0, "attempt": 1})
    assert late.status_code == 409
    assert late.json["error"]["details"]["results"][0]["accepted"] is False
    assert job_row(engine, job["id"])["status"] == "IN_PROGRESS"
    # The old worker cannot keep the new attempt alive either.
    beat = worker_account.post(f"/api/workers/{old_worker}/heartbeat", {"jobs": [{"job_id": job["id"], "attempt": 1}]})
    assert beat.json["data"]["stop"] == [{"job_id": job["id"], "attempt": 1, "reason": "lost"}]

    assert report(other, new_worker, new, result_payload={"slept_s": 0, "attempt": 2}).status_code == 200
    row = job_row(engine, job["id"])
    assert row["status"] == "SUCCEEDED" and row["attempt"] == 2
    result = alice.get(f"/api/jobs/{job['id']}/result").json["data"]
    assert result["result_payload"] == {"slept_s": 0, "attempt": 2}
    # And a very late report of the old attempt still changes nothing.
    assert report(worker_account, old_worker, old, status="FAILED", error={"message": "x"}).status_code == 409
    assert job_row(engine, job["id"])["status"] == "SUCCEEDED"


def worker_account_roles():
    from api.auth.models import Role

    return [Role.WORKER]


def test_a_worker_cannot_report_another_workers_attempt(app, alice, worker_account, engine):
    other = make_account(app, "w3@service.skyfleet.internal", worker_account_roles())
    submit(alice)
    mine = register(worker_account)
    theirs = register(other)
    (c,) = claim(worker_account, mine)
    assert other.post(f"/api/workers/{mine}/results", {"results": [
        {"job_id": c["job_id"], "attempt": 1, "status": "SUCCEEDED"}]}).status_code == 404
    assert report(other, theirs, c).status_code == 409


def test_rescue_times_out_when_attempts_are_exhausted(alice, worker_account, engine):
    job = submit(alice)
    wid = register(worker_account)
    for attempt in (1, 2, 3):
        _make_due(engine, job["id"])
        (c,) = claim(worker_account, wid)
        assert c["attempt"] == attempt
        _expire(engine, job["id"])
        Rescuer(engine).run_once()
    row = job_row(engine, job["id"])
    assert row["status"] == "TIMED_OUT" and row["finished_at"] is not None


def test_rescue_leaves_live_leases_alone_and_works_in_batches(alice, worker_account, engine):
    jobs = [submit(alice, "noop", {"tag": str(i)}) for i in range(5)]
    wid = register(worker_account)
    claim(worker_account, wid, max_jobs=5)
    for job in jobs[:3]:
        _expire(engine, job["id"])
    rescuer = Rescuer(engine, RescuerConfig(batch_size=2))
    assert len(rescuer.run_once().rescued) == 2
    assert len(rescuer.run_once().rescued) == 1
    assert rescuer.run_once().rescued == []
    statuses = sorted(job_row(engine, j["id"])["status"] for j in jobs)
    assert statuses == ["IN_PROGRESS", "IN_PROGRESS", "PENDING", "PENDING", "PENDING"]


def test_silent_workers_are_marked_lost(alice, worker_account, engine):
    wid = register(worker_account)
    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'"))
    assert Rescuer(engine).run_once().workers_lost == 1
    response = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1})
    assert response.status_code == 409
