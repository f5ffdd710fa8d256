"""``GET /api/admin/history``: the fleet over time, read from the database."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from api.auth.models import Role
from api.queue.leases import Report, claim_jobs, report_attempts, rescue_expired
from api.queue.submit import NewJob, enqueue_jobs
from tests.integration.conftest import make_account


def _worker(conn, user_id: int) -> int:
    return conn.execute(text("""INSERT INTO workers (name, user_id, job_types, concurrency)
                                VALUES ('w', :u, ARRAY['noop'], 4) RETURNING id"""), {"u": user_id}).scalar_one()


def test_attempts_land_in_the_current_bucket_with_their_pickup_latency(app, admin, alice, engine):
    with engine.begin() as conn:
        worker = _worker(conn, alice.user_id)
        enqueue_jobs(conn, alice.user_id, [NewJob("noop", {"tag": str(i)}, max_attempts=2) for i in range(4)])
        # Due two seconds ago: every pickup waited at least that long.
        conn.execute(text("UPDATE jobs SET run_after = now() - interval '2 seconds'"))
    with engine.begin() as conn:
        claimed = claim_jobs(conn, worker, ["noop"], 4, 60.0)
    with engine.begin() as conn:
        report_attempts(conn, worker, [
            Report(claimed[0].job_id, str(claimed[0].token), "SUCCEEDED", result_payload={}),
            Report(claimed[1].job_id, str(claimed[1].token), "SUCCEEDED", result_payload={}),
            Report(claimed[2].job_id, str(claimed[2].token), "FAILED", error={"code": "X", "message": "once"}),
            Report(claimed[3].job_id, str(claimed[3].token), "FAILED", error={"code": "X", "message": "for good"},
                   permanent=True),
        ])
        assert conn.execute(text("SELECT count(*) FROM job_attempts WHERE due_at IS NULL")).scalar_one() == 0
    answer = admin.get("/api/admin/history?window=hour")
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert data["bucket_s"] == 60 and len(data["t"]) == 60 and data["t"] == sorted(data["t"])
    assert (data["completed"][-1], data["failed"][-1], data["retried"][-1]) == (2, 1, 1)
    assert sum(data["completed"][:-1]) == 0
    assert data["pickup_s"]["p50"][-1] >= 2.0 and data["pickup_s"]["p99"][-1] >= data["pickup_s"]["p50"][-1]
    assert data["pickup_s"]["p50"][0] is None
    assert data["duration_s"]["noop"][-1] is not None and data["workers"][-1] == 1


def test_an_expired_lease_counts_as_retried_and_keeps_its_due_time(admin, alice, engine):
    with engine.begin() as conn:
        worker = _worker(conn, alice.user_id)
        enqueue_jobs(conn, alice.user_id, [NewJob("noop", {"tag": "lapse"}, max_attempts=3)])
    with engine.begin() as conn:
        claim_jobs(conn, worker, ["noop"], 1, 0.0)
    with engine.begin() as conn:
        assert rescue_expired(conn)
        assert conn.execute(text("SELECT due_at IS NOT NULL FROM job_attempts")).scalar_one()
    data = admin.get("/api/admin/history?window=day").json["data"]
    assert data["bucket_s"] == 900 and data["retried"][-1] == 1 and data["failed"][-1] == 0


@pytest.mark.parametrize("window", ["minute", "", "x" * 500])
def test_an_unknown_window_is_a_422_naming_it(admin, window):
    answer = admin.get(f"/api/admin/history?window={window}")
    assert answer.status_code == 422 and "window" in answer.json["error"]["details"]["fields"]


def test_viewers_read_it_users_do_not(app, alice):
    viewer = make_account(app, "vera@example.org", [Role.VIEWER])
    assert viewer.get("/api/admin/history?window=week").status_code == 200
    assert alice.get("/api/admin/history").status_code == 403


def test_answers_are_reused_for_a_twelfth_of_a_bucket():
    from api.queue.history import WINDOWS, HistoryCache

    now = [1000.0]
    cache = HistoryCache(clock=lambda: now[0])
    reads = iter(({"n": 1}, {"n": 2}, {"n": 3}))
    read = lambda: next(reads)
    hour, week = WINDOWS["hour"], WINDOWS["week"]
    assert (hour.fresh_s, week.fresh_s) == (5.0, 60.0)
    assert cache.get(hour, read) == {"n": 1}
    now[0] += 4.9
    assert cache.get(hour, read) == {"n": 1}
    now[0] += 0.2
    assert cache.get(hour, read) == {"n": 2}
    assert cache.get(week, read) == {"n": 3}  # each window has its own
