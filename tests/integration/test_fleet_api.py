"""The fleet endpoints: who may call them, what they refuse, and what they change.

``/api/manager/*`` is for the manager's service account (and admins); ``/api/admin/status``,
``/scale`` and ``/redeploy`` for admins only. Effects are checked through the endpoints a user
would look at: the admin status, the manager's pool list and the workers' own claim and
heartbeat answers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.conftest import As, claim, submit
from tests.integration.fleet_helpers import (
    decision,
    join_pool,
    manager_account,
    pool_config,
    pool_status,
    report_pools,
)

MANAGER_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/api/manager/pools", None),
    ("put", "/api/manager/pools", {"pools": []}),
    ("get", "/api/manager/queues", None),
    ("get", "/api/manager/workers", None),
    ("post", "/api/manager/workers/drain", {"worker_ids": [1]}),
    ("post", "/api/manager/decisions", {"decisions": [decision()]}),
    ("post", "/api/manager/lease", {"holder": "m-1", "ttl_s": 10}),
    ("post", "/api/manager/lease/release", {"holder": "m-1"}),
]
ADMIN_ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    ("get", "/api/admin/status", None),
    ("post", "/api/admin/scale", {"pool": "p", "count": 1}),
    ("post", "/api/admin/redeploy", {"pool": "p"}),
]


@pytest.fixture
def manager(app) -> As:
    return manager_account(app)


@pytest.fixture
def pool(manager: As) -> dict:
    (reported,) = report_pools(manager, pool_config("p", high=10))
    return reported


def _call(who: As, method: str, path: str, body: dict | None):
    return who.client.open(path, method=method.upper(), json=body, headers={"Authorization": f"Bearer {who.token}"})


def _fields(response) -> dict:
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    return dict(response.json["error"]["details"]["fields"])


def test_manager_endpoints_are_for_managers_and_admins(app, admin, alice, worker_account, manager, pool):
    for method, path, body in MANAGER_ROUTES:
        anonymous = app.test_client().open(path, method=method.upper(), json=body)
        assert anonymous.status_code == 401, path
        assert anonymous.json["error"]["code"] == "UNAUTHORIZED"
        for who in (alice, worker_account):
            refused = _call(who, method, path, body)
            assert refused.status_code == 403, (path, refused.json)
            assert refused.json["error"]["code"] == "FORBIDDEN"
        for who in (manager, admin):
            allowed = _call(who, method, path, body)
            assert allowed.status_code in (200, 201), (path, allowed.json)
            assert allowed.json["success"] is True
            # Put the pool back, and free the lease, for the next caller.
            report_pools(manager, pool_config("p", high=10))
            _call(who, "post", "/api/manager/lease/release", {"holder": "m-1"})


def test_admin_fleet_endpoints_are_for_admins_only(app, admin, alice, worker_account, manager, pool):
    for method, path, body in ADMIN_ROUTES:
        anonymous = app.test_client().open(path, method=method.upper(), json=body)
        assert anonymous.status_code == 401, path
        for who in (alice, worker_account, manager):
            refused = _call(who, method, path, body)
            assert refused.status_code == 403, (path, refused.json)
            assert refused.json["error"]["code"] == "FORBIDDEN"
        assert _call(admin, method, path, body).status_code == 200, path


def test_reported_pools_come_back_with_overrides_that_survive_a_re_report(admin: As, manager: As):
    first = report_pools(manager, pool_config("p", high=10), pool_config("gpu", job_types=("noop",), high=4))
    assert [p["name"] for p in first] == ["gpu", "p"]
    p = first[1]
    assert p == {"name": "p", "job_types": ["sleep"], "backend": "local", "min": 0, "max": 10,
                 "jobs_per_worker": 2, "details": {"command": ["python", "-m", "worker"]}, "pinned_count": None,
                 "min_override": None, "max_override": None, "redeploy_generation": 0,
                 "redeploy_requested_at": None}
    assert admin.post("/api/admin/scale", {"pool": "p", "count": 8, "min": 2, "max": 9}).status_code == 200
    assert admin.post("/api/admin/redeploy", {"pool": "p"}).status_code == 200

    # The manager re-reports with a lower max: the overrides stay, brought down to it; gpu is gone.
    again = report_pools(manager, pool_config("p", high=6, jobs_per_worker=3))
    assert len(again) == 1
    assert {k: again[0][k] for k in ("max", "jobs_per_worker", "pinned_count", "min_override", "max_override",
                                     "redeploy_generation")} == {
        "max": 6, "jobs_per_worker": 3, "pinned_count": 6, "min_override": 2, "max_override": 6,
        "redeploy_generation": 1}
    assert again[0]["redeploy_requested_at"] is not None
    listed = manager.get("/api/manager/pools").json["data"]["pools"]
    assert listed == again


BAD_POOLS = [
    ([pool_config(low=5, high=2)], "pools.0.min"),
    ([pool_config(high="10")], "pools.0.max"),
    ([pool_config(high=-1)], "pools.0.max"),
    ([pool_config(jobs_per_worker=0)], "pools.0.jobs_per_worker"),
    ([pool_config(backend="k8s")], "pools.0.backend"),
    ([pool_config(job_types=["teleport"])], "pools.0.job_types.0"),
    ([pool_config(name="bad name")], "pools.0.name"),
    ([pool_config(details={"note": "a\x00b"})], "pools.0.details.note"),
    ([pool_config(), pool_config()], "pools"),
]


def test_pool_reports_are_validated(manager: As):
    for pools, field in BAD_POOLS:
        response = manager.client.put("/api/manager/pools", json={"pools": pools},
                                      headers={"Authorization": f"Bearer {manager.token}"})
        assert field in _fields(response), (field, response.json)
    assert manager.get("/api/manager/pools").json["data"]["pools"] == []


def test_pin_and_bounds_show_in_status_and_in_the_managers_pool_list(admin: As, manager: As, pool):
    pinned = admin.post("/api/admin/scale", {"pool": "p", "count": 3})
    assert pinned.status_code == 200
    assert pinned.json["data"]["pinned_count"] == 3
    shown = pool_status(admin)
    assert shown["pinned_count"] == 3
    assert (shown["effective_min"], shown["effective_max"]) == (0, 10)

    # Bounds alone: the pin stays (omitted means unchanged).
    bounded = admin.post("/api/admin/scale", {"pool": "p", "min": 1, "max": 4}).json["data"]
    assert (bounded["pinned_count"], bounded["min_override"], bounded["max_override"]) == (3, 1, 4)
    shown = pool_status(admin)
    assert (shown["effective_min"], shown["effective_max"]) == (1, 4)

    # null unpins and restores; the manager sees it on its next read.
    cleared = admin.post("/api/admin/scale", {"pool": "p", "count": None, "max": None}).json["data"]
    assert (cleared["pinned_count"], cleared["min_override"], cleared["max_override"]) == (None, 1, None)
    (listed,) = manager.get("/api/manager/pools").json["data"]["pools"]
    assert listed["pinned_count"] is None and listed["min_override"] == 1
    assert pool_status(admin)["effective_max"] == 10


def test_scale_refuses_unknown_pools_and_values_out_of_bounds(admin: As, pool):
    missing = admin.post("/api/admin/scale", {"pool": "nope", "count": 1})
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "NOT_FOUND"
    assert "nope" in missing.json["error"]["message"]

    above = _fields(admin.post("/api/admin/scale", {"pool": "p", "count": 11}))
    assert above == {"count": ["must be at most 10 (the pool's configured max)"]}
    assert "max" in _fields(admin.post("/api/admin/scale", {"pool": "p", "max": 99}))
    assert "min" in _fields(admin.post("/api/admin/scale", {"pool": "p", "min": 5, "max": 4}))
    for body, field in (({"pool": "p", "count": "3"}, "count"), ({"pool": "p", "count": -1}, "count"),
                        ({"pool": "p", "count": 1.5}, "count"), ({"count": 1}, "pool")):
        assert field in _fields(admin.post("/api/admin/scale", body)), body
    nothing = admin.post("/api/admin/scale", {"pool": "p"})
    assert nothing.status_code == 422

    # min against an earlier max override: refused, naming min, and nothing changed.
    assert admin.post("/api/admin/scale", {"pool": "p", "max": 3}).status_code == 200
    assert _fields(admin.post("/api/admin/scale", {"pool": "p", "min": 5})) == {
        "min": ["min (5) must not exceed max (3)"]}
    shown = pool_status(admin)
    assert (shown["pinned_count"], shown["min_override"], shown["max_override"]) == (None, None, 3)


def test_decisions_appear_in_status_newest_first_with_reasons(admin: As, manager: As, pool):
    report_pools(manager, pool_config("p", high=10), pool_config("other", job_types=("noop",)))
    recorded = manager.post("/api/manager/decisions", {"decisions": [
        decision(desired=1, previous=0, reason="first: 2 pending"),
        decision(desired=3, previous=1, reason="second: 6 pending", running=1, starting=2),
        decision("other", desired=0, previous=0, action="none", reason="idle"),
    ]})
    assert recorded.status_code == 201
    assert recorded.json["data"] == {"recorded": 3}
    assert manager.post("/api/manager/decisions", {"decisions": [
        decision(desired=3, previous=3, action="hold", reason="third: steady", running=3, starting=0,
                 draining=1)]}).status_code == 201

    shown = pool_status(admin)
    assert [d["reason"] for d in shown["decisions"]] == ["third: steady", "second: 6 pending", "first: 2 pending"]
    assert [d["action"] for d in shown["decisions"]] == ["hold", "scale_out", "scale_out"]
    assert (shown["desired"], shown["running"], shown["starting"], shown["draining"]) == (3, 3, 0, 1)
    assert shown["observed"] == {"cluster": "arn:aws:ecs:eu-west-1:1:cluster/c", "task_definition": "worker:7"}
    assert shown["decisions"][0]["inputs"]["pending"] == 2
    other = pool_status(admin, "other")
    assert [d["reason"] for d in other["decisions"]] == ["idle"]


def test_decisions_for_unknown_pools_or_malformed_are_refused_and_store_nothing(admin: As, manager: As, pool):
    unknown = manager.post("/api/manager/decisions", {"decisions": [decision(), decision("ghost")]})
    assert unknown.status_code == 404
    assert unknown.json["error"]["details"] == {"pools": ["ghost"]}
    assert "decisions.0.action" in _fields(manager.post("/api/manager/decisions",
                                                        {"decisions": [decision(action="panic")]}))
    assert "decisions.0.inputs.running" in _fields(manager.post("/api/manager/decisions",
                                                                {"decisions": [decision(running="lots")]}))
    assert "decisions.0.desired" in _fields(manager.post("/api/manager/decisions",
                                                         {"decisions": [decision(desired=2**70)]}))
    assert "decisions" in _fields(manager.post("/api/manager/decisions", {"decisions": []}))
    shown = pool_status(admin)
    assert shown["decisions"] == [] and shown["desired"] is None


def test_redeploy_bumps_the_generation_and_drains_the_pools_workers(admin: As, alice: As, manager: As,
                                                                    worker_account: As, pool):
    report_pools(manager, pool_config("p"), pool_config("other", job_types=("noop",)))
    busy = join_pool(worker_account, "p", name="busy")
    idle = join_pool(worker_account, "p", name="idle")
    elsewhere = join_pool(worker_account, "other", name="elsewhere", types=("noop",))
    submit(alice, "sleep", {"tag": "redeploy"})
    (job,) = claim(worker_account, busy, max_jobs=1)

    response = admin.post("/api/admin/redeploy", {"pool": "p"})
    assert response.status_code == 200
    assert response.json["data"] == {"pool": "p", "redeploy_generation": 1, "drained": sorted([busy, idle])}
    assert admin.post("/api/admin/redeploy", {"pool": "p"}).json["data"]["redeploy_generation"] == 2
    assert admin.post("/api/admin/redeploy", {"pool": "ghost"}).status_code == 404

    # The workers hear it from their own endpoints; the busy one still finishes its job.
    idle_claim = worker_account.post(f"/api/workers/{idle}/claim", {"max_jobs": 1})
    assert idle_claim.json["data"]["drain"] is True and idle_claim.json["data"]["jobs"] == []
    beat = worker_account.post(f"/api/workers/{busy}/heartbeat",
                               {"jobs": [{"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"]}]})
    assert beat.json["data"]["drain"] is True and beat.json["data"]["stop"] == []
    done = worker_account.post(f"/api/workers/{busy}/results", {"results": [
        {"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"], "status": "SUCCEEDED",
         "result_payload": {"slept_s": 0, "attempt": 1}}]})
    assert done.json["data"]["results"][0]["accepted"] is True
    other_beat = worker_account.post(f"/api/workers/{elsewhere}/heartbeat", {"jobs": []})
    assert other_beat.json["data"]["drain"] is False

    (listed,) = [p for p in manager.get("/api/manager/pools").json["data"]["pools"] if p["name"] == "p"]
    assert listed["redeploy_generation"] == 2 and listed["redeploy_requested_at"] is not None
    shown = pool_status(admin)
    assert {w["id"]: w["draining"] for w in shown["workers"]} == {busy: True, idle: True}


def test_drain_only_idle_leaves_a_worker_holding_a_job(alice: As, manager: As, worker_account: As):
    busy = join_pool(worker_account, "p", name="busy")
    idle = join_pool(worker_account, "p", name="idle")
    submit(alice, "sleep", {"tag": "drain"})
    (job,) = claim(worker_account, busy, max_jobs=1)

    drained = manager.post("/api/manager/workers/drain", {"worker_ids": [busy, idle, 999_999], "only_idle": True})
    assert drained.status_code == 200
    assert drained.json["data"] == {"drained": [idle]}
    assert worker_account.post(f"/api/workers/{idle}/claim", {"max_jobs": 1}).json["data"]["drain"] is True
    beat = worker_account.post(f"/api/workers/{busy}/heartbeat",
                               {"jobs": [{"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"]}]})
    assert beat.json["data"]["drain"] is False
    # only_idle defaults to true; false drains the busy one too.
    assert manager.post("/api/manager/workers/drain", {"worker_ids": [busy]}).json["data"] == {"drained": []}
    forced = manager.post("/api/manager/workers/drain", {"worker_ids": [busy], "only_idle": False})
    assert forced.json["data"] == {"drained": [busy]}
    assert "worker_ids" in _fields(manager.post("/api/manager/workers/drain", {"worker_ids": []}))
    assert "worker_ids.0" in _fields(manager.post("/api/manager/workers/drain", {"worker_ids": ["x"]}))
