"""A token verified once in a process is not verified with RSA again; its expiry and its account still count."""

from __future__ import annotations

from typing import Any

import pytest

from api.auth import guards
from api.auth.token_cache import VerifiedTokens
from tests.integration.conftest import register


def test_a_workers_token_is_verified_once_per_process(app, worker_account, monkeypatch):
    wid = register(worker_account)
    calls: list[int] = []
    real = guards.verify_jwt_in_request

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(guards, "verify_jwt_in_request", counting)
    for _ in range(5):
        assert worker_account.post(f"/api/workers/{wid}/heartbeat", {"jobs": []}).status_code == 200
    assert len(calls) == 0  # verified at registration, before the counter


def test_a_tampered_token_is_not_taken_for_a_verified_one(app, worker_account):
    wid = register(worker_account)
    tampered = worker_account.token[:-4] + ("AAAA" if not worker_account.token.endswith("AAAA") else "BBBB")
    response = worker_account.client.post(f"/api/workers/{wid}/heartbeat", json={"jobs": []},
                                          headers={"Authorization": f"Bearer {tampered}"})
    assert response.status_code == 401


def test_a_disabled_account_is_refused_even_with_a_verified_token(app, admin, worker_account):
    wid = register(worker_account)
    assert worker_account.post(f"/api/workers/{wid}/heartbeat", {"jobs": []}).status_code == 200
    assert admin.post(f"/api/admin/users/{worker_account.user_id}/disable", {}).status_code == 200
    response = worker_account.post(f"/api/workers/{wid}/heartbeat", {"jobs": []})
    assert response.status_code == 401 and response.json["error"]["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize("age", [0.0, 9.9])
def test_remembered_tokens_hold_until_their_expiry_only(age):
    now = [1000.0]
    tokens = VerifiedTokens(max_entries=2, clock=lambda: now[0])
    tokens.remember("t1", 7, expires_at=1010.0)
    now[0] += age
    assert tokens.user_of("t1") == 7
    now[0] = 1010.0
    assert tokens.user_of("t1") is None
    tokens.remember("a", 1, 2000.0)
    tokens.remember("b", 2, 2000.0)
    tokens.remember("c", 3, 2000.0)
    assert tokens.user_of("a") is None and tokens.user_of("c") == 3
