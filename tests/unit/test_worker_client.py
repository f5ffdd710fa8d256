"""The worker's client and outbox without a network: what is retried, what is refused, what is dropped."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import requests

from jobtypes import protocol
from worker.client import (
    RETRY_AFTER_CAP_S,
    ApiClient,
    ApiRejected,
    ApiUnavailable,
    Backoff,
    CredentialsRefused,
    parse_retry_after,
)
from worker.config import WorkerSettings
from worker.outbox import REPORT_TRIES, Outbox

SETTINGS = WorkerSettings(api_url="http://api", email="w@example.org", password="pw", job_types=("noop",), name="t")


def _response(status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
              ) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if body is not None else b""
    response.headers.update(headers or {})
    return response


def _error(status: int, code: str = "ERROR", **headers: str) -> requests.Response:
    return _response(status, {"success": False, "error": {"code": code, "message": "no"}}, headers)


def _token(name: str) -> requests.Response:
    return _response(200, {"success": True, "data": {"access_token": name}})


OK = _response(200, {"success": True, "data": {"ok": True}})


class FakeSession:
    """Answers each POST with the next scripted response; records (path, token) of each."""

    def __init__(self, *answers: requests.Response | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str | None]] = []

    def post(self, url: str, json: Any = None, headers: dict[str, str] | None = None,
             timeout: float | None = None) -> requests.Response:
        self.calls.append((url.removeprefix(SETTINGS.api_url), (headers or {}).get("Authorization")))
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


class FakeTime:
    """worker.client's clock: sleeping only moves it on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class FakeStop(threading.Event):
    """The worker's stop event, its waits on the fake clock."""

    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.sleep(timeout or 0.0)
        return self.is_set()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr("worker.client.time", fake)
    return fake


def _client(session: FakeSession, clock: FakeTime) -> ApiClient:
    client = ApiClient(SETTINGS, FakeStop(clock))
    client._local.session = session
    return client


def test_a_login_answered_503_is_retried_like_any_outage(clock: FakeTime):
    session = FakeSession(_error(503), requests.ConnectionError(), _token("t1"), OK)
    assert _client(session, clock).post("/api/workers", {}) == {"ok": True}
    assert [path for path, _ in session.calls] == ["/api/auth/login"] * 3 + ["/api/workers"]
    assert len(clock.slept) == 2


def test_a_token_that_expired_during_an_outage_is_renewed_when_the_api_returns(clock: FakeTime):
    client = _client(FakeSession(_token("old"), OK), clock)
    client.post("/api/workers/1/claim", {})
    client._local.session = session = FakeSession(_error(401), _error(503), _error(503), _token("new"), OK)
    assert client.post("/api/workers/1/claim", {}) == {"ok": True}
    assert session.calls[0] == ("/api/workers/1/claim", "Bearer old")
    assert session.calls[-1] == ("/api/workers/1/claim", "Bearer new")


def test_a_fresh_token_refused_is_an_answer_not_a_loop(clock: FakeTime):
    session = FakeSession(_token("t1"), _error(401), _token("t2"), _error(401, "UNAUTHORIZED"))
    with pytest.raises(ApiRejected) as rejected:
        _client(session, clock).post("/api/workers/1/claim", {})
    assert rejected.value.status == 401
    assert len(session.calls) == 4


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_credentials_are_refused_at_once(status: int, clock: FakeTime):
    with pytest.raises(CredentialsRefused, match="SKYFLEET_WORKER_PASSWORD"):
        _client(FakeSession(_error(status)), clock).post("/api/workers", {})
    assert clock.slept == []


def test_a_500_is_an_answer_for_the_caller(clock: FakeTime):
    session = FakeSession(_token("t"), _error(500, "INTERNAL_ERROR"))
    with pytest.raises(ApiRejected) as rejected:
        _client(session, clock).post("/api/workers/1/results", {"results": []})
    assert rejected.value.status == 500 and clock.slept == []


