"""The client base (``skyfleet_client.http.Session``) without a network: what each policy sends
again, when it gives up, how the token is kept, and which error reaches the caller."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email.utils
import io
import json
import threading
from typing import Any

import httpx
import pytest
from skyfleet_client.errors import (
    CredentialsRefused,
    LimitExceeded,
    RateLimited,
    Rejected,
    ServerError,
    Unauthorized,
    Unavailable,
)
from skyfleet_client.http import PUBLIC_POLICY, Session
from skyfleet_client.retry import RETRY_AFTER_CAP_S, Backoff, RetryPolicy, parse_retry_after

from manager.api_client import MANAGER_POLICY
from worker.client import WORKER_POLICY

URL = "http://api"


def _answer(status: int, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
            ) -> httpx.Response:
    return httpx.Response(status, content=json.dumps(body).encode() if body is not None else b"",
                          headers=headers or {})


def _error(status: int, code: str = "ERROR", **headers: str) -> httpx.Response:
    return _answer(status, {"success": False, "error": {"code": code, "message": "no"}}, headers)


def _token(name: str) -> httpx.Response:
    return _answer(200, {"success": True, "data": {"access_token": name}})


def _tokens(access: str, refresh: str, expires_in: int = 100) -> httpx.Response:
    return _answer(200, {"success": True, "data": {"access_token": access, "refresh_token": refresh,
                                                   "expires_in": expires_in}})


OK = _answer(200, {"success": True, "data": {"ok": True}})
LOST = httpx.ConnectError("connection refused")


class Api:
    """A transport answering each request with the next scripted answer; records (method path, token)."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str | None]] = []
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((f"{request.method} {request.url.path}", request.headers.get("Authorization")))
        self.bodies.append(request.read())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def paths(self) -> list[str]:
        return [call for call, _ in self.calls]


class Clock:
    """Monotonic time that only sleeping moves on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


class Stop(threading.Event):
    """A stop event whose waits pass on the fake clock."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def wait(self, timeout: float | None = None) -> bool:
        self.clock.sleep(timeout or 0.0)
        return self.is_set()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def _session(api: Api, clock: Clock, policy: RetryPolicy = WORKER_POLICY, **credentials: Any) -> Session:
    credentials = credentials or {"email": "w@example.org", "password": "pw"}
    return Session(URL, policy=policy, stop=Stop(clock), transport=httpx.MockTransport(api), clock=clock,
                   sleep=clock.sleep, **credentials)


# -- the worker's policy: everything transient is waited out, until told to stop ----------------


def test_a_login_answered_503_is_retried_like_any_outage(clock: Clock):
    api = Api(_error(503), LOST, _token("t1"), OK)
    assert _session(api, clock).call("POST", "/api/workers", json={}) == {"ok": True}
    assert api.paths == ["POST /api/auth/login"] * 3 + ["POST /api/workers"]
    assert len(clock.slept) == 2


def test_a_token_that_expired_during_an_outage_is_renewed_when_the_api_returns(clock: Clock):
    api = Api(_token("old"), OK, _error(401), _error(503), _error(503), _token("new"), OK)
    session = _session(api, clock)
    session.call("POST", "/api/workers/1/claim", json={})
    assert session.call("POST", "/api/workers/1/claim", json={}) == {"ok": True}
    assert api.calls[2] == ("POST /api/workers/1/claim", "Bearer old")
    assert api.calls[-1] == ("POST /api/workers/1/claim", "Bearer new")


def test_a_fresh_token_refused_is_an_answer_not_a_loop(clock: Clock):
    api = Api(_token("t1"), _error(401), _token("t2"), _error(401, "UNAUTHORIZED"))
    with pytest.raises(Unauthorized) as rejected:
        _session(api, clock).call("POST", "/api/workers/1/claim", json={})
    assert rejected.value.status == 401 and isinstance(rejected.value, Rejected)
    assert len(api.calls) == 4


@pytest.mark.parametrize("status", [401, 403])
def test_wrong_credentials_are_refused_at_once(status: int, clock: Clock):
    with pytest.raises(CredentialsRefused, match="login refused for w@example.org") as refused:
        _session(Api(_error(status, "UNAUTHORIZED")), clock).call("POST", "/api/workers", json={})
    assert refused.value.status == status and refused.value.code == "UNAUTHORIZED"
    assert not isinstance(refused.value, Rejected)  # `except Rejected` must not swallow it
    assert clock.slept == []


def test_a_500_is_an_answer_for_the_caller(clock: Clock):
    api = Api(_token("t"), _error(500, "INTERNAL_ERROR"))
    with pytest.raises(ServerError) as rejected:
        _session(api, clock).call("POST", "/api/workers/1/results", json={"results": []})
    assert rejected.value.status == 500 and clock.slept == []


