"""Concurrency with real concurrent clients: claimers in separate processes, racing submitters."""

from __future__ import annotations

import multiprocessing as mp
import threading
from collections import Counter

import pytest
from sqlalchemy import text

from api.auth.models import Role
from api.database import make_engine
from api.errors import ServiceUnavailable
from api.queue.leases import claim_jobs
from api.queue.submit import NewJob, enqueue_jobs
from tests.helpers import count
from tests.integration.conftest import make_account, submit

JOBS = 5000
CLAIMERS = 8


def _claimer(url: str, worker_id: int, start: mp.synchronize.Event, out: mp.Queue) -> None:  # type: ignore[name-defined]
    """One claimer process: claim batches of 1–20 until the queue is empty."""
    engine = make_engine(url, pool_size=1)
    claimed: list[int] = []
    start.wait()
    batch = 1 + worker_id % 20
    while True:
        with engine.begin() as conn:
            jobs = claim_jobs(conn, worker_id, ["noop"], batch, 60.0)
        if not jobs:
            break
        claimed.extend(j.job_id for j in jobs)
    engine.dispose()
    out.put((worker_id, claimed))


def test_eight_claimer_processes_take_every_job_exactly_once(engine, alice, clean_db):
    with engine.begin() as conn:
        enqueue_jobs(conn, alice.user_id, [NewJob("noop", {"tag": str(i)}, 3) for i in range(JOBS)])
        worker_ids = [
            conn.execute(text("""INSERT INTO workers (name, user_id, job_types, concurrency)
                                 VALUES (:n, :u, ARRAY['noop'], 1) RETURNING id"""),
                         {"n": f"c{i}", "u": alice.user_id}).scalar_one()
            for i in range(CLAIMERS)
        ]
    ctx = mp.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(clean_db, wid, start, out)) for wid in worker_ids]
    for p in procs:
        p.start()
    start.set()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    claimed = [job_id for ids in results.values() for job_id in ids]
    duplicates = [j for j, n in Counter(claimed).items() if n > 1]
    assert duplicates == []
    assert len(claimed) == JOBS
    assert sum(1 for ids in results.values() if ids) >= 2, "the claimers did not overlap"
    with engine.connect() as conn:
        statuses = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
        per_job = conn.execute(text("SELECT max(attempt), min(attempt), count(DISTINCT lease_token) FROM jobs")).one()
        holders = dict(conn.execute(text("SELECT id, worker_id FROM jobs")).all())
    assert statuses == {"IN_PROGRESS": JOBS}
    assert tuple(per_job) == (1, 1, JOBS)  # one attempt each, each with a token of its own
    # Each job's live lease is held by the one claimer that got it.
    assert holders == {job_id: wid for wid, ids in results.items() for job_id in ids}