def _tokens(access: str, refresh: str, expires_in: int = 100) -> requests.Response:
    return _response(200, {"success": True, "data": {"access_token": access, "refresh_token": refresh,
                                                     "expires_in": expires_in}})


def test_the_token_is_renewed_early_with_the_refresh_token_not_the_password(clock: FakeTime):
    """A password login costs the API an argon2 hash; a fleet renewing by login at expiry stalls it."""
    session = FakeSession(_tokens("a1", "r1"), OK, OK, _tokens("a2", "r2"), OK, _tokens("a3", "r3"), OK)
    client = _client(session, clock)
    client.post("/api/workers/1/heartbeat", {})
    clock.now += 50  # before 60 % of the lifetime: nothing to renew
    client.post("/api/workers/1/heartbeat", {})
    clock.now += 31  # past 80 %
    client.post("/api/workers/1/heartbeat", {})
    clock.now += 81
    client.post("/api/workers/1/heartbeat", {})
    assert [path for path, _ in session.calls] == [
        "/api/auth/login", "/api/workers/1/heartbeat", "/api/workers/1/heartbeat",
        "/api/auth/refresh", "/api/workers/1/heartbeat", "/api/auth/refresh", "/api/workers/1/heartbeat"]
    assert session.calls[-1][1] == "Bearer a3"


def test_a_failed_early_renewal_keeps_the_valid_token(clock: FakeTime):
    session = FakeSession(_tokens("a1", "r1"), OK, _error(503), OK)
    client = _client(session, clock)
    client.post("/api/workers/1/heartbeat", {})
    clock.now += 85
    assert client.post("/api/workers/1/heartbeat", {}) == {"ok": True}
    assert session.calls[-1] == ("/api/workers/1/heartbeat", "Bearer a1")
    assert clock.slept == []  # the heartbeat did not wait for the renewal


def test_a_refused_refresh_token_falls_back_to_the_password(clock: FakeTime):
    session = FakeSession(_tokens("a1", "r1"), OK, _error(401), _tokens("a2", "r2"), OK)
    client = _client(session, clock)
    client.post("/api/workers/1/heartbeat", {})
    clock.now += 85
    client.post("/api/workers/1/heartbeat", {})
    assert [path for path, _ in session.calls][2:] == ["/api/auth/refresh", "/api/auth/login",
                                                       "/api/workers/1/heartbeat"]
    assert session.calls[-1][1] == "Bearer a2"


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_answers_are_retried(status: int, clock: FakeTime):
    session = FakeSession(_token("t"), _error(status), _error(status), OK)
    assert _client(session, clock).post("/api/workers/1/heartbeat", {}) == {"ok": True}
    assert len(clock.slept) == 2


def test_retry_after_is_honoured(clock: FakeTime):
    session = FakeSession(_token("t"), _error(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "7"}), OK)
    _client(session, clock).post("/api/workers/1/claim", {})
    assert 7 <= clock.slept[0] <= 7 * 1.2


def test_a_bounded_call_gives_up_within_its_budget(clock: FakeTime):
    session = FakeSession(_token("t"), *[_error(503)] * 20)
    with pytest.raises(ApiUnavailable):
        _client(session, clock).post("/api/workers/1/deregister", {}, retry_for_s=5)
    assert clock.now == pytest.approx(5)  # the last try at the deadline, none after it


def test_an_unbounded_call_ends_when_the_worker_is_told_to_stop(clock: FakeTime):
    client = _client(FakeSession(requests.Timeout()), clock)
    client._stop.set()
    with pytest.raises(ApiUnavailable, match="stopping"):
        client.post("/api/workers", {})


def test_an_answer_without_an_envelope_is_not_taken_for_data(clock: FakeTime):
    session = FakeSession(_token("t"), _response(200, None), OK)
    assert _client(session, clock).post("/api/workers/1/claim", {}) == {"ok": True}


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("1e9") == RETRY_AFTER_CAP_S
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)
    assert 55 <= (parse_retry_after(email.utils.format_datetime(later)) or 0) <= 60