def test_the_token_is_renewed_early_with_the_refresh_token_not_the_password(clock: Clock):
    """A password login costs the API an argon2 hash; a fleet renewing by login at expiry stalls it."""
    api = Api(_tokens("a1", "r1"), OK, OK, _tokens("a2", "r2"), OK, _tokens("a3", "r3"), OK)
    session = _session(api, clock)
    session.call("POST", "/api/workers/1/heartbeat", json={})
    clock.now += 50  # before 60 % of the lifetime: nothing to renew
    session.call("POST", "/api/workers/1/heartbeat", json={})
    clock.now += 31  # past 80 %
    session.call("POST", "/api/workers/1/heartbeat", json={})
    clock.now += 81
    session.call("POST", "/api/workers/1/heartbeat", json={})
    assert api.paths == ["POST /api/auth/login", "POST /api/workers/1/heartbeat", "POST /api/workers/1/heartbeat",
                         "POST /api/auth/refresh", "POST /api/workers/1/heartbeat", "POST /api/auth/refresh",
                         "POST /api/workers/1/heartbeat"]
    assert api.calls[-1][1] == "Bearer a3"
    assert json.loads(api.bodies[-2]) == {"refresh_token": "r2"}  # rotated


def test_a_failed_early_renewal_keeps_the_valid_token(clock: Clock):
    api = Api(_tokens("a1", "r1"), OK, _error(503), OK)
    session = _session(api, clock)
    session.call("POST", "/api/workers/1/heartbeat", json={})
    clock.now += 85
    assert session.call("POST", "/api/workers/1/heartbeat", json={}) == {"ok": True}
    assert api.calls[-1] == ("POST /api/workers/1/heartbeat", "Bearer a1")
    assert clock.slept == []  # the heartbeat did not wait for the renewal


def test_a_refused_refresh_token_falls_back_to_the_password(clock: Clock):
    api = Api(_tokens("a1", "r1"), OK, _error(401), _tokens("a2", "r2"), OK)
    session = _session(api, clock)
    session.call("POST", "/api/workers/1/heartbeat", json={})
    clock.now += 85
    session.call("POST", "/api/workers/1/heartbeat", json={})
    assert api.paths[2:] == ["POST /api/auth/refresh", "POST /api/auth/login", "POST /api/workers/1/heartbeat"]
    assert api.calls[-1][1] == "Bearer a2"


@pytest.mark.parametrize("status", [408, 429, 502, 503, 504])
def test_transient_answers_are_retried(status: int, clock: Clock):
    api = Api(_token("t"), _error(status), _error(status), OK)
    assert _session(api, clock).call("POST", "/api/workers/1/heartbeat", json={}) == {"ok": True}
    assert len(clock.slept) == 2


def test_a_lost_answer_to_a_post_is_sent_again_when_the_policy_allows(clock: Clock):
    api = Api(_token("t"), httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("cut"), OK)
    assert _session(api, clock).call("POST", "/api/workers/1/claim", json={}) == {"ok": True}
    assert api.paths.count("POST /api/workers/1/claim") == 3


def test_retry_after_is_honoured(clock: Clock):
    api = Api(_token("t"), _error(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "7"}), OK)
    _session(api, clock).call("POST", "/api/workers/1/claim", json={})
    assert 7 <= clock.slept[0] <= 7 * 1.2


def test_a_bounded_call_gives_up_within_its_budget(clock: Clock):
    api = Api(_token("t"), *[_error(503)] * 20)
    with pytest.raises(Unavailable):
        _session(api, clock).call("POST", "/api/workers/1/deregister", json={}, retry_for_s=5)
    assert clock.now == pytest.approx(5)  # the last try at the deadline, none after it


def test_a_bounded_call_told_to_wait_past_its_deadline_gives_up_at_once(clock: Clock):
    api = Api(_token("t"), _error(503, **{"Retry-After": "30"}))
    with pytest.raises(Unavailable):
        _session(api, clock).call("POST", "/api/workers/1/heartbeat", json={}, retry_for_s=5)
    assert clock.now == 0


def test_a_500_given_up_on_is_unavailable_not_rejected(clock: Clock):
    """The manager waits out 5xx: when its budget ends, the caller hears "unavailable"."""
    api = Api(_token("t"), *[_error(500)] * 20)
    with pytest.raises(Unavailable) as unavailable:
        _session(api, clock, MANAGER_POLICY).call("GET", "/api/manager/queues")
    assert unavailable.value.status == 500 and not isinstance(unavailable.value, Rejected)


