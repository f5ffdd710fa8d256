"""Admin views: queues per type, workers, and cache invalidation (ADMIN only)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from api.auth import service as accounts
from api.auth.models import Role
from jobtypes import job_type_names
from tests.integration.conftest import As, claim, make_account, register, report, submit

ROUTES = [("get", "/api/admin/queues", None), ("get", "/api/admin/workers", None),
          ("post", "/api/admin/cache/invalidate", {"type": "sleep"})]


@pytest.fixture
def manager(app) -> As:
    return make_account(app, accounts.service_email("m1"), [Role.MANAGER], is_service=True)


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_only_admins(app, admin: As, alice: As, worker_account: As, manager: As, method, path, body):
    anonymous = getattr(app.test_client(), method)(path, json=body)
    assert anonymous.status_code == 401
    assert anonymous.json["error"]["code"] == "UNAUTHORIZED"
    for who in (alice, worker_account, manager):
        response = who.post(path, body) if method == "post" else who.get(path)
        assert response.status_code == 403, (who, path)
        assert response.json["error"]["code"] == "FORBIDDEN"
    allowed = admin.post(path, body) if method == "post" else admin.get(path)
    assert allowed.status_code == 200


def _by_type(admin: As) -> tuple[dict[str, dict], dict]:
    response = admin.get("/api/admin/queues")
    assert response.status_code == 200
    data = response.json["data"]
    return {t["type"]: t for t in data["types"]}, data["totals"]


def test_queues_list_every_type_even_with_no_jobs(admin: As):
    types, totals = _by_type(admin)
    assert sorted(types) == job_type_names()
    for row in types.values():
        assert {k: v for k, v in row.items() if k != "type"} == {
            "pending": 0, "scheduled": 0, "in_progress": 0, "oldest_pending_age_s": 0.0,
            "completed_last_minute": 0, "failed_last_minute": 0}
    assert totals["pending"] == 0 and totals["in_progress"] == 0


def test_queues_count_each_state(admin: As, alice: As, worker_account: As, engine):
    due = [submit(alice, "sleep", {"tag": str(i)}) for i in range(5)]
    submit(alice, "sleep", {"tag": "later"}, run_after="2099-01-01T00:00:00Z")
    submit(alice, "noop", {})
    wid = register(worker_account, ("sleep",))
    running = claim(worker_account, wid, max_jobs=3)
    assert len(running) == 3
    report(worker_account, wid, running[0], result_payload={"slept_s": 0, "attempt": 1})
    report(worker_account, wid, running[1], "FAILED", error={"message": "bad", "permanent": True})
    with engine.begin() as conn:
        # One job timed out a moment ago, one failed long ago (outside the last minute).
        conn.execute(text("UPDATE jobs SET status = 'TIMED_OUT', finished_at = now() WHERE id = :id"),
                     {"id": due[3]["id"]})
        conn.execute(text("""UPDATE jobs SET status = 'FAILED', finished_at = now() - interval '1 hour'
                             WHERE id = :id"""), {"id": due[4]["id"]})
        conn.execute(text("""UPDATE jobs SET run_after = now() - interval '120 seconds'
                             WHERE status = 'PENDING' AND run_after <= now()"""))

    types, totals = _by_type(admin)
    sleep = types["sleep"]
    assert sleep["pending"] == 0  # 5 due: 3 claimed, 2 finished by hand
    assert sleep["scheduled"] == 1
    assert sleep["in_progress"] == 1
    assert sleep["completed_last_minute"] == 1
    assert sleep["failed_last_minute"] == 2  # the permanent failure and the timeout
    assert sleep["oldest_pending_age_s"] == 0.0  # nothing due
    noop = types["noop"]
    assert noop["pending"] == 1 and noop["in_progress"] == 0
    assert 120 <= noop["oldest_pending_age_s"] < 150
    assert totals == {"pending": 1, "scheduled": 1, "in_progress": 1,
                      "oldest_pending_age_s": noop["oldest_pending_age_s"],
                      "completed_last_minute": 1, "failed_last_minute": 2}


def _three_workers(admin: As, alice: As, worker_account: As, engine) -> dict[str, int]:
    live = register(worker_account, ("sleep",), name="live")
    lost = register(worker_account, ("sleep",), name="lost")
    stopped = register(worker_account, ("noop",), name="stopped")
    submit(alice, "sleep", {})
    assert len(claim(worker_account, live)) == 1
    assert worker_account.post(f"/api/workers/{stopped}/deregister").status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
                     {"id": lost})
    return {"live": live, "lost": lost, "stopped": stopped}


def test_workers_with_state_and_jobs_held(admin: As, alice: As, worker_account: As, engine):
    ids = _three_workers(admin, alice, worker_account, engine)
    response = admin.get("/api/admin/workers")
    assert response.status_code == 200
    listed = {w["name"]: w for w in response.json["data"]}
    assert [w["id"] for w in response.json["data"]] == sorted(ids.values(), reverse=True)
    assert {name: w["state"] for name, w in listed.items()} == {"live": "live", "lost": "lost", "stopped": "stopped"}
    assert listed["live"]["running_jobs"] == 1
    assert listed["lost"]["running_jobs"] == 0
    assert listed["stopped"]["stopped_at"] is not None
    assert listed["live"]["job_types"] == ["sleep"]
    assert listed["live"]["concurrency"] == 4
    assert {"ecs_task_arn", "ecs_cluster_arn", "started_at", "last_heartbeat_at", "draining"} <= set(listed["live"])
    assert response.json["meta"]["pagination"] == {"page": 1, "per_page": 20, "total": 3, "pages": 1,
                                                   "has_next": False, "has_prev": False}
    for state, worker_id in ids.items():
        only = admin.get(f"/api/admin/workers?state={state}").json
        assert [w["id"] for w in only["data"]] == [worker_id]
        assert only["meta"]["pagination"]["total"] == 1


def test_workers_pagination_edges(admin: As, alice: As, worker_account: As, engine):
    _three_workers(admin, alice, worker_account, engine)
    first = admin.get("/api/admin/workers?limit=2").json
    assert len(first["data"]) == 2
    assert first["meta"]["pagination"] == {"page": 1, "per_page": 2, "total": 3, "pages": 2,
                                           "has_next": True, "has_prev": False}
    second = admin.get("/api/admin/workers?limit=2&page=2").json
    assert len(second["data"]) == 1 and second["meta"]["pagination"]["has_prev"]
    past = admin.get("/api/admin/workers?limit=2&page=9").json
    assert past["data"] == [] and past["meta"]["pagination"]["total"] == 3
    for bad, field in (("limit=0", "limit"), ("limit=101", "limit"), ("page=0", "page"), ("state=asleep", "state")):
        response = admin.get(f"/api/admin/workers?{bad}")
        assert response.status_code == 422, bad
        assert field in response.json["error"]["details"]["fields"], bad


def test_cache_invalidation_makes_the_next_identical_job_run(admin: As, alice: As, worker_account: As):
    first = submit(alice, "sleep", {"seconds": 0, "tag": "cached"})
    wid = register(worker_account, ("sleep",))
    (job,) = claim(worker_account, wid)
    assert report(worker_account, wid, job, result_payload={"slept_s": 0, "attempt": 1}).status_code == 200
    again = submit(alice, "sleep", {"seconds": 0, "tag": "cached"})
    assert again["origin"] == "cached" and again["id"] == first["id"]

    response = admin.post("/api/admin/cache/invalidate", {"type": "sleep"})
    assert response.status_code == 200
    assert response.json["data"] == {"type": "sleep", "invalidated": 1}
    fresh = submit(alice, "sleep", {"seconds": 0, "tag": "cached"})
    assert fresh["origin"] == "created" and fresh["id"] != first["id"]
    # Nothing valid is left to invalidate; other types are untouched.
    assert admin.post("/api/admin/cache/invalidate", {"type": "sleep"}).json["data"]["invalidated"] == 0
    assert admin.post("/api/admin/cache/invalidate", {"type": "noop"}).json["data"]["invalidated"] == 0


@pytest.mark.parametrize("body", [{"type": "no.such.type"}, {}, {"type": 7}])
def test_cache_invalidation_needs_a_known_type(admin: As, body):
    response = admin.post("/api/admin/cache/invalidate", body)
    assert response.status_code == 422
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    assert "type" in response.json["error"]["details"]["fields"]


def test_admin_views_are_documented(app):
    paths = app.test_client().get("/api/openapi.json").json["paths"]
    for _, path, _ in ROUTES:
        assert path in paths
    assert paths["/api/admin/workers"]["get"]["security"] == [{"bearerAuth": []}]
