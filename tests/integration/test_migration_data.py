"""Migration 0006 (lease on the job row) keeps pending, running and finished jobs, both ways."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from api.database import libpq_url
from api.migrate import downgrade, upgrade

# A database at 0005 as a running deployment would have it: one job of each kind.
#   1 PENDING (never ran)            2 IN_PROGRESS (attempt 2 live, attempt 1 expired)
#   3 SUCCEEDED (with a result and a joined submission, a callback each)   4 FAILED
SEED_0005 = [
    """INSERT INTO users (id, email, password_hash, roles) VALUES
       (1, 'a@example.org', 'x', '{USER}'), (2, 'w@example.org', 'x', '{WORKER}')""",
    """INSERT INTO workers (id, name, user_id, job_types, concurrency) VALUES (7, 'w', 2, '{sleep}', 1)""",
    """INSERT INTO jobs (id, type, status, attempt, max_attempts, user_id, input_payload, input_hash, error,
                         started_at, finished_at) VALUES
       (1, 'sleep', 'PENDING', 0, 3, 1, '{"seconds": 1}', 'h1', NULL, NULL, NULL),
       (2, 'sleep', 'IN_PROGRESS', 2, 3, 1, '{"seconds": 2}', 'h2', NULL, now(), NULL),
       (3, 'sleep', 'SUCCEEDED', 1, 3, 1, '{"seconds": 3}', 'h3', NULL, now(), now()),
       (4, 'sleep', 'FAILED', 1, 1, 1, '{"seconds": 4}', 'h4', '{"code": "BOOM", "message": "no"}', now(), now())""",
    """INSERT INTO job_requests (id, job_id, user_id, origin, callback_url, callback_token) VALUES
       (11, 1, 1, 'created', NULL, NULL), (12, 2, 1, 'created', NULL, NULL),
       (13, 3, 1, 'created', 'https://example.org/hook', 'secret'), (14, 4, 1, 'created', NULL, NULL),
       (15, 3, 1, 'joined', 'https://example.org/other', 'other')""",
    """INSERT INTO job_assignments (id, job_id, worker_id, attempt, expires_at, completed_at, outcome) VALUES
       (21, 2, 7, 1, now() - interval '1 minute', now() - interval '1 minute', 'EXPIRED'),
       (22, 2, 7, 2, now() + interval '1 hour', NULL, NULL),
       (23, 3, 7, 1, now(), now(), 'SUCCEEDED'),
       (24, 4, 7, 1, now(), now(), 'FAILED')""",
    """INSERT INTO job_results (job_id, assignment_id, result_payload, storage_uri, files) VALUES
       (3, 23, '{"slept_s": 3}', 'file:///out/jobs/3/attempt-1',
        '[{"key": "jobs/3/attempt-1/a.txt", "size": 1}]')""",
    """INSERT INTO callback_deliveries (job_id, job_request_id, url, job_status) VALUES
       (3, 13, 'https://example.org/hook', 'SUCCEEDED'), (3, 15, 'https://example.org/other', 'SUCCEEDED')""",
]


@pytest.fixture
def at_0005(pg_server: Any) -> Iterator[str]:
    name, url = pg_server.create_database()
    try:
        upgrade(url, "0005")
        with psycopg.connect(libpq_url(url)) as conn:
            for statement in SEED_0005:
                conn.execute(statement)
        yield url
    finally:
        pg_server.drop_database(name)


def rows(url: str, query: str) -> list[dict[str, Any]]:
    with psycopg.connect(libpq_url(url), row_factory=dict_row) as conn:
        return conn.execute(query).fetchall()


def test_upgrade_keeps_every_job_and_moves_leases_results_and_submissions(at_0005):
    upgrade(at_0005)

    jobs = {j["id"]: j for j in rows(at_0005, "SELECT * FROM jobs")}
    assert {i: j["status"] for i, j in jobs.items()} == {
        1: "PENDING", 2: "IN_PROGRESS", 3: "SUCCEEDED", 4: "FAILED"}
    # The live lease moved onto its job, with a token of its own.
    running = jobs[2]
    assert running["lease_token"] is not None and running["worker_id"] == 7
    assert running["lease_expires_at"] is not None
    assert jobs[1]["lease_token"] is None
    # The creating submissions moved onto their jobs (ids kept); the joined one stayed a row.
    assert {i: j["request_id"] for i, j in jobs.items()} == {1: 11, 2: 12, 3: 13, 4: 14}
    assert (jobs[3]["callback_url"], jobs[3]["callback_token"]) == ("https://example.org/hook", "secret")
    assert [(r["id"], r["origin"]) for r in rows(at_0005, "SELECT * FROM job_requests")] == [(15, "joined")]
    deliveries = rows(at_0005, "SELECT url, job_request_id FROM callback_deliveries ORDER BY id")
    assert deliveries == [{"url": "https://example.org/hook", "job_request_id": None},
                          {"url": "https://example.org/other", "job_request_id": 15}]
    # Finished attempts became history rows; the result rides on the one that succeeded.
    attempts = rows(at_0005, "SELECT * FROM job_attempts ORDER BY id")
    assert [(a["job_id"], a["attempt"], a["outcome"]) for a in attempts] == [
        (2, 1, "EXPIRED"), (3, 1, "SUCCEEDED"), (4, 1, "FAILED")]
    succeeded = attempts[1]
    assert succeeded["result_payload"] == {"slept_s": 3} and succeeded["files"][0]["key"] == "jobs/3/attempt-1/a.txt"
    assert attempts[2]["error"] == {"code": "BOOM", "message": "no"}
    tables = {r["tablename"] for r in rows(at_0005, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert not tables & {"job_assignments", "job_results"}

    # A new submission takes its request id from the same sequence: never one already given.
    with psycopg.connect(libpq_url(at_0005)) as conn:
        new_id = conn.execute("""INSERT INTO jobs (id, type, max_attempts, user_id, input_payload, input_hash)
                                 VALUES (5, 'sleep', 3, 1, '{}', 'h5') RETURNING request_id""").fetchone()
    assert new_id is not None and new_id[0] > 15


def test_downgrade_puts_it_back(at_0005):
    upgrade(at_0005)
    downgrade(at_0005, "0005")

    assert [(j["id"], j["status"]) for j in rows(at_0005, "SELECT id, status FROM jobs ORDER BY id")] == [
        (1, "PENDING"), (2, "IN_PROGRESS"), (3, "SUCCEEDED"), (4, "FAILED")]
    requests = rows(at_0005, "SELECT id, job_id, origin, callback_url FROM job_requests ORDER BY id")
    assert [(r["id"], r["job_id"], r["origin"]) for r in requests] == [
        (11, 1, "created"), (12, 2, "created"), (13, 3, "created"), (14, 4, "created"), (15, 3, "joined")]
    assert requests[2]["callback_url"] == "https://example.org/hook"
    assignments = rows(at_0005, """SELECT job_id, attempt, outcome, completed_at IS NULL AS live
                                   FROM job_assignments ORDER BY job_id, attempt""")
    assert [(a["job_id"], a["attempt"], a["outcome"], a["live"]) for a in assignments] == [
        (2, 1, "EXPIRED", False), (2, 2, None, True), (3, 1, "SUCCEEDED", False), (4, 1, "FAILED", False)]
    results = rows(at_0005, "SELECT job_id, result_payload FROM job_results")
    assert results == [{"job_id": 3, "result_payload": {"slept_s": 3}}]
    assert [d["job_request_id"] for d in rows(at_0005, "SELECT job_request_id FROM callback_deliveries ORDER BY id")] \
        == [13, 15]