def test_an_unbounded_call_ends_when_told_to_stop(clock: Clock):
    session = _session(Api(httpx.ReadTimeout("slow")), clock)
    session.stop.set()
    with pytest.raises(Unavailable, match="stopping"):
        session.call("POST", "/api/workers", json={})


def test_an_answer_without_an_envelope_is_not_taken_for_data(clock: Clock):
    api = Api(_token("t"), _answer(200, None), OK)
    assert _session(api, clock).call("POST", "/api/workers/1/claim", json={}) == {"ok": True}


# -- the public client's policy: a POST is not sent twice; an account's limit is an answer --------


def test_a_post_whose_answer_was_lost_is_not_sent_again_by_default(clock: Clock):
    api = Api(LOST)
    with pytest.raises(Unavailable, match="could not be reached"):
        _session(api, clock, PUBLIC_POLICY, token="t").call("POST", "/api/jobs", json={})
    assert len(api.calls) == 1 and clock.slept == []


def test_a_get_whose_answer_was_lost_is_sent_again(clock: Clock):
    api = Api(LOST, OK)
    assert _session(api, clock, PUBLIC_POLICY, token="t").call("GET", "/api/jobs/1") == {"ok": True}


def test_a_rate_limit_is_waited_out_even_for_a_post_as_long_as_it_says(clock: Clock):
    api = Api(_error(429, "RATE_LIMIT_EXCEEDED", **{"Retry-After": "7"}), OK)
    _session(api, clock, PUBLIC_POLICY, token="t").call("POST", "/api/jobs", json={})
    assert clock.slept == [7.0]


def test_a_rate_limit_past_the_budget_is_raised_with_its_retry_after(clock: Clock):
    api = Api(_answer(429, {"error": {"code": "RATE_LIMIT_EXCEEDED", "message": "slow down",
                                      "details": {"retry_after": 50}}}))
    session = Session(URL, token="t", max_wait_s=10, transport=httpx.MockTransport(api), clock=clock,
                      sleep=clock.sleep)
    with pytest.raises(RateLimited) as limited:
        session.call("GET", "/api/jobs")
    assert limited.value.retry_after == 50 and isinstance(limited.value, Unavailable)


def test_an_accounts_limit_is_an_answer(clock: Clock):
    with pytest.raises(LimitExceeded):
        _session(Api(_error(429, "LIMIT_EXCEEDED")), clock, token="t").call("POST", "/api/jobs", json={})
    assert clock.slept == []


def test_an_upload_sent_again_starts_from_the_start(clock: Clock):
    api = Api(_error(503), OK)
    upload = io.BytesIO(b"SIMPLE  =                    T")
    _session(api, clock, PUBLIC_POLICY, token="t").call("POST", "/api/files", files={"file": ("a.fits", upload)})
    assert b"SIMPLE" in api.bodies[0] and b"SIMPLE" in api.bodies[1]


def test_a_refused_refresh_token_without_a_password_is_refused_credentials(clock: Clock):
    api = Api(_error(401, "UNAUTHORIZED"))
    with pytest.raises(CredentialsRefused):
        _session(api, clock, PUBLIC_POLICY, refresh_token="r").call("GET", "/api/auth/me")


def test_a_new_refresh_token_is_handed_over(clock: Clock):
    saved: list[str] = []
    api = Api(_tokens("a", "r2"), OK)
    session = _session(api, clock, PUBLIC_POLICY, refresh_token="r1", on_refresh=saved.append)
    session.call("GET", "/api/auth/me")
    assert saved == ["r2"] and session.refresh_token == "r2"


def test_a_login_refused_for_a_bad_field_is_the_callers_error_unless_the_policy_waits_it_out(clock: Clock):
    with pytest.raises(Rejected):
        _session(Api(_error(422, "VALIDATION_ERROR")), clock, PUBLIC_POLICY).call("GET", "/api/auth/me")
    worker = _session(Api(_error(422), _token("t"), OK), clock)
    assert worker.call("POST", "/api/workers", json={}) == {"ok": True}


def test_threads_share_one_login(clock: Clock):
    api = Api(_token("t"), *[OK] * 8)
    session = _session(api, clock)
    threads = [threading.Thread(target=session.call, args=("POST", "/api/workers/1/heartbeat"),
                                kwargs={"json": {}}) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert api.paths.count("POST /api/auth/login") == 1


# -- the pieces ---------------------------------------------------------------------------------


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


def test_a_policy_is_a_value():
    bounded = dataclasses.replace(WORKER_POLICY, retry_for_s=3.0)
    assert bounded.retry_for_s == 3.0 and WORKER_POLICY.retry_for_s is None
    assert PUBLIC_POLICY.may_resend("GET") and not PUBLIC_POLICY.may_resend("POST")
    assert WORKER_POLICY.may_resend("POST")