def test_twenty_concurrent_identical_submissions_make_one_job(app, alice, engine):
    barrier = threading.Barrier(20)
    answers: list[dict] = []
    lock = threading.Lock()

    def submit_once() -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post("/api/jobs", json={"type": "sleep", "input_payload": {"seconds": 5, "tag": "same"}},
                               headers={"Authorization": f"Bearer {alice.token}"})
        with lock:
            answers.append({**response.json["data"], "http": response.status_code})

    threads = [threading.Thread(target=submit_once) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({a["id"] for a in answers}) == 1
    assert sorted(Counter(a["origin"] for a in answers).items()) == [("created", 1), ("joined", 19)]
    assert sorted(Counter(a["http"] for a in answers).items()) == [(200, 19), (201, 1)]
    # The creating submission is on the job row; the 19 that joined have rows of their own.
    assert count(engine, "jobs") == 1 and count(engine, "job_requests") == 19


def test_dedup_ignores_key_order_but_not_values(alice):
    a = submit(alice, "sleep", {"seconds": 1, "tag": "x"})
    b = submit(alice, "sleep", {"tag": "x", "seconds": 1.0})
    c = submit(alice, "sleep", {"tag": "x", "seconds": 2})
    assert a["id"] == b["id"] != c["id"]


def test_a_heartbeat_with_progress_never_deadlocks_with_a_report_of_the_same_attempt(
        app, alice, worker_account, engine, clean_db):
    """A report locks the job row, then writes the attempt's history row; a heartbeat updates the
    job row (lease and progress). Here a transaction holds the job row as a report would, a real
    heartbeat request runs, then the transaction writes the history row: neither may be aborted."""
    import psycopg

    from api.database import libpq_url
    from tests.helpers import wait_for
    from tests.integration.conftest import claim, register

    submit(alice, "sleep", {"seconds": 0})
    wid = register(worker_account)
    (job,) = claim(worker_account, wid)
    answers: list[int] = []
    with psycopg.connect(libpq_url(clean_db)) as reporter:
        reporter.execute("UPDATE jobs SET updated_at = now() WHERE id = %s", (job["job_id"],))
        beat = threading.Thread(target=lambda: answers.append(worker_account.post(
            f"/api/workers/{wid}/heartbeat",
            {"jobs": [{"job_id": job["job_id"], "attempt": 1, "token": job["token"],
                       "progress": {"percent": 50}}]}).status_code))
        beat.start()

        def heartbeat_done_or_waiting() -> bool:
            with engine.connect() as conn:
                waiting = conn.execute(text("""SELECT count(*) FROM pg_stat_activity
                                               WHERE datname = current_database() AND wait_event_type = 'Lock'""")
                                       ).scalar_one()
            return bool(answers) or waiting > 0

        wait_for(heartbeat_done_or_waiting, timeout=10, what="the heartbeat to run")
        # The report's second step: the attempt's history row (it references the job row).
        reporter.execute("INSERT INTO job_attempts (job_id, attempt, lease_token, worker_id, outcome) "
                         "VALUES (%s, 1, %s, %s, 'SUCCEEDED')", (job["job_id"], job["token"], wid))
        reporter.commit()
    beat.join(10)
    assert answers == [200]


def _race(app, token: str, bodies: list[tuple[str, dict]]) -> list[tuple[int, dict]]:
    """POST each (path, body) from its own thread, all released at once; the answers in order."""
    barrier = threading.Barrier(len(bodies))
    answers: list[tuple[int, dict]] = [(0, {})] * len(bodies)

    def post(i: int, path: str, body: dict) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(path, json=body, headers={"Authorization": f"Bearer {token}"})
        answers[i] = (response.status_code, response.json)

    threads = [threading.Thread(target=post, args=(i, path, body)) for i, (path, body) in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return answers


def test_concurrent_submissions_never_pass_the_active_job_limit(app_factory):
    """Twelve submitters race for an account allowed five active jobs: five get in, the rest
    hear 429, and the jobs table agrees."""
    limited = app_factory(max_active_jobs_per_user=5)
    carol = make_account(limited, "carol@example.org", [Role.USER])
    answers = _race(limited, carol.token,
                    [("/api/jobs", {"type": "noop", "input_payload": {"tag": str(i)}}) for i in range(12)])
    assert sorted(Counter(status for status, _ in answers).items()) == [(201, 5), (429, 7)]
    refused = [body["error"] for status, body in answers if status == 429]
    assert {e["code"] for e in refused} == {"LIMIT_EXCEEDED"}
    assert {e["details"]["active"] for e in refused} == {5}
    engine = limited.extensions["skyfleet"].engine
    assert count(engine, "jobs") == 5


def test_concurrent_batches_sharing_inputs_in_opposite_orders_both_succeed(app, alice, engine):
    """Each batch waits on the other's uncommitted rows, in opposite orders: PostgreSQL rolls one
    back as a deadlock, and it runs again (its client never sees the 503)."""
    tags = [str(i) for i in range(1000)]
    forward = {"jobs": [{"type": "noop", "input_payload": {"tag": t}} for t in tags]}
    backward = {"jobs": list(reversed(forward["jobs"]))}
    for _ in range(3):
        answers = _race(app, alice.token, [("/api/jobs/batch", forward), ("/api/jobs/batch", backward)])
        assert [status for status, _ in answers] == [201, 201], answers
        ids = [[job["id"] for job in body["data"]] for _, body in answers]
        assert ids[0] == list(reversed(ids[1]))  # the same 1,000 jobs, shared
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM job_requests; DELETE FROM jobs"))


def test_a_batch_is_queued_in_the_order_it_was_submitted(alice):
    jobs = alice.post("/api/jobs/batch", {"jobs": [{"type": "noop", "input_payload": {"tag": t}}
                                                   for t in ("z", "a", "m", "b")]}).json["data"]
    assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs)
    assert [j["request_id"] for j in jobs] == sorted(j["request_id"] for j in jobs)


def test_a_transaction_rolled_back_for_a_deadlock_runs_again(app):
    """``run_transaction`` runs the work again after a SQLSTATE class 40 rollback (and only then)."""
    context = app.extensions["skyfleet"]
    calls: list[int] = []

    def work(conn) -> str:
        calls.append(1)
        if len(calls) < 3:
            conn.execute(text("DO $$ BEGIN RAISE EXCEPTION 'staged' USING ERRCODE = '40P01'; END $$"))
        return "done"

    assert context.run_transaction(work) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(ServiceUnavailable):
        context.run_transaction(work, attempts=2)
    assert len(calls) == 2

    def broken(conn) -> None:
        calls.append(1)
        conn.execute(text("DO $$ BEGIN RAISE EXCEPTION 'down' USING ERRCODE = '57P01'; END $$"))

    calls.clear()
    with pytest.raises(ServiceUnavailable):
        context.run_transaction(broken)
    assert len(calls) == 1  # not a race: not run again
