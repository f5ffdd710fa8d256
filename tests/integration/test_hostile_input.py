"""Hostile input: a 4xx in the error envelope naming the field, and nothing written.

What PostgreSQL cannot store (NUL characters, unpaired surrogates, integers past bigint,
NaN), what Python cannot read back (timestamps outside 1970..2999), JSON nested without end,
path ids past bigint, bodies over the limit however they are sent. And the other side of it:
whatever a request can write, the API reads back, and an admin can cancel and delete.
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from flask import Flask
from sqlalchemy import Engine

from api.auth import service as accounts
from api.auth.models import Role
from api.config import Settings
from api.context import EXTENSION_KEY
from api.database import libpq_url
from tests.conftest import TABLES
from tests.helpers import count
from tests.integration.conftest import PASSWORD, As, make_account, register, running_app

BIG = 99999999999999999999  # past bigint (2**63 - 1 = 9223372036854775807)
NUL = "a\x00b"
SURROGATE = "\ud800"
TOKEN = str(uuid.uuid4())  # a well-formed attempt token, so only the named field is wrong


def send(who: As, method: str, path: str, body: Any = None, raw: str | None = None) -> Any:
    """Send ``body`` as JSON the way a hostile client may write it (NaN, lone surrogates, big ints),
    or ``raw`` text as the body."""
    text = raw if raw is not None else json.dumps(body)  # allow_nan, \\ud800 and \\u0000 escapes
    headers = {"Authorization": f"Bearer {who.token}"} if who.token else {}
    return who.client.open(path, method=method, data=text, content_type="application/json", headers=headers)


def refused(response: Any, field: str, status: int = 422) -> dict[str, Any]:
    """The response is a ``status`` in the error envelope whose details and message name ``field``."""
    assert response.status_code == status, (response.status_code, response.json)
    body = response.json
    assert body["success"] is False
    error = body["error"]
    assert any(named == field or named.startswith(f"{field}.") for named in error["details"]["fields"]), error
    assert field in error["message"], error
    return dict(error)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# One app and one set of accounts for the whole module, rather than a fresh database per test:
# a refused request writes nothing (each test checks so), and the cases are many.

@pytest.fixture(scope="module")
def settings(database_url: str, jwt_private_key: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(database_url=database_url, jwt_private_key=jwt_private_key, background=False,
                    storage_dir=str(tmp_path_factory.mktemp("storage")),
                    rate_limit_per_minute=0, login_limit_per_account=0, login_limit_per_address=0)


@pytest.fixture(scope="module")
def app(settings: Settings) -> Iterator[Flask]:
    with running_app(settings) as app:
        yield app
    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
        conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")


@pytest.fixture(scope="module")
def engine(app: Flask) -> Engine:
    return app.extensions[EXTENSION_KEY].engine


@pytest.fixture(scope="module")
def admin(app: Flask) -> As:
    return make_account(app, "admin@example.org", [Role.ADMIN])


@pytest.fixture(scope="module")
def alice(app: Flask) -> As:
    return make_account(app, "alice@example.org", [Role.USER])


@pytest.fixture(scope="module")
def worker_account(app: Flask) -> As:
    return make_account(app, accounts.service_email("w1"), [Role.WORKER], is_service=True)


@pytest.fixture(scope="module")
def anonymous(app: Flask) -> As:
    return As(app.test_client(), "", 0)


def rows(engine: Engine) -> tuple[int, int, int]:
    return count(engine, "jobs"), count(engine, "job_requests"), count(engine, "users")


# (account, method, path, body, the field named). "{worker}" is a worker registered for the test.
BODIES: list[tuple[str, str, str, Any, str]] = [
    # timestamps Python cannot read back (they wedged every listing holding the job)
    ("alice", "POST", "/api/jobs", {"type": "noop", "run_after": "0001-01-01T00:00:00+14:00"}, "run_after"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "run_after": "9999-12-31T23:59:59-14:00"}, "run_after"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "run_after": "1969-12-31T23:59:59Z"}, "run_after"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "run_after": "3000-01-01T00:00:00Z"}, "run_after"),
    ("alice", "POST", "/api/jobs/batch",
     {"jobs": [{"type": "noop"}, {"type": "noop", "run_after": "0001-01-01T00:00:00+14:00"}]}, "jobs.1.run_after"),
    # integers: not truncated, not booleans
    ("alice", "POST", "/api/jobs", {"type": "noop", "priority": 2.5}, "priority"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "priority": True}, "priority"),
    # NUL and unpaired surrogates, in values and in keys
    ("alice", "POST", "/api/jobs", {"type": "noop", "input_payload": {"tag": NUL}}, "input_payload.tag"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "input_payload": {"tag": SURROGATE}}, "input_payload.tag"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "input_payload": {NUL: 1}}, "input_payload"),
    ("alice", "POST", "/api/jobs", {"type": NUL}, "type"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "callback_token": NUL}, "callback_token"),
    ("alice", "POST", "/api/jobs", {"type": "noop", "callback_url": "https://example.org/\x00"}, "callback_url"),
    ("alice", "POST", "/api/jobs",
     {"type": "table.page", "input_payload": {"file": {"file_id": 1}, "hdu": NUL}}, "input_payload.hdu"),
    ("alice", "POST", "/api/jobs",
     {"type": "table.page", "input_payload": {"file": {"file_id": 1}, "columns": ["flux", NUL]}},
     "input_payload.columns.1"),
    ("alice", "POST", "/api/jobs/batch", {"jobs": [{"type": "noop", "input_payload": {"tag": NUL}}]},
     "jobs.0.input_payload.tag"),
    # integers past bigint
    ("alice", "POST", "/api/jobs", {"type": "table.page", "input_payload": {"file": {"file_id": BIG}}},
     "input_payload.file.file_id"),
    ("alice", "POST", "/api/jobs", {"type": "table.page", "input_payload": {"file": {"file_id": -BIG}}},
     "input_payload.file.file_id"),
    # NaN and Infinity are not JSON numbers
    ("alice", "POST", "/api/jobs", {"type": "sleep", "input_payload": {"seconds": float("nan")}},
     "input_payload.seconds"),
    ("alice", "POST", "/api/jobs", {"type": "sleep", "input_payload": {"seconds": float("inf")}},
     "input_payload.seconds"),
    # JSON nested deeper than any input needs
    ("alice", "POST", "/api/jobs", {"type": "noop", "input_payload": {"tag": json.loads(nested(100))}},
     "input_payload.tag"),
    # accounts
    ("anonymous", "POST", "/api/auth/register", {"email": f"eve{NUL}@example.org", "password": PASSWORD}, "email"),
    ("anonymous", "POST", "/api/auth/register", {"email": f"eve{SURROGATE}@example.org", "password": PASSWORD},
     "email"),
    ("anonymous", "POST", "/api/auth/register", {"email": "eve@example.org", "password": PASSWORD, "name": NUL},
     "name"),
    ("anonymous", "POST", "/api/auth/register",
     {"email": "eve@example.org", "password": PASSWORD, "name": SURROGATE}, "name"),
    ("anonymous", "POST", "/api/auth/login", {"email": f"alice{NUL}@example.org", "password": PASSWORD}, "email"),
    ("anonymous", "POST", "/api/auth/login", {"email": "alice@example.org", "password": SURROGATE}, "password"),
    ("admin", "POST", "/api/admin/users", {"email": "eve@example.org", "name": NUL}, "name"),
    ("admin", "PATCH", "/api/admin/users/1", {"name": SURROGATE}, "name"),
    ("admin", "PATCH", "/api/admin/users/1", {"max_active_jobs": 2.5}, "max_active_jobs"),
    ("admin", "POST", "/api/admin/cache/invalidate", {"type": NUL}, "type"),
    # workers
    ("worker_account", "POST", "/api/workers", {"name": NUL, "job_types": ["noop"]}, "name"),
    ("worker_account", "POST", "/api/workers", {"name": "w", "job_types": ["noop"], "pid": BIG}, "pid"),
    ("worker_account", "POST", "/api/workers",
     {"name": "w", "job_types": ["noop"], "attributes": {"load": float("nan")}}, "attributes.load"),
    ("worker_account", "POST", "/api/workers",
     {"name": "w", "job_types": ["noop"], "attributes": {"load": float("-inf")}}, "attributes.load"),
    ("worker_account", "POST", "/api/workers/{worker}/claim",
     {"results": [{"job_id": BIG, "attempt": 1, "token": TOKEN, "status": "SUCCEEDED"}]}, "results.0.job_id"),
    ("worker_account", "POST", "/api/workers/{worker}/heartbeat",
     {"jobs": [{"job_id": 1, "attempt": BIG, "token": TOKEN}]}, "jobs.0.attempt"),
    # attempts are cast to int (32 bits) by the queue's SQL
    ("worker_account", "POST", "/api/workers/{worker}/heartbeat",
     {"jobs": [{"job_id": 1, "attempt": 2**31, "token": TOKEN}]}, "jobs.0.attempt"),
    ("worker_account", "POST", "/api/workers/{worker}/results",
     {"results": [{"job_id": 1, "attempt": 2**31, "token": TOKEN, "status": "SUCCEEDED"}]}, "results.0.attempt"),
    ("worker_account", "POST", "/api/workers/{worker}/results",
     {"results": [{"job_id": 1, "attempt": 1, "token": TOKEN, "status": "FAILED", "error": {"message": NUL}}]},
     "results.0.error.message"),
    ("worker_account", "POST", "/api/workers/{worker}/results",
     {"results": [{"job_id": 1, "attempt": 1, "token": TOKEN, "status": "SUCCEEDED",
                   "result_payload": {"x": float("nan")}}]},
     "results.0.result_payload.x"),
]


@pytest.mark.parametrize(("who", "method", "path", "body", "field"), BODIES,
                         ids=[f"{m} {p} {f}" for _, m, p, _, f in BODIES])
def test_hostile_bodies_are_refused_naming_the_field(request, engine, who, method, path, body, field):
    account: As = request.getfixturevalue(who)
    if "{worker}" in path:
        path = path.format(worker=register(account))
    before = rows(engine)
    refused(send(account, method, path, body), field)
    assert rows(engine) == before


@pytest.mark.parametrize(("raw", "field"), [
    ('{"type": "sleep", "input_payload": {"seconds": 1e999}}', "input_payload.seconds"),
    ('{"type": "sleep", "input_payload": {"seconds": -Infinity}}', "input_payload.seconds"),
    ('{"type": "noop", "input_payload": {"tag": "\\udfff"}}', "input_payload.tag"),
    ('{"type": "noop", "input_payload": {"tag": "\\ud800\\ud800"}}', "input_payload.tag"),
    ('{"type": "noop", "input_payload": {"tag": ' + nested(10_000) + "}}", "_body"),
    ('{"type": "noop", "priority": 99999999999999999999999}', "priority"),
])
def test_hostile_json_text_is_refused(alice, engine, raw, field):
    before = rows(engine)
    refused(send(alice, "POST", "/api/jobs", raw=raw), field)
    assert rows(engine) == before


def test_paired_surrogates_are_fine(alice):
    response = send(alice, "POST", "/api/jobs", raw='{"type": "noop", "input_payload": {"tag": "\\ud83d\\ude80"}}')
    assert response.status_code == 201, response.json
    assert response.json["data"]["input_payload"]["tag"] == "\N{ROCKET}"


@pytest.mark.parametrize(("who", "query", "field"), [
    ("alice", "/api/files?q=a%00b", "q"),
    ("admin", "/api/admin/users?q=a%00b", "q"),
    ("admin", f"/api/jobs?user_id={BIG}", "user_id"),
    ("admin", "/api/jobs?user_id=2.5", "user_id"),
    ("admin", f"/api/admin/users?page={BIG}", "page"),
    ("admin", f"/api/admin/workers?page={BIG}", "page"),
    ("admin", f"/api/admin/workers?page={2**63 - 1}", "page"),
    ("alice", "/api/jobs?created_after=0001-01-01T00:00:00%2B14:00", "created_after"),
    ("alice", "/api/jobs?created_before=9999-12-31T23:59:59-14:00", "created_before"),
])
def test_hostile_query_strings_are_refused(request, who, query, field):
    account: As = request.getfixturevalue(who)
    error = refused(account.get(query), field)
    assert error["details"]["location"] == "query"


def test_query_string_integers_still_parse(admin):
    response = admin.get("/api/jobs?page=2&limit=5")
    assert response.status_code == 200, response.json
    assert response.json["meta"]["pagination"]["page"] == 2


@pytest.mark.parametrize("path", [
    f"/api/jobs/{BIG}", f"/api/jobs/{2**63}", f"/api/jobs/{BIG}/result", f"/api/files/{BIG}",
    f"/api/admin/users/{BIG}", "/api/jobs/" + "9" * 5000,
])
def test_path_ids_past_bigint_are_not_found(admin, path):
    response = admin.get(path)
    assert response.status_code == 404, response.json
    assert response.json["error"]["code"] == "NOT_FOUND"


def test_path_ids_past_bigint_in_every_method(admin, worker_account):
    assert admin.post(f"/api/jobs/{BIG}/cancel").status_code == 404
    assert admin.delete(f"/api/jobs/{BIG}").status_code == 404
    assert admin.post(f"/api/admin/users/{BIG}/disable").status_code == 404
    assert worker_account.post(f"/api/workers/{BIG}/claim", {"max_jobs": 1}).status_code == 404


def test_chunked_body_over_the_limit_is_413(alice, engine, settings):
    """Without a Content-Length (Transfer-Encoding: chunked, as gunicorn passes it on) the body limit holds."""
    body = json.dumps({"type": "noop", "input_payload": {"tag": "x" * (settings.max_body_bytes + 10)}}).encode()
    before = rows(engine)
    response = chunked(alice, "/api/jobs", body)
    assert response.status_code == 413, response.json
    assert response.json["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert rows(engine) == before


def test_chunked_body_within_the_limit_is_read(alice):
    response = chunked(alice, "/api/jobs", json.dumps({"type": "noop", "input_payload": {"tag": "chunked"}}).encode())
    assert response.status_code == 201, response.json
    assert response.json["data"]["input_payload"]["tag"] == "chunked"


def chunked(who: As, path: str, body: bytes) -> Any:
    return who.client.post(path, input_stream=io.BytesIO(body), content_type="application/json",
                           headers={"Authorization": f"Bearer {who.token}", "Transfer-Encoding": "chunked"},
                           environ_overrides={"wsgi.input_terminated": True})


def test_method_not_allowed_says_which_are(alice):
    response = alice.delete("/api/jobs")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert {"GET", "POST"} <= {m.strip() for m in response.headers["Allow"].split(",")}


@pytest.mark.parametrize("path", ["/api/health", "/api/jobs", "/api/nowhere", "/api/openapi.json"])
def test_every_response_says_nosniff(alice, path):
    assert alice.get(path).headers["X-Content-Type-Options"] == "nosniff"


def test_nosniff_on_refusals_too(alice):
    assert send(alice, "POST", "/api/jobs", {"type": NUL}).headers["X-Content-Type-Options"] == "nosniff"


# --- what can be written can be read back ----------------------------------------------------------

EDGE_SUBMISSIONS: list[dict[str, Any]] = [  # each its own tag: identical submissions would share a job
    {"type": "noop", "run_after": "1970-01-01T00:00:00Z", "input_payload": {"tag": "the epoch"}},
    {"type": "noop", "run_after": "1970-01-01T14:00:00+14:00", "input_payload": {"tag": "the epoch, at +14:00"}},
    {"type": "noop", "run_after": "2999-12-31T23:59:59Z", "priority": 9, "input_payload": {"tag": "the end"}},
    {"type": "noop", "run_after": "2999-12-31T09:59:59-14:00", "input_payload": {"tag": "the end, at -14:00"}},
    {"type": "noop", "input_payload": {"tag": "\N{ROCKET}\u2028\u2029\ufeff\U0010ffff"}, "priority": 2},
    {"type": "noop", "input_payload": {"tag": "x" * 200}, "callback_token": "t" * 500, "cache": False},
]


def test_every_accepted_job_reads_back_and_an_admin_can_cancel_and_delete_it(alice, admin):
    ids = []
    for body in EDGE_SUBMISSIONS:
        response = alice.post("/api/jobs", body)
        assert response.status_code == 201, (body, response.json)
        ids.append(response.json["data"]["id"])
    for who in (alice, admin):
        listing = who.get("/api/jobs?limit=100")
        assert listing.status_code == 200, listing.json
        assert {job["id"] for job in listing.json["data"]} >= set(ids)
        for job_id in ids:
            assert who.get(f"/api/jobs/{job_id}").status_code == 200
    for job_id in ids:
        cancelled = admin.post(f"/api/jobs/{job_id}/cancel")
        assert cancelled.status_code == 200, cancelled.json
        deleted = admin.delete(f"/api/jobs/{job_id}")
        assert deleted.status_code == 200, deleted.json
        assert admin.get(f"/api/jobs/{job_id}").status_code == 404