def test_backoff_doubles_with_jitter_up_to_its_cap():
    backoff = Backoff(base=1.0, cap=4.0)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0
    assert all(2.0 <= d <= 4.0 for d in delays[2:])
    backoff.reset()
    assert backoff.next_delay() <= 1.0


# -- the outbox ----------------------------------------------------------------------


def _report(job_id: int) -> protocol.Report:
    return protocol.Report(job_id=job_id, attempt=1, token=uuid.uuid4(), status="SUCCEEDED")


class FakeResults:
    """The results endpoint: fails on batches holding ``poison``; otherwise accepts everything."""

    def __init__(self, fail: Callable[[list[protocol.Report]], Exception | None]) -> None:
        self.fail = fail
        self.batches: list[list[int]] = []

    def __call__(self, reports: list[protocol.Report]) -> list[protocol.Outcome]:
        self.batches.append([r.job_id for r in reports])
        error = self.fail(reports)
        if error is not None:
            raise error
        return [protocol.Outcome(job_id=r.job_id, attempt=r.attempt, token=r.token, accepted=True) for r in reports]


def _outbox(send: FakeResults) -> tuple[Outbox, list[int]]:
    forgotten: list[int] = []
    outbox = Outbox(send, lambda reports: forgotten.extend(r.job_id for r in reports), batch_size=500,
                    backoff_base_s=0.0)
    return outbox, forgotten


def test_the_report_the_api_fails_on_is_isolated_and_dropped(caplog: pytest.LogCaptureFixture):
    send = FakeResults(lambda reports: ApiRejected(500, "INTERNAL_ERROR", "boom")
                       if any(r.job_id == 5 for r in reports) else None)
    outbox, forgotten = _outbox(send)
    for job_id in range(1, 9):
        outbox.put(_report(job_id))
    assert outbox.deliver(outbox.take()) is True
    assert sorted(forgotten) == list(range(1, 9))  # 5 dropped, the others accepted
    assert outbox.idle()
    failed = [b for b in send.batches if 5 in b]
    assert [len(b) for b in failed] == [8] * REPORT_TRIES + [4] * REPORT_TRIES + [2] * REPORT_TRIES + [1] * REPORT_TRIES
    assert "job 5 attempt 1: the API cannot process its report" in caplog.text


def test_an_outage_keeps_every_report():
    outbox, forgotten = _outbox(FakeResults(lambda reports: ApiUnavailable("down")))
    outbox.put(_report(1))
    outbox.put(_report(2))
    assert outbox.deliver(outbox.take()) is False
    assert forgotten == [] and not outbox.idle()
    assert [p.report.job_id for p in outbox.take()] == [1, 2]


def test_a_refused_worker_drops_nothing():
    outbox, forgotten = _outbox(FakeResults(lambda reports: ApiRejected(401, "UNAUTHORIZED", "no")))
    outbox.put(_report(1))
    assert outbox.deliver(outbox.take()) is False
    assert forgotten == [] and not outbox.idle()


def test_reports_a_claim_failed_with_go_apart():
    outbox, _ = _outbox(FakeResults(lambda reports: None))
    outbox.put(_report(1))
    outbox.give_back(outbox.take(for_claim=True), suspect=True)
    outbox.put(_report(2))
    assert [p.report.job_id for p in outbox.take(for_claim=True)] == [2]
    assert [p.report.job_id for p in outbox.take()] == [1]


def test_stale_reports_are_done_with(caplog: pytest.LogCaptureFixture):
    outbox, forgotten = _outbox(FakeResults(lambda reports: None))
    report = _report(1)
    outbox.put(report)
    outbox.settle(outbox.take(), [protocol.Outcome(job_id=1, attempt=1, token=report.token, accepted=False)])
    assert forgotten == [1] and outbox.idle()
    assert "was not accepted (stale)" in caplog.text
