"""The per-process identity cache: hot endpoints do not read the users table per request, admin
changes apply at once on the process that made them, and other changes within the TTL."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, text

from api.auth.identity_cache import IDENTITY_TTL_S, IdentityCache, identity_cache
from api.auth.service import Identity
from api.context import EXTENSION_KEY
from tests.helpers import wait_for
from tests.integration.conftest import register

_USERS = re.compile(r"\busers\b", re.IGNORECASE)


@contextmanager
def users_reads(app: Any) -> Iterator[list[str]]:
    """The statements the app sends that name the users table, while the block runs."""
    engine = app.extensions[EXTENSION_KEY].engine
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        if _USERS.search(statement):
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _beat(worker: Any, worker_id: int) -> Any:
    return worker.post(f"/api/workers/{worker_id}/heartbeat", {"jobs": []})


def test_a_workers_heartbeats_do_not_read_the_users_table_per_request(app, worker_account):
    worker_id = register(worker_account)
    with users_reads(app) as seen:
        for _ in range(20):
            assert _beat(worker_account, worker_id).status_code == 200
    assert len(seen) <= 1, seen
    # The counter does see the lookup: with the entry forgotten, the next request reads it once.
    identity_cache(app).invalidate(worker_account.user_id)
    with users_reads(app) as seen:
        assert _beat(worker_account, worker_id).status_code == 200
        assert _beat(worker_account, worker_id).status_code == 200
    assert len(seen) == 1 and "disabled_at IS NULL" in seen[0]


def test_each_app_has_its_own_cache_with_the_default_ttl(app, app_factory):
    other = app_factory()
    assert identity_cache(app) is not identity_cache(other)
    assert identity_cache(app).ttl_s == IDENTITY_TTL_S == 5.0


def test_disabling_through_the_admin_api_refuses_the_token_at_once(app, admin, worker_account):
    worker_id = register(worker_account)
    assert _beat(worker_account, worker_id).status_code == 200  # its identity is cached now
    assert admin.post(f"/api/admin/users/{worker_account.user_id}/disable").status_code == 200
    response = _beat(worker_account, worker_id)
    assert response.status_code == 401
    assert response.json["error"]["message"] == "account disabled or removed"
    # The refusal is cached too: a disabled account's retries do not read the table either.
    with users_reads(app) as seen:
        for _ in range(5):
            assert _beat(worker_account, worker_id).status_code == 401
    assert len(seen) <= 1, seen
    # Enabling lets it back at once as well.
    assert admin.post(f"/api/admin/users/{worker_account.user_id}/enable").status_code == 200
    assert _beat(worker_account, worker_id).status_code == 200


def test_role_changes_through_the_admin_api_apply_at_once(admin, alice):
    assert alice.get("/api/admin/users").status_code == 403  # USER, cached
    promoted = admin.client.patch(f"/api/admin/users/{alice.user_id}", json={"roles": ["ADMIN"]},
                                  headers={"Authorization": f"Bearer {admin.token}"})
    assert promoted.status_code == 200, promoted.json
    assert alice.get("/api/admin/users").status_code == 200
    demoted = admin.client.patch(f"/api/admin/users/{alice.user_id}", json={"roles": ["USER"]},
                                 headers={"Authorization": f"Bearer {admin.token}"})
    assert demoted.status_code == 200, demoted.json
    assert alice.get("/api/admin/users").status_code == 403


def test_rotating_a_service_accounts_password_forgets_its_entry(app, admin, worker_account):
    worker_id = register(worker_account)
    assert _beat(worker_account, worker_id).status_code == 200
    assert len(identity_cache(app)) >= 1
    assert admin.post(f"/api/admin/service-accounts/{worker_account.user_id}/rotate").status_code == 200
    with users_reads(app) as seen:
        # Issued access tokens live out their lifetime (as before); the account is read again.
        assert _beat(worker_account, worker_id).status_code == 200
    assert len(seen) == 1


def test_a_change_made_behind_the_apis_back_applies_within_the_ttl(app, engine, worker_account):
    worker_id = register(worker_account)
    cache = identity_cache(app)
    cache.ttl_s = 60.0
    warmed_at = time.monotonic()
    assert _beat(worker_account, worker_id).status_code == 200
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET disabled_at = now() WHERE id = :id"), {"id": worker_account.user_id})
    # Inside the TTL the stale entry is trusted: no read, still accepted.
    with users_reads(app) as seen:
        for _ in range(3):
            assert _beat(worker_account, worker_id).status_code == 200
    assert seen == []
    # With a short TTL the entry lapses and the disabled account is refused, not before.
    cache.ttl_s = 0.5
    refused = wait_for(lambda: _beat(worker_account, worker_id).status_code == 401, timeout=5.0, interval=0.05,
                       what="the stale identity to lapse")
    assert refused and time.monotonic() - warmed_at >= 0.5


# The cache on its own, with a clock the test moves.

class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _loader(answers: dict[int, Identity | None]) -> tuple[list[int], Any]:
    calls: list[int] = []

    def load(user_id: int) -> Identity | None:
        calls.append(user_id)
        return answers.get(user_id)

    return calls, load


def test_cache_keeps_entries_for_the_ttl_including_absent_accounts():
    clock = Clock()
    cache = IdentityCache(ttl_s=5.0, clock=clock)
    calls, load = _loader({1: Identity(1, frozenset({"WORKER"}))})
    assert cache.get(1, load) == Identity(1, frozenset({"WORKER"}))
    assert cache.get(2, load) is None
    clock.now += 4.9
    assert cache.get(1, load) is not None and cache.get(2, load) is None
    assert calls == [1, 2]
    clock.now += 0.1
    cache.get(1, load)
    cache.get(2, load)
    assert calls == [1, 2, 1, 2]
    cache.invalidate(1)
    cache.get(1, load)
    assert calls == [1, 2, 1, 2, 1]


def test_cache_is_bounded_and_drops_the_oldest_entry():
    cache = IdentityCache(max_entries=3, clock=Clock())
    calls, load = _loader({})
    for user_id in (1, 2, 3, 4):
        cache.get(user_id, load)
    assert len(cache) == 3
    cache.get(2, load)
    cache.get(1, load)
    assert calls == [1, 2, 3, 4, 1]
    with pytest.raises(ValueError):
        IdentityCache(max_entries=0)


def test_a_read_that_straddles_an_invalidation_is_not_stored():
    cache = IdentityCache(clock=Clock())
    stale = Identity(7, frozenset({"ADMIN"}))

    def load_then_change(user_id: int) -> Identity | None:
        cache.invalidate(user_id)  # the account changed while this read was in flight
        return stale

    assert cache.get(7, load_then_change) == stale  # this request goes by what it read
    calls, load = _loader({})
    assert cache.get(7, load) is None and calls == [7]  # the next one reads again


def test_while_one_request_reads_an_expired_entry_again_the_others_use_it():
    """A fleet shares one service account: when its entry expires, one read, not a stampede."""
    clock = Clock()
    cache = IdentityCache(ttl_s=5.0, clock=clock)
    old, new = Identity(1, frozenset({"WORKER"})), Identity(1, frozenset({"WORKER", "MANAGER"}))
    cache.get(1, lambda _: old)
    clock.now += 6
    seen_meanwhile = []

    def slow_read(_: int) -> Identity:
        seen_meanwhile.append(cache.get(1, lambda _: pytest.fail("a second read while one is in flight")))
        return new

    assert cache.get(1, slow_read) == new
    assert seen_meanwhile == [old]
    # Not forever: past two TTLs an expired entry is not served even while a read is in flight.
    clock.now += 11

    def slower_read(_: int) -> Identity:
        seen_meanwhile.append(cache.get(1, lambda _: new))
        return new

    cache.get(1, slower_read)
    assert seen_meanwhile == [old, new]
