"""Fencing and rescue through the maintenance service's run_once (no sleeping)."""

from __future__ import annotations

import threading
import time

from sqlalchemy import text

from api.maintenance.grace import OutageGraceConfig
from api.maintenance.reaper import WorkerReaper, WorkerReaperConfig
from api.maintenance.rescuer import LeaseRescuer, LeaseRescuerConfig
from tests.helpers import job_row
from tests.integration.conftest import As, claim, make_account, register, report, submit


def _expire(engine, job_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("""UPDATE jobs SET lease_expires_at = now() - interval '1 second'
                             WHERE id = :id AND status = 'IN_PROGRESS'"""), {"id": job_id})


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
    rescued = LeaseRescuer(engine).run_once().rescued
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
    beat = worker_account.post(f"/api/workers/{old_worker}/heartbeat",
                               {"jobs": [{"job_id": job["id"], "attempt": 1, "token": old["token"]}]})
    assert beat.json["data"]["stop"] == [{"job_id": job["id"], "attempt": 1, "token": old["token"], "reason": "lost"}]

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
        {"job_id": c["job_id"], "attempt": 1, "token": c["token"], "status": "SUCCEEDED"}]}).status_code == 404
    assert report(other, theirs, c).status_code == 409


def test_rescue_times_out_when_attempts_are_exhausted(alice, worker_account, engine):
    job = submit(alice)
    wid = register(worker_account)
    for attempt in (1, 2, 3):
        _make_due(engine, job["id"])
        (c,) = claim(worker_account, wid)
        assert c["attempt"] == attempt
        _expire(engine, job["id"])
        LeaseRescuer(engine).run_once()
    row = job_row(engine, job["id"])
    assert row["status"] == "TIMED_OUT" and row["finished_at"] is not None


def test_rescue_leaves_live_leases_alone_and_works_in_batches(alice, worker_account, engine):
    jobs = [submit(alice, "noop", {"tag": str(i)}) for i in range(5)]
    wid = register(worker_account)
    claim(worker_account, wid, max_jobs=5)
    for job in jobs[:3]:
        _expire(engine, job["id"])
    rescuer = LeaseRescuer(engine, LeaseRescuerConfig(batch_size=2))
    assert len(rescuer.run_once().rescued) == 2
    assert len(rescuer.run_once().rescued) == 1
    assert rescuer.run_once().rescued == []
    statuses = sorted(job_row(engine, j["id"])["status"] for j in jobs)
    assert statuses == ["IN_PROGRESS", "IN_PROGRESS", "PENDING", "PENDING", "PENDING"]


def test_a_worker_holding_a_stale_and_the_live_attempt_of_one_job_keeps_only_the_live_one(alice, worker_account,
                                                                                        engine):
    job = submit(alice)
    worker = register(worker_account)
    (stale,) = claim(worker_account, worker)
    _expire(engine, job["id"])
    LeaseRescuer(engine).run_once()
    _make_due(engine, job["id"])
    (live,) = claim(worker_account, worker)  # the same worker, the same job, attempt 2

    held = [{"job_id": job["id"], "attempt": c["attempt"], "token": c["token"]} for c in (stale, live)]
    beat = worker_account.post(f"/api/workers/{worker}/heartbeat", {"jobs": held})
    assert beat.json["data"]["stop"] == [{"job_id": job["id"], "attempt": 1, "token": stale["token"], "reason": "lost"}]
    assert report(worker_account, worker, stale).status_code == 409
    assert report(worker_account, worker, live).status_code == 200
    assert job_row(engine, job["id"])["status"] == "SUCCEEDED"


def test_silent_workers_are_marked_lost(settings, alice, worker_account, engine):
    wid = register(worker_account)
    quiet = register(worker_account, name="quiet")
    lost_after_s = settings.worker_lost_after_s
    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - make_interval(secs => :s) WHERE id = :id"),
                     {"s": lost_after_s + 1, "id": wid})
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - make_interval(secs => :s) WHERE id = :id"),
                     {"s": lost_after_s - 5, "id": quiet})
    reaper = WorkerReaper(engine, WorkerReaperConfig(lost_after_s=lost_after_s))
    assert reaper.run_once().workers_lost == 1  # silent past worker_lost_after_s; the quiet one is not lost
    assert reaper.run_once().workers_lost == 0
    response = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1})
    assert response.status_code == 409 and response.json["error"]["code"] == "WORKER_GONE"


