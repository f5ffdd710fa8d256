"""``GET /api/jobs/{id}/events``: Server-Sent Events woken by NOTIFY, capped, always released."""

from __future__ import annotations

import datetime as dt
import json
import queue
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from flask import Flask
from werkzeug.serving import make_server

from api.auth.models import Role
from api.context import EXTENSION_KEY
from api.events.routes import stream_slots
from api.queue.notify import JobEventHub
from tests.helpers import wait_for
from tests.integration.conftest import As, claim, make_account, register, report, submit

END = ("end", None)


def parse_block(block: bytes) -> tuple[str, Any]:
    """One SSE message → (event, fields); a comment → ("comment", text)."""
    lines = block.decode().split("\n")
    if all(line.startswith(":") for line in lines):
        return "comment", lines[0][1:].strip()
    fields = dict(line.split(": ", 1) for line in lines)
    return fields["event"], {"id": int(fields["id"]), "retry": int(fields["retry"]),
                             "data": json.loads(fields["data"])}


class EventReader:
    """Reads a streamed response in a thread, one message at a time, as a server would send it:
    the thread that iterates the body also closes it, at its end or after ``hang_up_after``
    messages (the client went away)."""

    def __init__(self, response: Any, hang_up_after: int | None = None) -> None:
        self.response = response
        self.hang_up_after = hang_up_after
        self.messages: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        buffer, received = b"", 0
        try:
            for chunk in self.response.response:
                buffer += chunk
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self.messages.put(parse_block(block))
                    received += 1
                if received == self.hang_up_after:
                    break
        finally:
            self.response.close()
            self.messages.put(END)

    def next(self, timeout: float = 10.0, comments: bool = False) -> tuple[str, Any]:
        """The next event (skipping comments unless asked for)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            if comments or message[0] != "comment":
                return message

    def close(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive()


def open_stream(user: As, job_id: int, hang_up_after: int | None = None) -> EventReader:
    response = user.get(f"/api/jobs/{job_id}/events", buffered=False)
    assert response.status_code == 200, response.get_data()
    assert response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Accel-Buffering"] == "no"
    return EventReader(response, hang_up_after)


def heartbeat(worker: As, worker_id: int, job: dict[str, Any], **progress: Any) -> None:
    body = {"jobs": [{"job_id": job["job_id"], "attempt": job["attempt"], "token": job["token"], "progress": progress}]}
    response = worker.post(f"/api/workers/{worker_id}/heartbeat", body)
    assert response.status_code == 200, response.json


def streams_released(app: Flask) -> bool:
    return stream_slots_open(app) == 0 and app.extensions[EXTENSION_KEY].listener.events.followed() == 0


def stream_slots_open(app: Flask) -> int:
    with app.app_context():
        return stream_slots().open


@pytest.fixture
def context(app: Flask) -> Any:
    context = app.extensions[EXTENSION_KEY]
    # Only a NOTIFY can deliver an event within a test's patience; the fallback read is 30 s away.
    context.settings = context.settings.with_(event_keepalive_s=30.0)
    return context


@pytest.fixture
def listening(context: Any) -> Any:
    """The LISTEN thread, connected before the test starts (so its first wake-up is past)."""
    context.listener.ensure_started()
    assert context.listener.connected.wait(5)
    return context


def test_snapshot_then_status_progress_and_completed_in_order(app, listening, alice, worker_account):
    job = submit(alice, "sleep", {"seconds": 1, "tag": "sse"})
    stream = open_stream(alice, job["id"])
    event, snapshot = stream.next()
    assert event == "snapshot"
    assert snapshot["data"]["id"] == job["id"] and snapshot["data"]["status"] == "PENDING"
    assert snapshot["retry"] > 0
    # The stream waits on an Event, not on a pooled connection.
    wait_for(lambda: listening.engine.pool.checkedout() == 0, timeout=5, what="no connection held while waiting")

    started = time.monotonic()
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    event, status = stream.next()
    assert (event, status["data"]["status"], status["data"]["attempt"]) == ("status", "IN_PROGRESS", 1)

    heartbeat(worker_account, wid, claimed, percent=40.0, stage="sleeping", message="half way")
    assert stream.next() == ("progress", {"id": 3, "retry": snapshot["retry"], "data": {
        "job_id": job["id"], "percent": 40.0, "stage": "sleeping", "message": "half way"}})
    heartbeat(worker_account, wid, claimed, percent=80.0, stage="sleeping")
    event, progress = stream.next()
    assert (event, progress["data"]["percent"], progress["data"]["message"]) == ("progress", 80.0, None)

    assert report(worker_account, wid, claimed, result_payload={"slept_s": 1}).status_code == 200
    event, final = stream.next()
    assert (event, final["data"]["status"]) == ("completed", "SUCCEEDED")
    assert final["id"] == 5
    assert stream.next() == END
    # Each event came on its NOTIFY, not on the 30 s fallback read.
    assert time.monotonic() - started < 10
    stream.close()
    assert streams_released(app)


@pytest.mark.parametrize(("outcome", "extra", "event", "status"), [
    ("SUCCEEDED", {"result_payload": {"ok": True}}, "completed", "SUCCEEDED"),
    ("FAILED", {"error": {"message": "bad input", "permanent": True}}, "failed", "FAILED"),
])
def test_a_finished_job_gives_its_snapshot_and_final_event_then_ends(app, listening, alice, worker_account,
                                                                     outcome, extra, event, status):
    job = submit(alice, "sleep", {"tag": outcome})
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    assert report(worker_account, wid, claimed, outcome, **extra).status_code == 200
    stream = open_stream(alice, job["id"])
    first, second = stream.next(), stream.next()
    assert (first[0], first[1]["data"]["status"]) == ("snapshot", status)
    assert (second[0], second[1]["data"]["status"]) == (event, status)
    assert [first[1]["id"], second[1]["id"]] == [1, 2]
    assert stream.next() == END
    stream.close()
    assert streams_released(app)


def test_cancelling_a_pending_job_ends_the_stream_with_cancelled(app, listening, alice):
    job = submit(alice, "sleep", {"tag": "cancel-me"})
    stream = open_stream(alice, job["id"])
    assert stream.next()[0] == "snapshot"
    assert alice.post(f"/api/jobs/{job['id']}/cancel").status_code == 200
    event, final = stream.next()
    assert (event, final["data"]["status"]) == ("cancelled", "CANCELLED")
    assert stream.next() == END
    stream.close()


def test_a_running_job_cancelled_by_its_worker_ends_with_cancelled(app, listening, alice, worker_account):
    job = submit(alice, "sleep", {"tag": "cancel-running"})
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    stream = open_stream(alice, job["id"])
    assert stream.next()[1]["data"]["status"] == "IN_PROGRESS"
    assert alice.post(f"/api/jobs/{job['id']}/cancel").json["data"]["cancel_requested"] is True
    assert report(worker_account, wid, claimed, "CANCELLED").status_code == 200
    event, final = stream.next()
    assert (event, final["data"]["status"]) == ("cancelled", "CANCELLED")
    assert stream.next() == END
    stream.close()


def test_a_retry_shows_as_status_events(app, listening, alice, worker_account):
    job = submit(alice, "sleep", {"tag": "retry"})
    wid = register(worker_account)
    (claimed,) = claim(worker_account, wid)
    stream = open_stream(alice, job["id"], hang_up_after=2)  # then the client goes away
    assert stream.next()[0] == "snapshot"
    assert report(worker_account, wid, claimed, "FAILED", error={"message": "flaky"}).status_code == 200
    event, status = stream.next()
    assert (event, status["data"]["status"], status["data"]["error"]["message"]) == ("status", "PENDING", "flaky")
    assert stream.next() == END
    stream.close()
    assert streams_released(app)


def test_unknown_and_other_users_jobs_are_404(app, context, alice, bob):
    job = submit(alice, "sleep", {"tag": "private"})
    for who, job_id in ((bob, job["id"]), (alice, 999_999)):
        response = who.get(f"/api/jobs/{job_id}/events")
        assert response.status_code == 404
        assert response.json["error"]["code"] == "NOT_FOUND"
    assert streams_released(app)


def test_a_token_of_a_user_or_admin_is_required(app, context, alice, admin, worker_account):
    job = submit(alice, "sleep", {"tag": "auth"})
    response = app.test_client().get(f"/api/jobs/{job['id']}/events")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "UNAUTHORIZED"
    assert worker_account.get(f"/api/jobs/{job['id']}/events").status_code == 403
    # Admins see every job.
    response = admin.get(f"/api/jobs/{job['id']}/events", buffered=False)
    assert response.status_code == 200
    response.close()
    assert streams_released(app)


def test_streams_beyond_the_cap_get_503_with_retry_after(app, context, alice, admin):
    context.settings = context.settings.with_(max_event_streams=1)
    job = submit(alice, "sleep", {"tag": "cap"})
    first = alice.get(f"/api/jobs/{job['id']}/events", buffered=False)
    assert first.status_code == 200
    refused = admin.get(f"/api/jobs/{job['id']}/events")
    assert refused.status_code == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert refused.json["error"]["code"] == "SERVICE_UNAVAILABLE"
    assert stream_slots_open(app) == 1
    # Closing the response (what the server does when the client goes) frees the slot at once.
    first.close()
    assert streams_released(app)
    second = admin.get(f"/api/jobs/{job['id']}/events", buffered=False)
    assert second.status_code == 200
    second.close()


def test_keepalives_while_idle_and_the_stream_ends_after_its_time_limit(app, context, alice):
    context.settings = context.settings.with_(event_keepalive_s=0.2, event_stream_max_s=1.0)
    job = submit(alice, "sleep", {"tag": "idle"})
    started = time.monotonic()
    stream = open_stream(alice, job["id"])
    messages = []
    while (message := stream.next(comments=True)) != END:
        messages.append(message)
    assert messages[0][0] == "snapshot"
    assert messages.count(("comment", "keepalive")) >= 3
    assert messages[-1][0] == "comment" and "reconnect" in messages[-1][1]
    assert 0.9 <= time.monotonic() - started < 5
    stream.close()
    assert streams_released(app)


def test_without_notify_the_fallback_read_still_delivers(app, context, alice, worker_account):
    context.listener.stop()  # no LISTEN thread: only the read at each keepalive interval
    context.settings = context.settings.with_(event_keepalive_s=0.3)
    job = submit(alice, "sleep", {"tag": "fallback"})
    stream = open_stream(alice, job["id"], hang_up_after=2)
    assert stream.next()[0] == "snapshot"
    wid = register(worker_account)
    claim(worker_account, wid)
    event, status = stream.next(timeout=5)
    assert (event, status["data"]["status"]) == ("status", "IN_PROGRESS")
    assert stream.next() == END
    stream.close()
    assert streams_released(app)


def test_the_hub_wakes_only_followers_of_the_notified_jobs():
    hub = JobEventHub()
    assert hub.publish("1,2,3") == 0  # nobody follows: nothing parsed, nothing woken
    seven, eight, other_seven = hub.subscribe(7), hub.subscribe(8), hub.subscribe(7)
    assert hub.publish("1,7,x,70") == 2
    assert seven.wait(0) and other_seven.wait(0) and not eight.wait(0)
    assert not seven.wait(0), "waiting resets the flag"
    hub.wake_all()
    assert seven.wait(0) and eight.wait(0)
    hub.unsubscribe(seven)
    hub.unsubscribe(seven)
    assert hub.followed() == 2
    assert hub.publish("7") == 1


def test_openapi_documents_the_stream_and_its_errors(app):
    spec = app.test_client().get("/api/openapi.json").json
    operation = spec["paths"]["/api/jobs/{job_id}/events"]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"401", "404", "503"} <= set(operation["responses"])
    assert "Retry-After" in operation["responses"]["503"]["headers"]
    assert operation["security"] == [{"bearerAuth": []}]


@pytest.fixture
def served(app: Flask) -> Iterator[str]:
    """The app behind a real threaded HTTP server: each client connection gets a thread of its own."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


