"""The life of a job through the API: submit, claim, heartbeat, report, retry, cancel."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import text

from api.maintenance.rescuer import LeaseRescuer
from tests.helpers import count, job_row
from tests.integration.conftest import claim, register, report, submit


def test_submit_claim_succeed_and_read_result(alice, worker_account):
    job = submit(alice, "sleep", {"seconds": 0, "tag": "a"})
    assert job["status"] == "PENDING" and job["origin"] == "created" and job["attempt"] == 0
    assert job["input_payload"] == {"seconds": 0.0, "fail_attempts": 0, "permanent": False, "tag": "a",
                                    "mode": "sleep"}
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    assert claimed["job_id"] == job["id"] and claimed["attempt"] == 1 and claimed["type"] == "sleep"
    assert alice.get(f"/api/jobs/{job['id']}").json["data"]["status"] == "IN_PROGRESS"

    response = report(worker_account, wid, claimed, result_payload={"slept_s": 0, "attempt": 1})
    assert response.status_code == 200
    assert response.json["data"]["results"] == [
        {"job_id": job["id"], "attempt": 1, "token": claimed["token"], "accepted": True, "status": "SUCCEEDED"}
    ]
    got = alice.get(f"/api/jobs/{job['id']}").json["data"]
    assert got["status"] == "SUCCEEDED" and got["finished_at"] is not None
    result = alice.get(f"/api/jobs/{job['id']}/result").json["data"]
    assert result["result_payload"] == {"slept_s": 0, "attempt": 1}


def test_a_report_is_accepted_once(alice, worker_account):
    submit(alice)
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    assert report(worker_account, wid, claimed).status_code == 200
    again = report(worker_account, wid, claimed)
    assert again.status_code == 409
    assert again.json["error"]["code"] == "CONFLICT"
    assert again.json["error"]["details"]["results"][0]["accepted"] is False


def test_failure_is_retried_with_backoff_then_succeeds(alice, worker_account, engine):
    job = submit(alice, "sleep", {"fail_attempts": 1})
    wid = register(worker_account)
    (first,) = claim(worker_account, wid)
    before = dt.datetime.now(dt.UTC)
    response = report(worker_account, wid, first, "FAILED", error={"message": "boom"})
    assert response.json["data"]["results"][0]["status"] == "PENDING"
    row = job_row(engine, job["id"])
    # sleep's policy: base 1 s, equal jitter → the retry waits between 0.5 and 1 s.
    delay = (row["run_after"] - before).total_seconds()
    assert 0.4 <= delay <= 1.2, delay
    assert row["error"] == {"code": "HANDLER_ERROR", "message": "boom"}
    assert claim(worker_account, wid) == []  # not due yet
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job["id"]})
    (second,) = claim(worker_account, wid)
    assert second["attempt"] == 2
    report(worker_account, wid, second)
    assert job_row(engine, job["id"])["status"] == "SUCCEEDED"
    assert job_row(engine, job["id"])["error"] is None


def test_backoff_grows_exponentially(alice, worker_account, engine):
    job = submit(alice, "sleep", {"fail_attempts": 5})
    wid = register(worker_account)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET max_attempts = 5 WHERE id = :id"), {"id": job["id"]})
    delays = []
    for _ in range(3):
        (c,) = claim(worker_account, wid)
        before = dt.datetime.now(dt.UTC)
        report(worker_account, wid, c, "FAILED", error={"message": "again"})
        delays.append((job_row(engine, job["id"])["run_after"] - before).total_seconds())
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job["id"]})
    # base 1 s doubling: [0.5, 1], [1, 2], [2, 4]
    for n, delay in enumerate(delays):
        assert 0.5 * 2**n - 0.1 <= delay <= 2**n + 0.1, delays


def test_permanent_error_fails_at_once(alice, worker_account, engine):
    job = submit(alice, "sleep", {"fail_attempts": 1, "permanent": True})
    wid = register(worker_account)
    (c,) = claim(worker_account, wid)
    response = report(worker_account, wid, c, "FAILED", error={"message": "bad input", "permanent": True})
    assert response.json["data"]["results"][0]["status"] == "FAILED"
    row = job_row(engine, job["id"])
    assert row["status"] == "FAILED" and row["attempt"] == 1 and row["finished_at"] is not None


def test_attempts_run_out(alice, worker_account, engine):
    job = submit(alice, "sleep", {"fail_attempts": 10})
    wid = register(worker_account)
    for attempt in (1, 2, 3):
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET run_after = now() WHERE id = :id"), {"id": job["id"]})
        (c,) = claim(worker_account, wid)
        assert c["attempt"] == attempt
        report(worker_account, wid, c, "FAILED", error={"message": "nope"})
    row = job_row(engine, job["id"])
    assert row["status"] == "FAILED" and row["attempt"] == 3 == row["max_attempts"]


def test_cancel_pending_job_at_once(alice, worker_account):
    job = submit(alice)
    response = alice.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json["data"]["status"] == "CANCELLED"
    wid = register(worker_account)
    assert claim(worker_account, wid) == []
    assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200  # idempotent


def test_cancel_running_job_cooperatively(alice, worker_account, engine):
    job = submit(alice, "sleep", {"seconds": 60})
    wid = register(worker_account)
    (c,) = claim(worker_account, wid)
    response = alice.post(f"/api/jobs/{job['id']}/cancel")
    assert response.json["data"]["status"] == "IN_PROGRESS"
    assert response.json["data"]["cancel_requested"] is True
    beat = worker_account.post(f"/api/workers/{wid}/heartbeat",
                               {"jobs": [{"job_id": c["job_id"], "attempt": 1, "token": c["token"]}]})
    assert beat.json["data"]["stop"] == [
        {"job_id": job["id"], "attempt": 1, "token": c["token"], "reason": "cancelled"}]
    report(worker_account, wid, c, "CANCELLED")
    assert job_row(engine, job["id"])["status"] == "CANCELLED"


def test_cancelled_job_whose_worker_vanished_ends_cancelled(alice, worker_account, engine):
    job = submit(alice, "sleep", {"seconds": 60})
    wid = register(worker_account)
    claim(worker_account, wid)
    alice.post(f"/api/jobs/{job['id']}/cancel")
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = now() - interval '1 second' "
                          "WHERE status = 'IN_PROGRESS'"))
    LeaseRescuer(engine).run_once()
    assert job_row(engine, job["id"])["status"] == "CANCELLED"


def test_cancel_finished_job_is_a_conflict(alice, worker_account):
    job = submit(alice)
    wid = register(worker_account)
    (c,) = claim(worker_account, wid)
    report(worker_account, wid, c)
    response = alice.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and response.json["error"]["details"]["status"] == "SUCCEEDED"


def test_priority_then_run_after_then_fifo(alice, worker_account):
    low = submit(alice, "noop", {"tag": "low"}, priority=9)
    first = submit(alice, "noop", {"tag": "first"})
    second = submit(alice, "noop", {"tag": "second"})
    urgent = submit(alice, "noop", {"tag": "urgent"}, priority=2)
    later = submit(alice, "noop", {"tag": "later"}, priority=2,
                   run_after=(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat())
    wid = register(worker_account)
    order = [j["job_id"] for j in claim(worker_account, wid, max_jobs=10)]
    assert order == [urgent["id"], first["id"], second["id"], low["id"]]
    assert later["id"] not in order


def test_claim_takes_at_most_max_jobs_of_its_types(alice, worker_account):
    for i in range(5):
        submit(alice, "noop", {"tag": str(i)})
    submit(alice, "sleep", {"tag": "other type"})
    wid = register(worker_account, types=("noop",))
    assert len(claim(worker_account, wid, max_jobs=3)) == 3
    assert len(claim(worker_account, wid, max_jobs=10)) == 2
    assert claim(worker_account, wid) == []


def test_heartbeat_extends_leases_and_reports_lost_attempts(alice, worker_account, engine):
    submit(alice)
    wid = register(worker_account)
    (c,) = claim(worker_account, wid)
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET lease_expires_at = now() + interval '1 second' "
                          "WHERE status = 'IN_PROGRESS'"))
    made_up = str(uuid.uuid4())
    beat = worker_account.post(f"/api/workers/{wid}/heartbeat", {"jobs": [
        {"job_id": c["job_id"], "attempt": 1, "token": c["token"], "progress": {"percent": 40, "stage": "working"}},
        {"job_id": 999999, "attempt": 1, "token": made_up},
    ]})
    assert beat.status_code == 200
    assert beat.json["data"]["stop"] == [{"job_id": 999999, "attempt": 1, "token": made_up, "reason": "lost"}]
    with engine.connect() as conn:
        left = conn.execute(text("SELECT lease_expires_at - now() FROM jobs WHERE status = 'IN_PROGRESS'")
                            ).scalar_one()
    assert left.total_seconds() > 4  # lease_s is 5 in the test settings
    assert job_row(engine, c["job_id"])["progress"] == {"percent": 40, "stage": "working"}


def test_release_returns_jobs_without_spending_an_attempt(alice, worker_account, engine):
    job = submit(alice)
    wid = register(worker_account)
    (c,) = claim(worker_account, wid)
    response = worker_account.post(f"/api/workers/{wid}/release",
                                   {"jobs": [{"job_id": c["job_id"], "attempt": 1, "token": c["token"]}]})
    assert response.json["data"]["released"] == [job["id"]]
    row = job_row(engine, job["id"])
    assert row["status"] == "PENDING" and row["max_attempts"] == 4
    (again,) = claim(worker_account, wid)
    assert again["attempt"] == 2


def test_batch_submit_is_all_or_nothing(alice, engine):
    good = {"type": "noop", "input_payload": {"tag": "1"}}
    bad = {"type": "sleep", "input_payload": {"seconds": "soon"}}
    response = alice.post("/api/jobs/batch", {"jobs": [good, bad]})
    assert response.status_code == 422
    assert "jobs.1.input_payload.seconds" in response.json["error"]["details"]["fields"]
    assert count(engine, "jobs") == 0
    response = alice.post("/api/jobs/batch", {"jobs": [good, {"type": "noop", "input_payload": {"tag": "2"}}, good]})
    assert response.status_code == 201
    data = response.json["data"]
    assert [d["origin"] for d in data] == ["created", "created", "joined"]
    assert data[0]["id"] == data[2]["id"]
    # The two creating submissions are on their jobs; only the one that joined has a row of its own.
    assert count(engine, "jobs") == 2 and count(engine, "job_requests") == 1


def test_identical_submission_joins_then_reuses_cached_result(alice, bob, worker_account):
    first = submit(alice, "sleep", {"seconds": 1})
    joined = submit(alice, "sleep", {"seconds": 1})
    assert joined["id"] == first["id"] and joined["origin"] == "joined"
    # Dedup is per user: Bob's identical submission is his own job, which Alice cannot see.
    own = submit(bob, "sleep", {"seconds": 1})
    assert own["id"] != first["id"] and own["origin"] == "created"
    assert alice.get(f"/api/jobs/{own['id']}").status_code == 404
    wid = register(worker_account)
    (c,) = claim(worker_account, wid, max_jobs=1)
    report(worker_account, wid, c, result_payload={"slept_s": 1, "attempt": 1})
    cached = submit(alice, "sleep", {"seconds": 1})
    assert cached["id"] == first["id"] and cached["origin"] == "cached" and cached["status"] == "SUCCEEDED"
    fresh = submit(alice, "sleep", {"seconds": 1}, cache=False)
    assert fresh["id"] != first["id"] and fresh["origin"] == "created"


def test_users_see_only_their_jobs(alice, bob, admin):
    job = submit(alice)
    assert bob.get(f"/api/jobs/{job['id']}").status_code == 404
    assert bob.post(f"/api/jobs/{job['id']}/cancel").status_code == 404
    assert bob.get(f"/api/jobs/{job['id']}/result").status_code == 404
    assert bob.get("/api/jobs").json["meta"]["pagination"]["total"] == 0
    assert admin.get(f"/api/jobs/{job['id']}").status_code == 200
    listed = alice.get("/api/jobs?status=PENDING&limit=5").json
    assert [j["id"] for j in listed["data"]] == [job["id"]]
    assert listed["meta"]["pagination"] == {
        "page": 1, "per_page": 5, "total": 1, "pages": 1, "has_next": False, "has_prev": False}


def test_claim_can_carry_the_previous_results(alice, worker_account, engine):
    first, second = submit(alice, "noop", {"tag": "1"}), submit(alice, "noop", {"tag": "2"})
    wid = register(worker_account)
    (c1,) = claim(worker_account, wid, max_jobs=1)
    response = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1, "results": [
        {"job_id": c1["job_id"], "attempt": 1, "token": c1["token"], "status": "SUCCEEDED",
         "result_payload": {"ok": True}},
        {"job_id": 999, "attempt": 1, "token": str(uuid.uuid4()), "status": "SUCCEEDED"},
    ]})
    data = response.json["data"]
    assert [j["job_id"] for j in data["jobs"]] == [second["id"]]
    assert [(r["job_id"], r["accepted"]) for r in data["results"]] == [(first["id"], True), (999, False)]
    assert data["results"][1]["error"]["code"] == "CONFLICT"
    assert job_row(engine, first["id"])["status"] == "SUCCEEDED"
    bad = worker_account.post(f"/api/workers/{wid}/claim", {"results": [{"job_id": 1}]})
    assert bad.status_code == 422 and "results.0.attempt" in bad.json["error"]["details"]["fields"]
