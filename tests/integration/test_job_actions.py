"""Retry, bulk actions and the text filter of the job list."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.integration.conftest import submit


def _finish(engine, job_id: int, status: str) -> None:
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = :s, finished_at = now(), attempt = 2, max_attempts = 2, "
                          "error = '{\"code\": \"X\", \"message\": \"broken pixel\"}' WHERE id = :id"),
                     {"s": status, "id": job_id})


def test_a_failed_job_runs_again_with_its_history(alice, engine):
    job = submit(alice, "noop", {"tag": "again"})
    _finish(engine, job["id"], "FAILED")
    again = alice.post(f"/api/jobs/{job['id']}/retry")
    assert again.status_code == 200, again.json
    data = again.json["data"]
    assert data["status"] == "PENDING" and data["error"] is None and data["max_attempts"] == 2 + 3
    assert alice.post(f"/api/jobs/{job['id']}/retry").json["error"]["code"] == "CONFLICT"  # active now


def test_retry_refuses_what_it_cannot_do(alice, bob, engine):
    job = submit(alice, "noop", {"tag": "twin"})
    assert bob.post(f"/api/jobs/{job['id']}/retry").status_code == 404
    _finish(engine, job["id"], "SUCCEEDED")
    assert alice.post(f"/api/jobs/{job['id']}/retry").status_code == 409  # succeeded: clone it instead
    _finish(engine, job["id"], "CANCELLED")
    twin = submit(alice, "noop", {"tag": "twin"}, cache=False)  # an identical job is active now
    assert twin["id"] != job["id"]
    refused = alice.post(f"/api/jobs/{job['id']}/retry")
    assert refused.status_code == 409 and "identical" in refused.json["error"]["message"]


def test_bulk_cancel_by_ids_reports_each_job(alice, bob, engine):
    mine = [submit(alice, "sleep", {"seconds": 60, "tag": str(i)})["id"] for i in range(3)]
    theirs = submit(bob, "sleep", {"seconds": 60, "tag": "bob"})["id"]
    _finish(engine, mine[2], "SUCCEEDED")
    answer = alice.post("/api/jobs/bulk", {"action": "cancel", "ids": [*mine, theirs, 10**12]})
    assert answer.status_code == 200, answer.json
    data = answer.json["data"]
    assert data["done"] == mine[:2] and data["more"] is False
    assert [(r["id"], r["code"]) for r in data["refused"]] == [
        (mine[2], "CONFLICT"), (theirs, "NOT_FOUND"), (10**12, "NOT_FOUND")]
    assert bob.get(f"/api/jobs/{theirs}").json["data"]["status"] == "PENDING"


def test_bulk_by_filter_acts_on_every_match(alice, engine):
    for i in range(4):
        submit(alice, "sleep", {"seconds": 60, "tag": f"night-{i}"})
    submit(alice, "sleep", {"seconds": 60, "tag": "day"})
    cancelled = alice.post("/api/jobs/bulk", {"action": "cancel", "filter": {"q": "NIGHT", "status": "PENDING"}})
    assert len(cancelled.json["data"]["done"]) == 4
    deleted = alice.post("/api/jobs/bulk", {"action": "delete", "filter": {"status": "CANCELLED"}})
    assert len(deleted.json["data"]["done"]) == 4
    assert [j["input_payload"]["tag"] for j in alice.get("/api/jobs").json["data"]] == ["day"]


@pytest.mark.parametrize("body", [
    {"action": "cancel"},
    {"action": "cancel", "ids": [1], "filter": {}},
    {"action": "explode", "ids": [1]},
    {"action": "cancel", "ids": []},
    {"action": "cancel", "ids": list(range(1, 1002))},
    {"action": "cancel", "filter": {"status": "NOPE"}},
])
def test_bulk_bad_bodies_are_422(alice, body):
    answer = alice.post("/api/jobs/bulk", body)
    assert answer.status_code == 422 and answer.json["error"]["details"]["fields"], answer.json


def test_the_list_filters_by_text_in_input_and_error(alice, engine):
    a = submit(alice, "noop", {"tag": "M31 field 50%"})
    b = submit(alice, "noop", {"tag": "m33"})
    _finish(engine, b["id"], "FAILED")
    found = lambda q: [j["id"] for j in alice.get("/api/jobs", query_string={"q": q}).json["data"]]
    assert found("m31") == [a["id"]]
    assert found("broken PIXEL") == [b["id"]]
    assert found("50%") == [a["id"]] and found("_") == []  # wildcards are plain text
    assert alice.get("/api/jobs", query_string={"q": "x" * 201}).status_code == 422
