"""``Idempotency-Key`` on POST /api/jobs and /api/jobs/batch: a retry gets the first answer back.

The concurrency tests use real concurrent clients (threads sending requests through the
app, each on its own database connection) and observe the waiting in PostgreSQL itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, text

import api.jobs.routes
from api.auth.models import Role
from api.errors import ServiceUnavailable, ValidationFailed
from api.maintenance.records import IdempotencyKeyPruner, RecordPrunerConfig
from api.queue import jobs as queue_jobs
from tests.helpers import count, wait_for
from tests.integration.conftest import As, claim, make_account, register, report

KEY = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"


def post(user: As, path: str, body: dict[str, Any], key: str | None) -> Any:
    headers = {"Authorization": f"Bearer {user.token}"} | ({KEY: key} if key is not None else {})
    return user.client.post(path, json=body, headers=headers)


def job_body(tag: str = "a", **extra: Any) -> dict[str, Any]:
    return {"type": "sleep", "input_payload": {"seconds": 1, "tag": tag}, **extra}


def stored_keys(engine: Engine) -> list[tuple[int, str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text("SELECT user_id, key, status_code FROM idempotency_keys"))]


def waiting_on_locks(engine: Engine) -> int:
    """Backends of this database blocked on a lock (a row, a transaction, an advisory lock)."""
    with engine.connect() as conn:
        return int(conn.execute(text("""SELECT count(*) FROM pg_stat_activity
                                        WHERE datname = current_database() AND wait_event_type = 'Lock'""")
                                ).scalar_one())


def test_a_repeated_key_returns_the_first_answer_and_submits_nothing(alice, engine):
    first = post(alice, "/api/jobs", job_body(), "retry-1")
    assert first.status_code == 201 and REPLAYED not in first.headers
    job = first.json["data"]
    assert job["origin"] == "created"

    again = post(alice, "/api/jobs", job_body(), "retry-1")
    assert again.status_code == 201
    assert again.headers[REPLAYED] == "true"
    assert again.json["data"] == job  # nothing about the job changed in between
    # A creating submission is recorded on its job: no job_requests row, and the replay added none.
    assert count(engine, "jobs") == 1 and count(engine, "job_requests") == 0

    # Without the key the same body is a new submission, which joins the active job.
    joined = post(alice, "/api/jobs", job_body(), None)
    assert joined.status_code == 200 and joined.json["data"]["origin"] == "joined"
    assert joined.json["data"]["request_id"] != job["request_id"]

    # A replay shows the job as it is now, with the first answer's status, origin and request id.
    assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    later = post(alice, "/api/jobs", job_body(), "retry-1")
    assert later.status_code == 201 and later.headers[REPLAYED] == "true"
    assert later.json["data"]["status"] == "CANCELLED"
    assert (later.json["data"]["origin"], later.json["data"]["request_id"]) == ("created", job["request_id"])
    assert count(engine, "jobs") == 1 and count(engine, "job_requests") == 1  # the joined one only


def test_a_replay_keeps_the_first_status_code_and_origin(alice, engine):
    post(alice, "/api/jobs", job_body("shared"), None)
    joined = post(alice, "/api/jobs", job_body("shared"), "joins")
    assert joined.status_code == 200 and joined.json["data"]["origin"] == "joined"
    replay = post(alice, "/api/jobs", job_body("shared"), "joins")
    assert replay.status_code == 200 and replay.headers[REPLAYED] == "true"
    assert replay.json["data"]["origin"] == "joined"
    assert replay.json["data"]["request_id"] == joined.json["data"]["request_id"]
    assert stored_keys(engine) == [(alice.user_id, "joins", 200)]


def test_a_key_replays_whatever_the_cache_setting(alice, worker_account, engine):
    body = {"type": "noop", "input_payload": {"tag": "nocache"}, "cache": False}
    first = post(alice, "/api/jobs", body, "no-cache")
    assert first.status_code == 201
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    assert report(worker_account, wid, claimed, result_payload={}).status_code == 200

    replay = post(alice, "/api/jobs", body, "no-cache")
    assert replay.status_code == 201 and replay.headers[REPLAYED] == "true"
    assert replay.json["data"]["id"] == first.json["data"]["id"]
    assert replay.json["data"]["status"] == "SUCCEEDED"
    assert count(engine, "jobs") == 1
    # cache: false without a key runs it anew.
    assert post(alice, "/api/jobs", body, None).json["data"]["id"] != first.json["data"]["id"]


def test_batches_replay_and_a_key_belongs_to_one_account(alice, bob, engine):
    batch = {"jobs": [job_body("b1"), job_body("b2"), job_body("b1")]}
    first = post(alice, "/api/jobs/batch", batch, "batch-1")
    assert first.status_code == 201
    assert [j["origin"] for j in first.json["data"]] == ["created", "created", "joined"]
    replay = post(alice, "/api/jobs/batch", batch, "batch-1")
    assert replay.status_code == 201 and replay.headers[REPLAYED] == "true"
    assert replay.json["data"] == first.json["data"]
    assert count(engine, "jobs") == 2 and count(engine, "job_requests") == 1  # the repeat of b1 joined

    # Bob's "batch-1" is his own key: a submission of his own.
    bobs = post(bob, "/api/jobs/batch", batch, "batch-1")
    assert bobs.status_code == 201 and REPLAYED not in bobs.headers
    assert {j["id"] for j in bobs.json["data"]}.isdisjoint(j["id"] for j in first.json["data"])


@pytest.mark.parametrize(("path", "body"), [
    ("/api/jobs/batch", {"jobs": [job_body("b1")]}),          # another body
    ("/api/jobs", job_body("b1")),                             # another path
])
def test_the_same_key_with_another_request_is_422(alice, engine, path, body):
    batch = {"jobs": [job_body("b1"), job_body("b2")]}
    assert post(alice, "/api/jobs/batch", batch, "k").status_code == 201
    refused = post(alice, path, body, "k")
    assert refused.status_code == 422
    error = refused.json["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]["fields"]) == [KEY]
    assert "different request" in error["details"]["fields"][KEY][0]
    assert count(engine, "jobs") == 2


def test_key_order_and_spacing_of_the_body_do_not_make_another_request(alice):
    raw = '{"input_payload": {"tag": "order", "seconds": 1}, "type": "sleep"}'
    spaced = '{ "type" : "sleep",\n "input_payload" : { "seconds" : 1, "tag" : "order" } }'
    headers = {"Authorization": f"Bearer {alice.token}", KEY: "order", "Content-Type": "application/json"}
    first = alice.client.post("/api/jobs", data=raw, headers=headers)
    again = alice.client.post("/api/jobs", data=spaced, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers[REPLAYED] == "true" and again.json["data"]["id"] == first.json["data"]["id"]


@pytest.mark.parametrize("key", ["", "x" * 256, "caf\u00e9", "tab\there", "bell\x07"])
def test_malformed_keys_are_422_naming_the_header(alice, engine, key):
    refused = post(alice, "/api/jobs", job_body(), key)
    assert refused.status_code == 422
    assert list(refused.json["error"]["details"]["fields"]) == [KEY]
    assert "printable ASCII" in refused.json["error"]["details"]["fields"][KEY][0]
    assert count(engine, "jobs") == 0 and stored_keys(engine) == []


def test_the_longest_key_and_any_printable_ascii_are_accepted(alice):
    for key in ("x" * 255, "~ !\"#$%&'()*+,-./09:;<=>?@AZ[\\]^_`az{|}"):
        assert post(alice, "/api/jobs", job_body(key[:8]), key).status_code == 201
        assert post(alice, "/api/jobs", job_body(key[:8]), key).headers[REPLAYED] == "true"


def test_a_refused_submission_stores_no_key(app_factory):
    limited = app_factory(max_active_jobs_per_user=1)
    carol = make_account(limited, "carol@example.org", [Role.USER])
    engine = limited.extensions["skyfleet"].engine
    # 422 from inside the submitting transaction: a priority beyond the allowance.
    assert post(carol, "/api/jobs", job_body("urgent", priority=0), "k").status_code == 422
    assert stored_keys(engine) == []
    held = post(carol, "/api/jobs", job_body("held"), None).json["data"]
    # 429: over max_active_jobs.
    over = post(carol, "/api/jobs", job_body("over"), "k")
    assert over.status_code == 429 and over.json["error"]["code"] == "LIMIT_EXCEEDED"
    assert stored_keys(engine) == []
    # The key is still free: once there is room, the same key (with any body) submits.
    assert carol.post(f"/api/jobs/{held['id']}/cancel").status_code == 200
    accepted = post(carol, "/api/jobs", job_body("over"), "k")
    assert accepted.status_code == 201 and REPLAYED not in accepted.headers
    assert stored_keys(engine) == [(carol.user_id, "k", 201)]


def test_a_503_after_the_commit_then_a_retry_returns_the_first_answer(alice, engine, monkeypatch):
    """The key is written with the jobs; the answer is read after the commit and can fail."""
    real_get_jobs = queue_jobs.get_jobs
    failures = iter([True])

    def flaky(conn: Any, job_ids: list[int]) -> dict[int, dict[str, Any]]:
        if next(failures, False):
            raise ServiceUnavailable("the database connection was lost; retry shortly")
        return real_get_jobs(conn, job_ids)

    monkeypatch.setattr(queue_jobs, "get_jobs", flaky)
    lost = post(alice, "/api/jobs", job_body("lost"), "after-commit")
    assert lost.status_code == 503
    assert count(engine, "jobs") == 1 and stored_keys(engine) == [(alice.user_id, "after-commit", 201)]

    retry = post(alice, "/api/jobs", job_body("lost"), "after-commit")
    assert retry.status_code == 201 and retry.headers[REPLAYED] == "true"
    assert retry.json["data"]["origin"] == "created"
    assert count(engine, "jobs") == 1 and count(engine, "job_requests") == 0


def _in_thread(send: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(send()), daemon=True)
    thread.start()
    return thread, result


@pytest.mark.parametrize("first_fails", [False, True])
def test_a_concurrent_request_with_the_key_waits_for_the_first(app, alice, engine, monkeypatch, first_fails):
    """The second request blocks on the first one's uncommitted key row. If the first commits,
    the second replays it; if it rolls back (refused), the second submits."""
    real_check = api.jobs.routes.check_submission
    entered, release = threading.Event(), threading.Event()

    def held_check(*args: Any, **kwargs: Any) -> None:
        if not entered.is_set():
            entered.set()
            assert release.wait(30)
            if first_fails:
                raise ValidationFailed("refused on purpose")
        real_check(*args, **kwargs)

    monkeypatch.setattr(api.jobs.routes, "check_submission", held_check)
    second_client = As(app.test_client(), alice.token, alice.user_id)
    first, first_result = _in_thread(lambda: post(alice, "/api/jobs", job_body("race"), "race"))
    assert entered.wait(10)
    second, second_result = _in_thread(lambda: post(second_client, "/api/jobs", job_body("race"), "race"))
    wait_for(lambda: waiting_on_locks(engine) == 1, timeout=10, what="the second request waiting on the key")
    assert count(engine, "jobs") == 0
    release.set()
    first.join(10)
    second.join(10)
    (a,), (b,) = first_result, second_result
    if first_fails:
        assert a.status_code == 422
        assert b.status_code == 201 and REPLAYED not in b.headers
    else:
        assert a.status_code == 201 and REPLAYED not in a.headers
        assert b.status_code == 201 and b.headers[REPLAYED] == "true"
        assert b.json["data"]["request_id"] == a.json["data"]["request_id"]
    assert count(engine, "jobs") == 1 and count(engine, "job_requests") == 0  # one creating submission


def test_many_concurrent_requests_with_one_key_submit_once(app, alice, engine):
    clients = [As(app.test_client(), alice.token, alice.user_id) for _ in range(8)]
    start = threading.Barrier(len(clients))
    answers: list[Any] = []
    lock = threading.Lock()

    def send(client: As) -> None:
        start.wait(10)
        response = post(client, "/api/jobs/batch", {"jobs": [job_body("x"), job_body("y")]}, "stampede")
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=send, args=(c,), daemon=True) for c in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [r.status_code for r in answers] == [201] * len(clients)
    assert sum(1 for r in answers if REPLAYED not in r.headers) == 1
    assert len({tuple(j["request_id"] for j in r.json["data"]) for r in answers}) == 1
    assert count(engine, "jobs") == 2 and count(engine, "job_requests") == 0  # two creating submissions


def test_a_replay_of_deleted_jobs_is_a_conflict_not_a_new_submission(alice, engine):
    job = post(alice, "/api/jobs", job_body("gone"), "gone").json["data"]
    assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    assert alice.delete(f"/api/jobs/{job['id']}").status_code == 200
    replay = post(alice, "/api/jobs", job_body("gone"), "gone")
    assert replay.status_code == 409
    assert replay.json["error"]["details"]["deleted_job_ids"] == [job["id"]]
    assert count(engine, "jobs") == 0


def test_keys_expire_after_their_ttl_and_the_pruner_deletes_them(alice, engine):
    assert post(alice, "/api/jobs", job_body("old"), "old").status_code == 201
    assert post(alice, "/api/jobs", job_body("new"), "new").status_code == 201
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"))
    # Past its day a key is forgotten, even before the pruner gets to it: another body is welcome.
    reused = post(alice, "/api/jobs", job_body("another"), "old")
    assert reused.status_code == 201 and REPLAYED not in reused.headers
    with engine.begin() as conn:
        conn.execute(text("UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old'"))

    assert IdempotencyKeyPruner(engine, RecordPrunerConfig(idempotency_key_ttl_s=86400)).run_once().deleted == 1
    assert [key for _, key, _ in stored_keys(engine)] == ["new"]
    assert post(alice, "/api/jobs", job_body("new"), "new").headers[REPLAYED] == "true"


def test_openapi_documents_the_header_and_the_replay(app):
    spec = app.test_client().get("/api/openapi.json").json
    for path in ("/api/jobs", "/api/jobs/batch"):
        operation = spec["paths"][path]["post"]
        (parameter,) = [p for p in operation["parameters"] if p["name"] == KEY]
        assert parameter["in"] == "header" and parameter["schema"]["maxLength"] == 255
        assert REPLAYED in operation["responses"]["201"]["headers"]
        assert "Idempotency-Key" in operation["responses"]["422"]["description"]

