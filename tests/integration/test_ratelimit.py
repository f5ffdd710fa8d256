"""Rate limits: headers, 429 with Retry-After, counts shared by processes, login limits, fail-open."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import text

from api.auth import service as accounts
from api.auth.models import Role
from api.context import EXTENSION_KEY
from api.maintenance.records import RateLimitWindowPruner
from tests.helpers import wait_for
from tests.integration.conftest import PASSWORD, As, claim, make_account, register

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


def _until_limited(send: Callable[[], Any], limit: int, passing: tuple[int, ...] = (200, 201)) -> Any:
    """Send until a 429 comes back; check exactly ``limit`` requests of that window got through.

    Robust to a window boundary falling inside the test: requests are grouped by the window
    they were counted in (``X-RateLimit-Reset``; every one-minute window ends at the same time).
    """
    passed: dict[str, int] = {}
    for _ in range(3 * limit + 3):
        response = send()
        reset = response.headers["X-RateLimit-Reset"]
        if response.status_code == 429:
            assert passed.get(reset, 0) == limit, passed
            return response
        assert response.status_code in passing, response.json
        passed[reset] = passed.get(reset, 0) + 1
    raise AssertionError(f"never limited: {passed}")


def _check_429(response: Any, limit: int) -> None:
    assert response.json["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert response.json["error"]["details"]["limit"] == limit
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= 60
    assert response.json["error"]["details"]["retry_after"] == retry_after


def test_headers_on_user_routes(alice):
    first = alice.get("/api/jobs")
    second = alice.get("/api/jobs")
    assert first.status_code == second.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "600"
    assert int(first.headers["X-RateLimit-Remaining"]) - 1 == int(second.headers["X-RateLimit-Remaining"]) \
        or second.headers["X-RateLimit-Reset"] != first.headers["X-RateLimit-Reset"]
    reset = int(first.headers["X-RateLimit-Reset"])
    assert time.time() - 1 <= reset <= time.time() + 61 and reset % 60 == 0
    # Refusals are counted and carry the headers too.
    assert alice.get("/api/jobs/12345").status_code == 404
    anonymous = alice.client.get("/api/jobs")
    assert anonymous.status_code == 401 and all(h in anonymous.headers for h in HEADERS)


def test_no_limit_on_worker_routes_health_and_docs(app, worker_account):
    worker_id = register(worker_account)
    for response in (worker_account.post("/api/workers", {"name": "w2", "job_types": ["noop"]}),
                     worker_account.post(f"/api/workers/{worker_id}/claim", {"max_jobs": 1, "wait_s": 0}),
                     worker_account.post(f"/api/workers/{worker_id}/heartbeat", {"jobs": []}),
                     app.test_client().get("/api/health"),
                     app.test_client().get("/api/openapi.json")):
        assert response.status_code < 500
        assert not any(h in response.headers for h in HEADERS), response.request.path
    assert claim(worker_account, worker_id) == []


def test_over_the_limit_is_429_with_retry_after(app_factory):
    limited = app_factory(rate_limit_per_minute=3)
    alice = make_account(limited, "alice@example.org", [Role.USER])
    bob = make_account(limited, "bob@example.org", [Role.USER])
    refused = _until_limited(lambda: alice.get("/api/jobs"), 3)
    _check_429(refused, 3)
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert refused.json["error"]["details"]["scope"] == "user"
    # Another caller has a count of its own; an anonymous one is counted by address.
    assert bob.get("/api/jobs").status_code == 200
    other_address = limited.test_client().get("/api/jobs", environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert other_address.status_code == 401 and other_address.headers["X-RateLimit-Remaining"] == "2"


def test_counts_are_shared_by_processes(app_factory):
    """Two apps on one database stand for two gunicorn processes (or two replicas)."""
    first, second = app_factory(rate_limit_per_minute=4), app_factory(rate_limit_per_minute=4)
    assert first.extensions[EXTENSION_KEY].engine is not second.extensions[EXTENSION_KEY].engine
    alice_first = make_account(first, "alice@example.org", [Role.USER])
    alice_second = As(second.test_client(), alice_first.token, alice_first.user_id)
    turn = iter(range(100))

    def either() -> Any:
        return (alice_first if next(turn) % 2 else alice_second).get("/api/jobs")

    _check_429(_until_limited(either, 4), 4)


def test_zero_disables_the_limit(app_factory):
    unlimited = app_factory(rate_limit_per_minute=0)
    alice = make_account(unlimited, "alice@example.org", [Role.USER])
    for _ in range(5):
        response = alice.get("/api/jobs")
        assert response.status_code == 200 and not any(h in response.headers for h in HEADERS)


def _attempt(client: Any, email: str, password: str = "wrong password!", addr: str = "127.0.0.1",
             **headers: str) -> Any:
    return client.post("/api/auth/login", json={"email": email, "password": password},
                       environ_base={"REMOTE_ADDR": addr}, headers=headers)


def _people(app: Any, *emails: str) -> None:
    with app.extensions[EXTENSION_KEY].engine.begin() as conn:
        for email in emails:
            accounts.create_user(conn, email, PASSWORD, [Role.USER])


def test_login_limited_per_account_before_the_password_is_checked(app_factory):
    limited = app_factory(login_limit_per_account=3, login_limit_per_address=100)
    _people(limited, "alice@example.org", "bob@example.org")
    client = limited.test_client()
    addresses = (f"198.51.100.{i}" for i in range(1, 100))  # spread out: only the account limit bites
    # Even the right password meets a 429 past the limit: attempts are refused before it is checked.
    refused = _until_limited(lambda: _attempt(client, " ALICE@example.org", PASSWORD, addr=next(addresses)), 3)
    _check_429(refused, 3)
    assert refused.json["error"]["details"]["scope"] == "login"
    assert _attempt(client, "bob@example.org", PASSWORD).status_code == 200


def test_login_limited_per_address(app_factory):
    limited = app_factory(login_limit_per_account=100, login_limit_per_address=4)
    _people(limited, "alice@example.org")
    client = limited.test_client()
    emails = (f"nobody{i}@example.org" for i in range(100))
    refused = _until_limited(lambda: _attempt(client, next(emails), addr="203.0.113.9"), 4, passing=(401,))
    assert refused.json["error"]["details"]["scope"] == "login-ip"
    _check_429(refused, 4)
    assert _attempt(client, "alice@example.org", PASSWORD, addr="203.0.113.10").status_code == 200


def test_service_accounts_log_in_past_the_login_limits(app_factory):
    """A fleet shares its service account and often one address; its passwords are random."""
    limited = app_factory(login_limit_per_account=2, login_limit_per_address=2)
    email = accounts.service_email("pool")
    with limited.extensions[EXTENSION_KEY].engine.begin() as conn:
        accounts.create_user(conn, email, PASSWORD, [Role.WORKER], is_service=True)
    for _ in range(5):
        assert _attempt(limited.test_client(), email, PASSWORD).status_code == 200


class _CountingHasher:
    """Stands in for the argon2 hasher and counts the passwords it verifies."""

    def __init__(self, real: Any) -> None:
        self.real, self.verified = real, 0

    def verify(self, hashed: str, password: str) -> bool:
        self.verified += 1
        return bool(self.real.verify(hashed, password))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _time_left_in_the_window(app: Any, needed_s: float) -> None:
    """Wait until the current one-minute window (on the database clock) has ``needed_s`` left,
    so the few seconds a test counts in fall in one window."""
    engine = app.extensions[EXTENSION_KEY].engine

    def left_s() -> float:
        with engine.connect() as conn:
            return 60 - float(conn.execute(text("SELECT extract(epoch FROM now()) % 60")).scalar_one())

    wait_for(lambda: left_s() >= needed_s, timeout=needed_s + 5, what=f"{needed_s} s left in the window")


def test_failed_service_account_logins_are_limited_per_address_before_hashing(app_factory, monkeypatch):
    """Anyone can name an address in the service domain; failing with it must cost a 429, not argon2."""
    limited = app_factory(login_limit_per_account=100, login_limit_per_address=3)
    email = accounts.service_email("pool")
    with limited.extensions[EXTENSION_KEY].engine.begin() as conn:
        accounts.create_user(conn, email, PASSWORD, [Role.WORKER], is_service=True)
    _time_left_in_the_window(limited, 20)
    hasher = _CountingHasher(accounts._hasher)
    monkeypatch.setattr(accounts, "_hasher", hasher)
    client = limited.test_client()
    ghosts = (accounts.service_email(f"ghost{i}") for i in range(100))
    refused = _until_limited(lambda: _attempt(client, next(ghosts), addr="203.0.113.9"), 3, passing=(401,))
    _check_429(refused, 3)
    assert refused.json["error"]["details"]["scope"] == "login-ip-failed"
    assert hasher.verified == 3
    # Refused before the password is checked, so the right one meets the 429 too ...
    assert _attempt(client, email, PASSWORD, addr="203.0.113.9").status_code == 429
    assert _attempt(client, email, "wrong password!", addr="203.0.113.9").status_code == 429
    assert hasher.verified == 3
    # ... while the fleet's own address, and people at this one, are unaffected.
    assert _attempt(client, email, PASSWORD, addr="203.0.113.10").status_code == 200
    _people(limited, "alice@example.org")
    assert _attempt(client, "alice@example.org", PASSWORD, addr="203.0.113.9").status_code == 200


def test_a_fleet_behind_one_address_is_not_locked_out(app_factory):
    """Twenty workers log in at once through one NAT address, three times the allowance; only
    failures count, so all get in, and the address still has its whole budget for failures."""
    limited = app_factory(login_limit_per_account=2, login_limit_per_address=6)
    email = accounts.service_email("pool")
    with limited.extensions[EXTENSION_KEY].engine.begin() as conn:
        accounts.create_user(conn, email, PASSWORD, [Role.WORKER], is_service=True)
    start = threading.Barrier(20)

    def worker_login(_: int) -> int:
        client = limited.test_client()
        start.wait(10)
        return int(_attempt(client, email, PASSWORD, addr="198.51.100.1").status_code)

    with ThreadPoolExecutor(20) as pool:
        assert list(pool.map(worker_login, range(20))) == [200] * 20
    client = limited.test_client()
    refused = _until_limited(lambda: _attempt(client, email, "a rotated password", addr="198.51.100.1"), 6,
                             passing=(401,))
    assert refused.json["error"]["details"]["scope"] == "login-ip-failed"


def test_forwarded_addresses_count_only_behind_trusted_proxies(app_factory):
    direct = app_factory(login_limit_per_address=2, login_limit_per_account=100)
    proxied = app_factory(login_limit_per_address=2, login_limit_per_account=100, trusted_proxy_hops=1)

    def attempts(app: Any) -> Callable[[], Any]:
        client, forwarded = app.test_client(), (f"198.51.100.{i}" for i in range(100))
        return lambda: _attempt(client, "x@example.org", addr="10.0.0.1", **{"X-Forwarded-For": next(forwarded)})

    # Direct: the header is only the client's claim, so every attempt is 10.0.0.1's.
    _until_limited(attempts(direct), 2, passing=(401,))
    # Behind one trusted proxy, each forwarded address has a count of its own.
    send = attempts(proxied)
    assert [send().status_code for _ in range(4)] == [401] * 4


def test_registration_limited_per_address(app_factory):
    limited = app_factory(login_limit_per_address=2)
    client = limited.test_client()
    emails = (f"new{i}@example.org" for i in range(100))
    refused = _until_limited(
        lambda: client.post("/api/auth/register", json={"email": next(emails), "password": "a fine passphrase"}), 2)
    assert refused.json["error"]["details"]["scope"] == "register-ip"


def test_fails_open_when_the_counters_cannot_be_written(app_factory, caplog: pytest.LogCaptureFixture):
    limited = app_factory(rate_limit_per_minute=1, login_limit_per_account=1, login_limit_per_address=1)
    alice = make_account(limited, "alice@example.org", [Role.USER])
    engine = limited.extensions[EXTENSION_KEY].engine
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE rate_limit_counters RENAME TO rate_limit_counters_away"))
    try:
        with caplog.at_level(logging.WARNING, logger="api.ratelimit.hooks"):
            for _ in range(3):
                response = alice.get("/api/jobs")
                assert response.status_code == 200 and "X-RateLimit-Limit" not in response.headers
            assert _attempt(limited.test_client(), "alice@example.org", PASSWORD).status_code == 200
        assert any("rate limit skipped" in r.getMessage() for r in caplog.records)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE rate_limit_counters_away RENAME TO rate_limit_counters"))
    _until_limited(lambda: alice.get("/api/jobs"), 1)


def test_pruner_deletes_ended_windows(app, engine):
    with engine.begin() as conn:
        conn.execute(text("""INSERT INTO rate_limit_counters (key, window_start, hits) VALUES
                             ('ip:old', now() - interval '1 hour', 5), ('ip:new', date_trunc('minute', now()), 1)"""))
    assert RateLimitWindowPruner(engine).run_once().deleted == 1
    with engine.connect() as conn:
        keys = conn.execute(text("SELECT key FROM rate_limit_counters")).scalars().all()
    assert keys == ["ip:new"]