class HttpStream:
    """One stream over HTTP. Its line iterator is kept for the stream's life: dropping a
    half-read one makes urllib3 close the connection, which would end the stream early."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.status_code = response.status_code
        self._lines = response.iter_lines(decode_unicode=True)

    def next_event(self) -> str:
        for line in self._lines:
            if line.startswith("event: "):
                return str(line.removeprefix("event: "))
        raise AssertionError("the stream ended without an event")

    def close(self) -> None:
        self.response.close()


def test_one_account_holds_at_most_its_share_of_a_processes_streams(app, context, served, alice):
    """Real concurrent clients: six streams of one user at once, over HTTP, on a delayed job."""
    context.settings = context.settings.with_(max_event_streams=10, max_event_streams_per_user=2,
                                              event_keepalive_s=0.2)
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    job = submit(alice, "sleep", {"tag": "delayed"}, run_after=later)
    url = f"{served}/api/jobs/{job['id']}/events"
    start = threading.Barrier(6)

    def open_over_http(token: str, together: bool = False) -> HttpStream:
        if together:
            start.wait(10)
        return HttpStream(requests.get(url, headers={"Authorization": f"Bearer {token}"}, stream=True,
                                       timeout=(5, 30)))

    with ThreadPoolExecutor(6) as pool:
        streams = list(pool.map(lambda _: open_over_http(alice.token, together=True), range(6)))
    opened = [s for s in streams if s.status_code == 200]
    refused = [s for s in streams if s.status_code != 200]
    try:
        assert (len(opened), [s.status_code for s in refused]) == (2, [429] * 4)
        for stream in refused:
            error = stream.response.json()["error"]
            assert error["code"] == "LIMIT_EXCEEDED"
            assert error["details"]["limit"] == "max_event_streams_per_user" and error["details"]["max"] == 2
            assert int(stream.response.headers["Retry-After"]) > 0
        assert [s.next_event() for s in opened] == ["snapshot", "snapshot"]

        # Everyone else still finds a slot: the process cap (10) is far from reached.
        admin_token = make_account(app, "root@example.org", [Role.ADMIN]).token
        theirs = open_over_http(admin_token)
        opened.append(theirs)
        assert theirs.status_code == 200 and theirs.next_event() == "snapshot"
        with app.app_context():
            slots = stream_slots()
        assert (slots.open, slots.open_for(alice.user_id)) == (3, 2)

        # A stream the client closes gives its slot back (the server learns at the next keepalive).
        opened[0].close()
        wait_for(lambda: slots.open_for(alice.user_id) == 1, timeout=10, what="alice's closed stream released")
        again = open_over_http(alice.token)
        opened.append(again)
        assert again.status_code == 200 and again.next_event() == "snapshot"
    finally:
        for stream in opened + refused:
            stream.close()
    wait_for(lambda: streams_released(app), timeout=10, what="every stream released")