def test_a_job_whose_worker_vanished_runs_again_first_then_backs_off(alice, worker_account, engine):
    """The first rescue keeps the job's place ahead of a backlog; a second one backs off."""
    job = submit(alice, "sleep", {"seconds": 0, "tag": "victim"})
    backlog = [submit(alice, "noop", {"tag": str(i)}) for i in range(20)]
    wid = register(worker_account)
    (first,) = claim(worker_account, wid, max_jobs=1)
    assert first["job_id"] == job["id"]
    _expire(engine, job["id"])
    assert LeaseRescuer(engine).run_once().rescued == [(job["id"], "sleep", "PENDING")]

    (again,) = claim(worker_account, wid, max_jobs=1)
    assert (again["job_id"], again["attempt"]) == (job["id"], 2)  # not behind the 20 waiting jobs

    _expire(engine, job["id"])
    LeaseRescuer(engine).run_once()
    row = job_row(engine, job["id"])
    assert row["status"] == "PENDING"
    with engine.connect() as conn:
        assert conn.execute(text("SELECT :at > now()"), {"at": row["run_after"]}).scalar_one()  # backing off
    (next_up,) = claim(worker_account, wid, max_jobs=1)
    assert next_up["job_id"] == backlog[0]["id"]


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_after_a_start_or_an_outage_leases_get_a_grace_to_be_heartbeated(alice, worker_account, engine):
    """Leases that lapsed while nobody heard the heartbeats are not rescued before the workers are back."""
    held, abandoned = submit(alice, "noop", {"tag": "held"}), submit(alice, "noop", {"tag": "abandoned"})
    wid = register(worker_account)
    claimed = {c["job_id"]: c for c in claim(worker_account, wid, max_jobs=2)}
    clock = _Clock()
    rescuer = LeaseRescuer(engine, LeaseRescuerConfig(grace=OutageGraceConfig(grace_s=8, after_s=3)), clock=clock)
    for job in (held, abandoned):
        _expire(engine, job["id"])

    assert rescuer.run_once().held_off  # a fresh start: an outage may just have ended
    # The worker holding `held` is back: its heartbeat renews the lapsed lease, its result lands.
    beat = worker_account.post(f"/api/workers/{wid}/heartbeat",
                               {"jobs": [{"job_id": held["id"], "attempt": 1, "token": claimed[held["id"]]["token"]}]})
    assert beat.json["data"]["stop"] == []
    rescued = []
    for _ in range(9):  # a pass a second, as the runner does
        clock.now += 1
        rescued += rescuer.run_once().rescued
    assert rescued == [(abandoned["id"], "noop", "PENDING")]  # nobody came back for it
    assert report(worker_account, wid, claimed[held["id"]], result_payload={"tag": "held"}).status_code == 200
    assert job_row(engine, held["id"])["status"] == "SUCCEEDED"

    # Regular passes carry on without grace; a gap longer than outage_after_s starts one again.
    clock.now += 1
    assert not rescuer.run_once().held_off
    clock.now += 30
    assert rescuer.run_once().held_off


def test_a_claim_parked_before_its_workers_lease_lapsed_takes_no_job(app, alice, worker_account, engine):
    """A killed worker's last claim may still be parked in the API; the job rescued from that
    worker must not go straight back to it (to lapse again, costing an attempt)."""
    wid = register(worker_account)
    job = submit(alice, "noop", {"tag": "rescued"})
    (held,) = claim(worker_account, wid)
    parked: list = []
    thread = threading.Thread(target=lambda: parked.append(
        worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1, "wait_s": 10}).json["data"]))
    thread.start()
    time.sleep(0.5)  # parked (nothing pending)
    _expire(engine, job["id"])
    started = time.monotonic()
    result = LeaseRescuer(engine).run_once()
    assert (result.rescued, result.workers_lapsed) == ([(job["id"], "noop", "PENDING")], 1)
    thread.join(10)
    assert time.monotonic() - started < 5, "the rescue's NOTIFY wakes the parked claim, which gives up"
    assert parked == [{"jobs": [], "drain": False, "results": []}]
    assert job_row(engine, job["id"])["status"] == "PENDING"
    # The worker is alive after all: its next claim (begun after the lapse) gets the job.
    (again,) = claim(worker_account, wid)
    assert (again["job_id"], again["attempt"]) == (held["job_id"], 2)
