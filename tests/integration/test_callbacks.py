"""Callbacks: jobs that end are POSTed to their submitters' receivers by the dispatcher.

A real receiver (http.server on 127.0.0.1, allow-listed in the settings), jobs run to their end
by the test acting as the worker, and the dispatcher driven through ``run_once`` (never by
waiting on its loop).
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from api.callbacks import service
from api.config import Settings
from api.context import EXTENSION_KEY
from api.errors import ValidationFailed
from api.maintenance.callbacks import (
    CallbackDispatcher,
    CallbackDispatcherConfig,
    backoff_s,
)
from storage.netguard import AddressGuard
from tests.integration.conftest import As, claim, register, report, submit

TOKEN = "s3cret-token"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """Answers by the first path segment: /ok 200, /down 503, /flaky the next of ``flaky``
    (then 200), /slow 200 once ``release`` is set."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    flaky: list[int] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def answer(self, path: str) -> int:
        segment = path.strip("/").split("/", 1)[0]
        if segment == "slow":
            self.release.wait(10)
        with self.lock:
            if segment == "down":
                return 503
            if segment == "flaky" and self.flaky:
                return self.flaky.pop(0)
        return 200

    def paths(self) -> list[str]:
        with self.lock:
            return sorted(r.path for r in self.received)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        receiver = self.server.receiver
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"null")
        with receiver.lock:
            receiver.received.append(Received(self.path, dict(self.headers.items()), body))
        status = receiver.answer(self.path)
        try:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:
            pass  # the dispatcher gave up waiting (the slow receiver) and closed the connection

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    receiver: Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    httpd = _Server(("127.0.0.1", 0), _Handler)
    httpd.receiver = Receiver(url=f"http://127.0.0.1:{httpd.server_port}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd.receiver
    httpd.receiver.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The receiver's address is allow-listed, as an operator would for an internal receiver."""
    return settings.with_(allowed_networks=("127.0.0.1/32",))


@pytest.fixture
def dispatcher_factory(app: Flask, engine: Engine) -> Iterator[Callable[..., CallbackDispatcher]]:
    """Dispatchers on the app's settings and guard (config fields may be overridden); closed after."""
    made: list[CallbackDispatcher] = []
    context = app.extensions[EXTENSION_KEY]

    def make(guard: AddressGuard | None = None, **overrides: Any) -> CallbackDispatcher:
        base = CallbackDispatcherConfig.from_settings(context.settings)
        config = CallbackDispatcherConfig(**{**base.__dict__, **overrides})
        dispatcher = CallbackDispatcher(engine, config, guard or context.guard)
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


@pytest.fixture
def dispatcher(dispatcher_factory: Callable[..., CallbackDispatcher]) -> CallbackDispatcher:
    return dispatcher_factory()


def run_to_end(worker: As, jobs: list[dict[str, Any]], status: str = "SUCCEEDED", **extra: Any) -> None:
    """Act as the worker: claim every pending job and report ``status`` for those in ``jobs``."""
    wid = register(worker, ("noop", "sleep"))
    wanted = {job["id"] for job in jobs}
    claimed = [c for c in claim(worker, wid, max_jobs=100) if c["job_id"] in wanted]
    assert {c["job_id"] for c in claimed} == wanted
    for c in claimed:
        response = report(worker, wid, c, status, **extra)
        assert response.status_code == 200, response.json


def deliveries(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT * FROM callback_deliveries ORDER BY id")).mappings().all()
    return [dict(r) for r in rows]


def make_due(engine: Engine) -> None:
    """What waiting out the backoff would do."""
    with engine.begin() as conn:
        conn.execute(text("UPDATE callback_deliveries SET next_attempt_at = now()"))


def test_a_finished_job_is_posted_once_with_its_token(alice, worker_account, engine, receiver, dispatcher):
    with_token = submit(alice, "noop", {"tag": "a"}, callback_url=f"{receiver.url}/ok/hooks/", callback_token=TOKEN)
    no_token = submit(alice, "noop", {"tag": "b"}, callback_url=f"{receiver.url}/ok/plain")
    assert deliveries(engine) == []  # nothing to say until the jobs end
    run_to_end(worker_account, [with_token, no_token])

    summary = dispatcher.run_once()

    assert (summary.sent, summary.failed, summary.gave_up) == (2, 0, 0)
    by_path = {r.path: r for r in receiver.received}
    assert sorted(by_path) == sorted([f"/ok/hooks/{with_token['id']}", f"/ok/plain/{no_token['id']}"])
    posted = by_path[f"/ok/hooks/{with_token['id']}"]
    assert posted.headers["X-Callback-Token"] == TOKEN
    assert posted.headers["User-Agent"] == "skyfleet-callbacks"
    assert posted.headers["Content-Type"] == "application/json"
    assert posted.body["job_id"] == with_token["id"]
    assert posted.body["status"] == "SUCCEEDED"
    assert posted.body["error"] is None
    assert posted.body["result_url"] == f"/api/jobs/{with_token['id']}/result"
    assert posted.body["finished_at"]
    assert "X-Callback-Token" not in by_path[f"/ok/plain/{no_token['id']}"].headers
    assert all(d["delivered_at"] and d["attempts"] == 1 and d["last_status"] == 200 for d in deliveries(engine))

    make_due(engine)  # even if due again, a delivered row is never sent twice
    assert dispatcher.run_once().sent == 0
    assert len(receiver.received) == 2


def test_a_500_is_retried_later_and_then_delivered(alice, worker_account, engine, receiver, dispatcher):
    receiver.flaky = [500]
    job = submit(alice, "noop", callback_url=f"{receiver.url}/flaky", callback_token=TOKEN)
    run_to_end(worker_account, [job])

    first = dispatcher.run_once()
    assert (first.sent, first.failed) == (0, 1)
    (row,) = deliveries(engine)
    assert row["attempts"] == 1 and row["last_status"] == 500 and "HTTP 500" in row["last_error"]
    assert row["delivered_at"] is None and row["gave_up_at"] is None
    with engine.connect() as conn:
        wait_s = conn.execute(text("SELECT extract(epoch FROM next_attempt_at - now()) FROM callback_deliveries"))
        assert wait_s.scalar_one() > 1  # backed off, not retried at once
    assert dispatcher.run_once().sent == 0

    make_due(engine)
    second = dispatcher.run_once()
    assert (second.sent, second.failed) == (1, 0)
    (row,) = deliveries(engine)
    assert row["attempts"] == 2 and row["last_status"] == 200 and row["delivered_at"] is not None
    assert receiver.paths() == [f"/flaky/{job['id']}"] * 2


def test_it_gives_up_after_max_attempts(alice, worker_account, engine, receiver, dispatcher_factory):
    dispatcher = dispatcher_factory(max_attempts=2)
    job = submit(alice, "noop", callback_url=f"{receiver.url}/down")
    run_to_end(worker_account, [job])
    assert dispatcher.run_once().failed == 1
    make_due(engine)
    assert dispatcher.run_once().gave_up == 1
    make_due(engine)
    assert dispatcher.run_once().gave_up == 0
    (row,) = deliveries(engine)
    assert row["attempts"] == 2 and row["gave_up_at"] is not None and row["last_status"] == 503
    assert len(receiver.received) == 2


def test_a_slow_receiver_does_not_hold_up_other_deliveries(alice, worker_account, engine, receiver,
                                                           dispatcher_factory):
    # The pass waits 1 s at most; the slow receiver answers only when released, and the
    # POST gives up after 2.5 s.
    dispatcher = dispatcher_factory(timeout_s=2.5, pass_wait_s=1.0)
    slow = submit(alice, "noop", {"tag": "slow"}, callback_url=f"{receiver.url}/slow")
    fast = submit(alice, "noop", {"tag": "fast"}, callback_url=f"{receiver.url}/ok")
    run_to_end(worker_account, [slow, fast])

    summary = dispatcher.run_once()

    assert (summary.sent, summary.failed) == (1, 0)
    rows = {d["job_id"]: d for d in deliveries(engine)}
    assert rows[fast["id"]]["delivered_at"] is not None
    # The slow POST is still in flight: claimed and hidden, so the next pass does not send it again.
    assert rows[slow["id"]]["attempts"] == 1 and rows[slow["id"]]["last_error"] is None
    assert dispatcher.run_once().sent == 0
    dispatcher.close()  # waits for the slow POST to time out, and records it
    receiver.release.set()
    slow_row = next(d for d in deliveries(engine) if d["job_id"] == slow["id"])
    assert slow_row["delivered_at"] is None and slow_row["attempts"] == 1
    assert "Timeout" in slow_row["last_error"]
    assert sorted(r.path for r in receiver.received) == sorted([f"/ok/{fast['id']}", f"/slow/{slow['id']}"])


def test_forbidden_addresses_are_never_contacted(alice, worker_account, engine, receiver, dispatcher_factory):
    strict = dispatcher_factory(guard=AddressGuard())  # 127.0.0.1 not allow-listed
    loopback = submit(alice, "noop", {"tag": "loopback"}, callback_url=f"{receiver.url}/ok")
    metadata = submit(alice, "noop", {"tag": "metadata"}, callback_url=f"{receiver.url}/ok")
    run_to_end(worker_account, [loopback, metadata])
    with engine.begin() as conn:
        conn.execute(text("UPDATE callback_deliveries SET url = 'http://169.254.169.254/latest' WHERE job_id = :id"),
                     {"id": metadata["id"]})

    summary = strict.run_once()

    assert (summary.sent, summary.failed, summary.gave_up) == (0, 0, 2)
    assert receiver.received == []
    rows = {d["job_id"]: d for d in deliveries(engine)}
    assert all(d["gave_up_at"] is not None and d["last_status"] is None for d in rows.values())
    assert "127.0.0.1 is a loopback address" in rows[loopback["id"]]["last_error"]
    assert "metadata" in rows[metadata["id"]]["last_error"]


def test_failed_and_cancelled_jobs_are_announced_too(alice, worker_account, engine, receiver, dispatcher):
    failed = submit(alice, "noop", {"tag": "f"}, callback_url=f"{receiver.url}/ok")
    run_to_end(worker_account, [failed], "FAILED",
               error={"code": "BAD_INPUT", "message": "no such HDU", "permanent": True})
    cancelled = submit(alice, "noop", {"tag": "c"}, callback_url=f"{receiver.url}/ok")
    assert alice.post(f"/api/jobs/{cancelled['id']}/cancel").status_code == 200

    assert dispatcher.run_once().sent == 2
    bodies = {r.body["job_id"]: r.body for r in receiver.received}
    assert bodies[failed["id"]]["status"] == "FAILED"
    assert bodies[failed["id"]]["error"] == {"code": "BAD_INPUT", "message": "no such HDU"}
    assert bodies[cancelled["id"]]["status"] == "CANCELLED"


def test_every_submission_gets_its_own_callback(alice, worker_account, engine, receiver, dispatcher):
    first = submit(alice, "noop", {"tag": "same"}, callback_url=f"{receiver.url}/ok/first")
    joined = submit(alice, "noop", {"tag": "same"}, callback_url=f"{receiver.url}/ok/joined")
    assert joined["origin"] == "joined" and joined["id"] == first["id"]
    run_to_end(worker_account, [first])
    cached = submit(alice, "noop", {"tag": "same"}, callback_url=f"{receiver.url}/ok/cached", callback_token=TOKEN)
    assert cached["origin"] == "cached" and cached["id"] == first["id"]

    assert dispatcher.run_once().sent == 3
    job_id = first["id"]
    assert receiver.paths() == sorted(f"/ok/{name}/{job_id}" for name in ("cached", "first", "joined"))
    cached_post = next(r for r in receiver.received if r.path.startswith("/ok/cached"))
    assert cached_post.body["status"] == "SUCCEEDED" and cached_post.headers["X-Callback-Token"] == TOKEN


def test_a_claimed_row_is_hidden_until_its_visibility_timeout(alice, worker_account, engine, receiver):
    job = submit(alice, "noop", callback_url=f"{receiver.url}/ok")
    run_to_end(worker_account, [job])
    with engine.begin() as first:
        (claimed,) = service.claim_due(first, 10, visibility_s=60)
        assert claimed.job_id == job["id"] and claimed.attempt == 1
        with engine.begin() as second:  # a second dispatcher skips the locked row
            assert service.claim_due(second, 10, visibility_s=60) == []
    with engine.begin() as third:  # and after the commit the row is hidden, not due
        assert service.claim_due(third, 10, visibility_s=60) == []
    make_due(engine)  # the visibility timeout passed: a crashed dispatcher's row comes back
    with engine.begin() as fourth:
        (again,) = service.claim_due(fourth, 10, visibility_s=60)
        assert again.id == claimed.id and again.attempt == 2


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap():
    assert backoff_s(1, 10, 3600, rand=lambda: 1.0) == 10
    assert backoff_s(3, 10, 3600, rand=lambda: 1.0) == 40
    assert backoff_s(3, 10, 3600, rand=lambda: 0.0) == 20
    assert backoff_s(50, 10, 3600, rand=lambda: 1.0) == 3600


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/cb", "http://localhost/cb", "http://169.254.169.254/",
                                 "http://[::1]/cb", "ftp://example.org/cb"])
def test_check_callback_url_refuses_with_a_422_naming_the_field(url):
    with pytest.raises(ValidationFailed) as caught:
        service.check_callback_url(url, AddressGuard(), field="jobs.0.callback_url")
    assert caught.value.status == 422
    assert list(caught.value.details["fields"]) == ["jobs.0.callback_url"]
    assert "jobs.0.callback_url" in caught.value.message


def test_check_callback_url_accepts_public_and_allowed_urls():
    service.check_callback_url(None, AddressGuard())
    service.check_callback_url("https://hooks.example.org/cb", AddressGuard())
    service.check_callback_url("http://127.0.0.1:9/cb", AddressGuard(["127.0.0.1/32"]))
