"""Long-poll claims wake on NOTIFY, on a job becoming due, and hold no connection while waiting."""

from __future__ import annotations

import datetime as dt
import threading
import time

from api.context import EXTENSION_KEY
from tests.integration.conftest import register, submit


def _claim_in_thread(worker, wid, wait_s, out):
    def run():
        start = time.monotonic()
        response = worker.post(f"/api/workers/{wid}/claim", {"max_jobs": 5, "wait_s": wait_s})
        out.append((time.monotonic() - start, response.json["data"]["jobs"]))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_waiting_claim_wakes_when_a_job_arrives(app, alice, worker_account):
    context = app.extensions[EXTENSION_KEY]
    context.settings = context.settings.with_(claim_poll_fallback_s=30.0)  # only NOTIFY can wake it early
    wid = register(worker_account)
    context.listener.ensure_started()
    assert context.listener.connected.wait(5)
    out: list = []
    thread = _claim_in_thread(worker_account, wid, 10.0, out)
    time.sleep(0.5)
    assert thread.is_alive(), "the claim should be waiting"
    # While it waits it holds no pooled connection.
    assert context.engine.pool.checkedout() == 0
    submitted_at = time.monotonic()
    job = submit(alice, "noop", {"tag": "wake"})
    thread.join(10)
    elapsed, jobs = out[0]
    assert [j["job_id"] for j in jobs] == [job["id"]]
    assert elapsed < 5.0
    assert time.monotonic() - submitted_at < 2.0


def test_waiting_claim_wakes_when_a_scheduled_job_becomes_due(app, alice, worker_account):
    context = app.extensions[EXTENSION_KEY]
    context.settings = context.settings.with_(claim_poll_fallback_s=30.0)
    wid = register(worker_account)
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    job = submit(alice, "noop", {"tag": "later"}, run_after=due.isoformat())
    out: list = []
    _claim_in_thread(worker_account, wid, 10.0, out).join(15)
    elapsed, jobs = out[0]
    assert [j["job_id"] for j in jobs] == [job["id"]]
    assert 1.0 <= elapsed < 4.0


def test_claim_returns_empty_after_wait(worker_account):
    wid = register(worker_account)
    start = time.monotonic()
    response = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1, "wait_s": 1.0})
    assert response.json["data"] == {"jobs": [], "drain": False, "results": []}
    assert 0.9 <= time.monotonic() - start < 3.0


def _listening(app):
    context = app.extensions[EXTENSION_KEY]
    context.settings = context.settings.with_(claim_poll_fallback_s=30.0)  # only NOTIFY can wake them
    context.listener.ensure_started()
    assert context.listener.connected.wait(5)
    return context


def test_jobs_wake_as_many_parked_claims_as_they_need(app, alice, worker_account):
    """Two jobs wake two of five parked claims: an idle fleet does not stampede for each job."""
    context = _listening(app)
    workers = [register(worker_account, name=f"w{i}") for i in range(5)]
    out: list = []
    threads = []
    for wid in workers:
        def run(wid: int = wid) -> None:
            response = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1, "wait_s": 6.0})
            out.append((time.monotonic(), response.json["data"]["jobs"]))
        threads.append(threading.Thread(target=run))
        threads[-1].start()
    deadline = time.monotonic() + 5
    while context.hub.parked() < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert context.hub.parked() == 5
    submitted_at = time.monotonic()
    response = alice.post("/api/jobs/batch", {"jobs": [{"type": "noop", "input_payload": {"tag": str(i)}}
                                                       for i in range(2)]})
    assert response.status_code in (200, 201), response.json
    time.sleep(1.0)
    assert len(out) == 2 and all(len(jobs) == 1 for _, jobs in out)
    assert all(at - submitted_at < 1.0 for at, _ in out)
    assert context.hub.parked() == 3  # the other three still wait, untouched
    for thread in threads:
        thread.join(10)
    assert [jobs for _, jobs in out[2:]] == [[], [], []]


def test_a_drain_answers_the_workers_parked_claim_at_once(app, alice, admin, worker_account, engine):
    from api.queue.workers import drain_workers

    context = _listening(app)
    wid = register(worker_account)
    out: list = []
    thread = _claim_in_thread(worker_account, wid, 10.0, out)
    time.sleep(0.5)
    with engine.begin() as conn:
        assert drain_workers(conn, [wid], only_idle=True) == [wid]
    thread.join(5)
    assert not thread.is_alive(), "the drain's NOTIFY should answer the parked claim"
    assert out[0][1] == [] and out[0][0] < 3.0
    assert context.hub.parked() == 0


def test_heartbeats_do_not_queue_behind_claims(app, alice, worker_account):
    """Claims and reports take at most half the pool: with every claim slot busy (a fleet
    claiming at once), a heartbeat still goes straight through."""
    context = app.extensions[EXTENSION_KEY]
    wid = register(worker_account)
    submit(alice, "sleep", {"seconds": 60})
    (held,) = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1}).json["data"]["jobs"]
    slots = context.settings.db_pool_size
    for _ in range(slots):
        assert context.claim_slots.acquire(timeout=5)
    out: list = []
    try:
        waiting = _claim_in_thread(worker_account, wid, 0.0, out)
        time.sleep(0.3)
        assert waiting.is_alive(), "the claim waits for a slot"
        beat = worker_account.post(f"/api/workers/{wid}/heartbeat",
                                   {"jobs": [{"job_id": held["job_id"], "attempt": held["attempt"], "token": held["token"]}]})
        assert beat.status_code == 200 and beat.json["data"]["stop"] == []
    finally:
        for _ in range(slots):
            context.claim_slots.release()
    waiting.join(5)
    assert out and out[0][1] == []


def test_jobs_claimed_for_a_client_that_hung_up_meanwhile_go_back_at_once(app, alice, worker_account, engine):
    """A worker whose request timed out (or who died) while its claim ran gets nothing: the
    jobs are released at once (not counted as an attempt) instead of waiting out a lease."""
    from api.workers.service import long_poll_claim
    from tests.helpers import job_row

    context = app.extensions[EXTENSION_KEY]
    wid = register(worker_account)
    job = submit(alice, "noop", {"tag": "hung-up"})
    answers = iter([False])  # still there when the claim starts, gone when it has jobs to hand over
    with app.app_context():
        answer = long_poll_claim(context, wid, worker_account.user_id, None, 5, 0.0,
                                 client_gone=lambda: next(answers, True))
    assert answer.jobs == []
    row = job_row(engine, job["id"])
    assert (row["status"], row["max_attempts"] - row["attempt"]) == ("PENDING", 3)  # the attempt was given back
    (again,) = worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 1}).json["data"]["jobs"]
    assert again["job_id"] == job["id"]


def test_a_job_scheduled_while_claims_are_parked_is_claimed_when_due(app, alice, worker_account):
    _listening(app)
    wid = register(worker_account)
    out: list = []
    thread = _claim_in_thread(worker_account, wid, 10.0, out)
    time.sleep(0.5)  # parked, with nothing scheduled yet
    due = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
    job = submit(alice, "noop", {"tag": "scheduled-later"}, run_after=due.isoformat())
    thread.join(15)
    elapsed, jobs = out[0]
    assert [j["job_id"] for j in jobs] == [job["id"]]
    assert 1.5 <= elapsed < 5.0, "claimed when due, not when the claim's wait ran out"
