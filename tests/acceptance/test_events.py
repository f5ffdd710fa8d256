"""Progress events under gunicorn, with a real worker process running the job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import requests

from tests.acceptance.conftest import Fleet


def sse_events(response: requests.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, message) for each SSE message as it arrives; comments are skipped."""
    fields: dict[str, str] = {}
    for line in response.iter_lines(chunk_size=None, decode_unicode=True):
        if line.startswith(":"):
            continue
        if line:
            name, _, value = line.partition(": ")
            fields[name] = value
            continue
        if fields:
            yield fields["event"], {"id": int(fields["id"]), "data": json.loads(fields["data"])}
            fields = {}


def test_a_client_sees_snapshot_progress_and_completed_in_order(fleet: Fleet):
    job = fleet.submit("sleep", {"seconds": 2.0, "tag": "sse"})
    with requests.get(f"{fleet.url}/api/jobs/{job['id']}/events", headers=fleet.headers(), stream=True,
                      timeout=(5, 30)) as response:
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.headers["X-Accel-Buffering"] == "no"
        fleet.start_worker()  # after the stream is open: the client sees the job start
        events = list(sse_events(response))  # the server ends the stream after the final event

    names = [name for name, _ in events]
    assert names[0] == "snapshot" and events[0][1]["data"]["status"] == "PENDING"
    assert names[-1] == "completed" and events[-1][1]["data"]["status"] == "SUCCEEDED"
    assert "status" in names and names.index("status") < names.index("progress")
    progress = [message["data"] for name, message in events if name == "progress"]
    assert progress, names
    assert all(p["job_id"] == job["id"] and p["stage"] == "sleeping" for p in progress)
    percents = [p["percent"] for p in progress]
    assert percents == sorted(percents) and 0 <= percents[0] <= percents[-1] <= 100
    assert [message["id"] for _, message in events] == list(range(1, len(events) + 1))
    assert fleet.job(job["id"])["status"] == "SUCCEEDED"
