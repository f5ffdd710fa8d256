"""Bad input gets a 4xx in the error envelope naming the field, and writes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import count


def _error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.json
    body = response.json
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


@pytest.fixture(autouse=True)
def nothing_written(engine):
    yield
    assert count(engine, "jobs") == 0
    assert count(engine, "job_requests") == 0


def test_malformed_json(alice):
    response = alice.client.post("/api/jobs", data='{"type": "sleep",', content_type="application/json",
                                 headers={"Authorization": f"Bearer {alice.token}"})
    error = _error(response, 400, "BAD_REQUEST")
    assert "Invalid JSON" in error["message"]


def test_body_that_is_not_an_object(alice):
    _error(alice.post("/api/jobs", [1, 2]), 422, "VALIDATION_ERROR")


def test_unknown_job_type(alice):
    error = _error(alice.post("/api/jobs", {"type": "teleport", "input_payload": {}}), 422, "VALIDATION_ERROR")
    assert "type" in error["details"]["fields"]
    assert "unknown job type 'teleport'" in error["message"]


def test_missing_type(alice):
    error = _error(alice.post("/api/jobs", {"input_payload": {}}), 422, "VALIDATION_ERROR")
    assert error["details"]["fields"] == {"type": ["Missing data for required field."]}


@pytest.mark.parametrize(("payload", "field"), [
    ({"seconds": -1}, "input_payload.seconds"),
    ({"seconds": "soon"}, "input_payload.seconds"),
    ({"seconds": 1e9}, "input_payload.seconds"),
    ({"fail_attempts": 1.5}, "input_payload.fail_attempts"),
    ({"surprise": True}, "input_payload.surprise"),
])
def test_payload_failing_its_schema(alice, payload, field):
    error = _error(alice.post("/api/jobs", {"type": "sleep", "input_payload": payload}), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"], error
    assert field in error["message"]


@pytest.mark.parametrize(("extra", "field"), [
    ({"priority": 10}, "priority"),
    ({"priority": "high"}, "priority"),
    ({"run_after": "tomorrow"}, "run_after"),
    ({"run_after": "2030-01-01T00:00:00"}, "run_after"),  # no time zone
    ({"callback_url": "ftp://example.org"}, "callback_url"),
    ({"unknown": 1}, "unknown"),
])
def test_bad_optional_fields(alice, extra, field):
    body = {"type": "noop", "input_payload": {}, **extra}
    error = _error(alice.post("/api/jobs", body), 422, "VALIDATION_ERROR")
    assert field in error["details"]["fields"]


def test_oversized_body(alice, settings):
    big = {"type": "noop", "input_payload": {"tag": "x" * (settings.max_body_bytes + 10)}}
    _error(alice.post("/api/jobs", big), 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize(("query", "field"), [
    ("page=zero", "page"),
    ("page=0", "page"),
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("status=DONE", "status"),
    ("sort=password", "sort"),
    ("type=teleport", "type"),
])
def test_wrong_query_parameters(alice, query, field):
    error = _error(alice.get(f"/api/jobs?{query}"), 422, "VALIDATION_ERROR")
    assert error["details"]["location"] == "query"
    assert field in error["details"]["fields"]


def test_unknown_job_id(alice):
    _error(alice.get("/api/jobs/424242"), 404, "NOT_FOUND")
    _error(alice.post("/api/jobs/424242/cancel"), 404, "NOT_FOUND")
    _error(alice.get("/api/jobs/not-a-number"), 404, "NOT_FOUND")


def test_unknown_route_and_method(alice):
    _error(alice.get("/api/nowhere"), 404, "NOT_FOUND")
    response = alice.client.delete("/api/jobs", headers={"Authorization": f"Bearer {alice.token}"})
    _error(response, 405, "METHOD_NOT_ALLOWED")


def test_bad_worker_bodies(worker_account):
    error = _error(worker_account.post("/api/workers", {"name": "w", "job_types": ["teleport"]}), 422,
                   "VALIDATION_ERROR")
    assert "job_types.0" in error["details"]["fields"]
    response = worker_account.post("/api/workers", {"name": "w", "job_types": ["noop"]})
    wid = response.json["data"]["id"]
    error = _error(worker_account.post(f"/api/workers/{wid}/claim", {"max_jobs": 0}), 422, "VALIDATION_ERROR")
    assert "max_jobs" in error["details"]["fields"]
    error = _error(worker_account.post(f"/api/workers/{wid}/results", {"results": [
        {"job_id": 1, "attempt": 1, "token": str(uuid.uuid4()), "status": "FAILED"}]}), 422, "VALIDATION_ERROR")
    assert "results.0.error" in error["details"]["fields"]
    _error(worker_account.post("/api/workers/999/claim", {"max_jobs": 1}), 404, "NOT_FOUND")
