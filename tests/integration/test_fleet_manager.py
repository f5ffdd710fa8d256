"""What the manager reads and holds: exact queue depths, live workers, the lease, decision retention."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
from sqlalchemy import text

from api.maintenance.records import DecisionPruner, RecordPrunerConfig
from tests.helpers import count
from tests.integration.conftest import As, claim, submit
from tests.integration.fleet_helpers import (
    decision,
    join_pool,
    manager_account,
    pool_config,
    report_pools,
    status,
)

#: Well past ReefGuide's poll cap of 10, so a capped count cannot pass.
PENDING, SCHEDULED, IN_PROGRESS = 150, 20, 12
RACERS = 8


@pytest.fixture
def manager(app) -> As:
    return manager_account(app)


def _lease(who: As, holder: str, ttl_s: float = 30.0) -> Any:
    return who.post("/api/manager/lease", {"holder": holder, "ttl_s": ttl_s})


def _parse(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp)


def test_queue_depths_are_exact_beyond_ten(admin: As, alice: As, manager: As, worker_account: As):
    later = "2099-01-01T00:00:00Z"
    jobs = ([{"type": "sleep", "input_payload": {"tag": f"due-{i}"}} for i in range(PENDING + IN_PROGRESS)]
            + [{"type": "sleep", "input_payload": {"tag": f"later-{i}"}, "run_after": later} for i in range(SCHEDULED)]
            + [{"type": "noop", "input_payload": {}}])
    response = alice.post("/api/jobs/batch", {"jobs": jobs})
    assert response.status_code in (200, 201), response.json
    wid = join_pool(worker_account, "p")
    assert len(claim(worker_account, wid, max_jobs=IN_PROGRESS)) == IN_PROGRESS

    answer = manager.get("/api/manager/queues")
    assert answer.status_code == 200
    types = answer.json["data"]["types"]
    assert types["sleep"] == {"pending": PENDING, "scheduled": SCHEDULED, "in_progress": IN_PROGRESS}
    assert types["noop"] == {"pending": 1, "scheduled": 0, "in_progress": 0}

    # The admin status sums the queue over the pool's job types.
    report_pools(manager, pool_config("p", job_types=("sleep", "noop")))
    (pool,) = status(admin)["pools"]
    assert pool["queue"] == {"pending": PENDING + 1, "scheduled": SCHEDULED, "in_progress": IN_PROGRESS}
    assert [w["id"] for w in pool["workers"]] == [wid]


def test_live_workers_with_pool_attributes_and_running_jobs(alice: As, manager: As, worker_account: As, engine):
    busy = join_pool(worker_account, "p", name="busy", revision="r7", launch_id="launch-1")
    idle = join_pool(worker_account, None, name="plain")
    stopped = join_pool(worker_account, "p", name="stopped")
    silent = join_pool(worker_account, "p", name="silent")
    for i in range(2):
        alice.post("/api/jobs", {"type": "sleep", "input_payload": {"tag": f"w{i}"}})
    assert len(claim(worker_account, busy, max_jobs=2)) == 2
    assert worker_account.post(f"/api/workers/{stopped}/deregister").status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour' WHERE id = :id"),
                     {"id": silent})

    response = manager.get("/api/manager/workers")
    assert response.status_code == 200
    workers = {w["id"]: w for w in response.json["data"]["workers"]}
    assert sorted(workers) == [busy, idle]
    shown = workers[busy]
    assert {k: shown[k] for k in ("name", "pool", "revision", "launch_id", "running_jobs", "draining",
                                  "job_types", "concurrency", "pid", "hostname", "ecs_task_arn")} == {
        "name": "busy", "pool": "p", "revision": "r7", "launch_id": "launch-1", "running_jobs": 2,
        "draining": False, "job_types": ["sleep"], "concurrency": 2, "pid": 4242, "hostname": "host-1",
        "ecs_task_arn": None}
    assert shown["started_at"] and shown["last_heartbeat_at"]
    assert (workers[idle]["pool"], workers[idle]["revision"], workers[idle]["running_jobs"]) == (None, None, 0)


def test_one_holder_at_a_time_with_renewal_release_and_expiry(admin: As, manager: As, engine):
    first = _lease(manager, "m-a", ttl_s=30)
    assert first.status_code == 200
    assert first.json["data"]["holder"] == "m-a" and first.json["data"]["acquired"] is True
    expires = _parse(first.json["data"]["expires_at"])

    second = _lease(manager, "m-b")
    assert second.status_code == 409
    assert second.json["error"]["code"] == "CONFLICT"
    assert second.json["error"]["details"]["holder"] == "m-a"
    assert _parse(second.json["error"]["details"]["expires_at"]) == expires

    renewed = _lease(manager, "m-a", ttl_s=60)
    assert renewed.status_code == 200
    assert _parse(renewed.json["data"]["expires_at"]) > expires
    shown = status(admin)["manager"]
    assert shown["holder"] == "m-a" and shown["active"] is True

    # Only the holder can release; then the other takes it at once.
    assert manager.post("/api/manager/lease/release", {"holder": "m-b"}).json["data"] == {"released": False}
    assert _lease(manager, "m-b").status_code == 409
    assert manager.post("/api/manager/lease/release", {"holder": "m-a"}).json["data"] == {"released": True}
    assert status(admin)["manager"]["active"] is False
    assert _lease(manager, "m-b").status_code == 200

    # An expired lease is free for anyone.
    with engine.begin() as conn:
        conn.execute(text("UPDATE manager_leases SET expires_at = now() - interval '1 second'"))
    assert _lease(manager, "m-a").status_code == 200
    for bad, field in (({"holder": "m-a", "ttl_s": 1}, "ttl_s"), ({"holder": "m-a", "ttl_s": 301}, "ttl_s"),
                       ({"holder": "", "ttl_s": 10}, "holder"), ({"ttl_s": 10}, "holder")):
        response = manager.post("/api/manager/lease", bad)
        assert response.status_code == 422 and field in response.json["error"]["details"]["fields"], bad


def test_racing_managers_exactly_one_wins(app, manager: As):
    barrier = threading.Barrier(RACERS)
    answers: dict[str, int] = {}

    def race(holder: str) -> None:
        client = app.test_client()  # one client per thread: real concurrent requests
        barrier.wait()
        response = client.post("/api/manager/lease", json={"holder": holder, "ttl_s": 30},
                               headers={"Authorization": f"Bearer {manager.token}"})
        answers[holder] = response.status_code

    threads = [threading.Thread(target=race, args=(f"m-{i}",)) for i in range(RACERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(answers.values()) == [200] + [409] * (RACERS - 1), answers
    (winner,) = [h for h, s in answers.items() if s == 200]
    loser = next(h for h in answers if h != winner)
    assert _lease(manager, winner).status_code == 200
    assert _lease(manager, loser).json["error"]["details"]["holder"] == winner


def test_pruner_keeps_recent_decisions_per_pool(admin: As, manager: As, engine):
    report_pools(manager, pool_config("p"), pool_config("q", job_types=("noop",)))
    for batch in range(3):
        body = [decision("p", desired=batch * 10 + i, reason=f"p-{batch * 10 + i}") for i in range(10)]
        assert manager.post("/api/manager/decisions", {"decisions": body}).status_code == 201
    assert manager.post("/api/manager/decisions", {"decisions": [
        decision("q", reason=f"q-{i}") for i in range(3)]}).status_code == 201
    with engine.begin() as conn:
        # One of q's decisions is two days old.
        conn.execute(text("""UPDATE fleet_decisions SET created_at = now() - interval '2 days'
                             WHERE reason = 'q-0'"""))

    pruner = DecisionPruner(engine, RecordPrunerConfig(decisions_per_pool=12, decision_retention_s=86400))
    assert pruner.run_once().deleted == 30 + 3 - 12 - 2

    assert count(engine, "fleet_decisions") == 12 + 2
    pools = {p["name"]: p for p in status(admin)["pools"]}
    # The status shows the newest 20 at most; the 12 kept of p are the newest 12.
    assert [d["reason"] for d in pools["p"]["decisions"]] == [f"p-{i}" for i in range(29, 17, -1)]
    assert [d["reason"] for d in pools["q"]["decisions"]] == ["q-2", "q-1"]


def _claim_and_drain_together(app, worker_account: As, manager: As, worker_id: int) -> dict[str, Any]:
    """A claim and an only-idle drain of one worker, released at once from two threads."""
    barrier = threading.Barrier(2)
    got: dict[str, Any] = {}

    def call(key: str, path: str, body: dict[str, Any], token: str, field: str) -> None:
        client = app.test_client()  # one client per thread: real concurrent requests
        barrier.wait()
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        got[key] = response.json["data"][field]

    threads = [
        threading.Thread(target=call, args=("jobs", f"/api/workers/{worker_id}/claim", {"max_jobs": 1, "wait_s": 0},
                                            worker_account.token, "jobs")),
        threading.Thread(target=call, args=("drained", "/api/manager/workers/drain",
                                            {"worker_ids": [worker_id], "only_idle": True}, manager.token, "drained")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return got


def test_a_drain_racing_a_claim_never_leaves_a_drained_worker_busy(app, alice: As, manager: As,
                                                                    worker_account: As):
    """Started together, many times: either the claim gets the job and the worker is not
    drained, or the worker is drained and gets nothing."""
    for round_ in range(30):
        worker_id = join_pool(worker_account, "p", name=f"race-{round_}")
        submit(alice, "sleep", {"seconds": 60, "tag": f"race-{round_}"})
        got = _claim_and_drain_together(app, worker_account, manager, worker_id)
        assert not (got["jobs"] and got["drained"]), (round_, got)
        if not got["jobs"]:  # leave no pending job for the next round's worker to find
            claim(worker_account, join_pool(worker_account, "p", name=f"sweep-{round_}"))
