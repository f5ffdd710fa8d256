"""The queue's named SQL: how the files are read, and every statement is used by the driver."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from api.queue.sql import Q, Queries, UnknownQuery

ROOT = Path(__file__).resolve().parents[2]


def test_statements_splice_their_fragments_and_leave_their_descriptions_in_the_file():
    queries = Queries({"a.sql": """-- a file's own notes
-- fragment: live
-- the test, written once
j.status = 'IN_PROGRESS' AND j.lease_token = mine.token

-- name: beat
-- extends leases
UPDATE jobs j SET heartbeat_at = now() FROM mine WHERE {{live}}
"""})
    assert queries.source("beat") == (
        "UPDATE jobs j SET heartbeat_at = now() FROM mine WHERE j.status = 'IN_PROGRESS' AND j.lease_token = mine.token")
    assert queries.names() == ["beat"]
    with pytest.raises(UnknownQuery):
        queries.missing  # noqa: B018


@pytest.mark.parametrize(("files", "why"), [
    ({"a.sql": "SELECT 1\n-- name: one\nSELECT 1"}, "SQL before"),
    ({"a.sql": "-- name: one\nSELECT 1\n-- name: one\nSELECT 2"}, "defined twice"),
    ({"a.sql": "-- name: one\nSELECT 1", "b.sql": "-- name: one\nSELECT 2"}, "also defined"),
    ({"a.sql": "-- name: one\nSELECT {{nowhere}}"}, "unknown fragment"),
])
def test_a_malformed_file_is_refused_at_load(files, why):
    with pytest.raises(ValueError, match=why):
        Queries(files)


def test_every_statement_is_run_by_the_driver_and_no_other_module_writes_queue_sql():
    code = {path: path.read_text() for path in (ROOT / "api").rglob("*.py")}
    used = {name for text in code.values() for name in re.findall(r"\bQ\.(?:source\(\")?([a-z_]+)", text)}
    assert sorted(set(Q.names()) - used) == []
    assert sorted(used - set(Q.names()) - {"source", "names"}) == []
    users = {path.relative_to(ROOT).as_posix() for path, text in code.items() if re.search(r"\bQ\.[a-z_]+", text)}
    assert all(user.startswith("api/queue/") for user in users), users
