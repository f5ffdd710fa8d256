"""Admin account management: list, filter, paginate, change, disable/enable, service accounts."""

from __future__ import annotations

from typing import Any

import pytest

from api.auth import service as accounts
from api.auth.models import Role
from api.context import EXTENSION_KEY
from tests.integration.conftest import PASSWORD, As, make_account

MANAGER_EMAIL = accounts.service_email("m1")


def _patch(who: As, path: str, body: dict[str, Any]) -> Any:
    return who.client.patch(path, json=body, headers={"Authorization": f"Bearer {who.token}"})


def _login(app, email: str, password: str = PASSWORD) -> Any:
    return app.test_client().post("/api/auth/login", json={"email": email, "password": password})


def _people(app, count: int) -> list[int]:
    """``count`` USER accounts user00@… (created in this order), without logging them in."""
    with app.extensions[EXTENSION_KEY].engine.begin() as conn:
        return [accounts.create_user(conn, f"user{i:02d}@example.org", PASSWORD, [Role.USER]).id
                for i in range(count)]


def test_list_paginates_with_meta(app, admin):
    _people(app, 25)
    first = admin.get("/api/admin/users?limit=10&sort=email")
    assert first.status_code == 200
    body = first.json
    assert [a["email"] for a in body["data"]][:3] == ["admin@example.org", "user00@example.org", "user01@example.org"]
    assert body["meta"]["pagination"] == {"page": 1, "per_page": 10, "total": 26, "pages": 3,
                                          "has_next": True, "has_prev": False}
    last = admin.get("/api/admin/users?limit=10&page=3&sort=email").json
    assert len(last["data"]) == 6 and last["meta"]["pagination"]["has_next"] is False
    past = admin.get("/api/admin/users?limit=10&page=9").json
    assert past["data"] == []
    assert past["meta"]["pagination"] == {"page": 9, "per_page": 10, "total": 26, "pages": 3,
                                          "has_next": False, "has_prev": True}
    newest = admin.get("/api/admin/users?limit=1").json["data"][0]
    assert newest["email"] == "user24@example.org"  # default sort: -created_at (ties by id)
    assert set(newest) >= {"id", "email", "name", "roles", "is_service", "created_at", "disabled_at",
                           "max_active_jobs", "min_priority"}
    assert "password" not in newest and "password_hash" not in newest


@pytest.mark.parametrize(("query", "field"), [
    ("limit=0", "limit"), ("limit=101", "limit"), ("page=0", "page"), ("sort=password_hash", "sort"),
    ("sort=-name", "sort"), ("role=ROOT", "role"), ("disabled=maybe", "disabled"),
])
def test_bad_list_arguments_name_the_field(admin, query, field):
    response = admin.get(f"/api/admin/users?{query}")
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert error["details"]["location"] == "query" and list(error["details"]["fields"]) == [field]


def test_filters(app, admin, alice, worker_account):
    make_account(app, MANAGER_EMAIL, [Role.MANAGER], is_service=True)
    with app.extensions[EXTENSION_KEY].engine.begin() as conn:
        accounts.create_user(conn, "Under_Score%@example.org", PASSWORD, [Role.USER])

    def emails(query: str) -> list[str]:
        response = admin.get(f"/api/admin/users?sort=email&{query}")
        assert response.status_code == 200, response.json
        return [a["email"] for a in response.json["data"]]

    assert emails("role=USER") == ["alice@example.org", "under_score%@example.org"]
    assert emails("role=ADMIN") == ["admin@example.org"]
    assert emails("is_service=true") == [MANAGER_EMAIL, worker_account_email()]
    assert emails("is_service=false&q=ALI") == ["alice@example.org"]
    # LIKE wildcards in q are literal: "_" and "%" match only themselves.
    assert emails("q=r_s") == ["under_score%@example.org"]
    assert emails("q=%25") == ["under_score%@example.org"]
    assert emails("q=e%25") == ["under_score%@example.org"]
    assert admin.post(f"/api/admin/users/{alice.user_id}/disable").status_code == 200
    assert emails("disabled=true") == ["alice@example.org"]
    assert "alice@example.org" not in emails("disabled=false")


def worker_account_email() -> str:
    return accounts.service_email("w1")


def test_get_one_and_404(admin, alice):
    response = admin.get(f"/api/admin/users/{alice.user_id}")
    assert response.status_code == 200 and response.json["data"]["email"] == "alice@example.org"
    missing = admin.get("/api/admin/users/99999")
    assert missing.status_code == 404 and missing.json["error"]["code"] == "NOT_FOUND"


def test_patch_changes_name_roles_and_limits(app, admin, alice):
    path = f"/api/admin/users/{alice.user_id}"
    response = _patch(admin, path, {"name": "Alice", "max_active_jobs": 5, "min_priority": 0})
    assert response.status_code == 200, response.json
    data = response.json["data"]
    assert (data["name"], data["max_active_jobs"], data["min_priority"]) == ("Alice", 5, 0)
    assert _patch(admin, path, {"roles": ["USER", "ADMIN"]}).json["data"]["roles"] == ["ADMIN", "USER"]
    # The role change applies to the token alice already holds: roles are read per request.
    assert alice.get("/api/admin/users").status_code == 200
    assert _patch(admin, path, {"roles": ["USER"]}).status_code == 200
    assert alice.get("/api/admin/users").status_code == 403
    reset = _patch(admin, path, {"max_active_jobs": None, "min_priority": None}).json["data"]
    assert reset["max_active_jobs"] is None and reset["min_priority"] is None and reset["name"] == "Alice"


@pytest.mark.parametrize(("body", "fields"), [
    ({"min_priority": 10}, ["min_priority"]),
    ({"min_priority": -1}, ["min_priority"]),
    ({"max_active_jobs": 0}, ["max_active_jobs"]),
    ({"roles": []}, ["roles"]),
    ({"roles": ["KING"]}, ["roles.0"]),
    ({"roles": ["WORKER"]}, ["roles"]),  # a person cannot hold a service role
    ({"email": "new@example.org"}, ["email"]),
    ({}, ["_body"]),
    ({"password": "password1234"}, ["password"]),
])
def test_patch_validation(admin, alice, body, fields):
    response = _patch(admin, f"/api/admin/users/{alice.user_id}", body)
    assert response.status_code == 422, response.json
    assert response.json["error"]["code"] == "VALIDATION_ERROR"
    assert list(response.json["error"]["details"]["fields"]) == fields


def test_patch_refuses_service_accounts_a_person_role(admin, worker_account):
    response = _patch(admin, f"/api/admin/users/{worker_account.user_id}", {"roles": ["ADMIN"]})
    assert response.status_code == 422 and list(response.json["error"]["details"]["fields"]) == ["roles"]
    ok = _patch(admin, f"/api/admin/users/{worker_account.user_id}", {"roles": ["WORKER", "MANAGER"]})
    assert ok.status_code == 200 and ok.json["data"]["roles"] == ["MANAGER", "WORKER"]


def test_admin_cannot_demote_or_disable_themselves(admin):
    demote = _patch(admin, f"/api/admin/users/{admin.user_id}", {"roles": ["USER"]})
    assert demote.status_code == 409 and demote.json["error"]["code"] == "CONFLICT"
    disable = admin.post(f"/api/admin/users/{admin.user_id}/disable")
    assert disable.status_code == 409 and "your own account" in disable.json["error"]["message"]
    assert admin.get("/api/auth/me").json["data"]["disabled_at"] is None


def test_patch_password_applies_the_policy_and_revokes_sessions(app, admin, alice):
    client = app.test_client()
    refresh = _login(app, "alice@example.org").json["data"]["refresh_token"]
    weak = _patch(admin, f"/api/admin/users/{alice.user_id}", {"password": "alice@example.org"})
    assert weak.status_code == 422
    assert "must not be mostly your email address" in weak.json["error"]["details"]["fields"]["password"]
    assert _patch(admin, f"/api/admin/users/{alice.user_id}", {"password": "a brand new passphrase"}).status_code == 200
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    assert _login(app, "alice@example.org").status_code == 401
    assert _login(app, "alice@example.org", "a brand new passphrase").status_code == 200


def test_admin_created_password_follows_the_policy(admin):
    response = admin.post("/api/admin/users", {"email": "dave@example.org", "password": "qwertyuiop123"})
    assert response.status_code == 422
    assert response.json["error"]["details"]["fields"]["password"] == ["is one of the most commonly used passwords"]
    reserved = admin.post("/api/admin/users", {"email": "x@service.skyfleet.internal"})
    assert reserved.status_code == 422 and list(reserved.json["error"]["details"]["fields"]) == ["email"]
    service_role = admin.post("/api/admin/users", {"email": "eve@example.org", "roles": ["WORKER"]})
    assert service_role.status_code == 422 and list(service_role.json["error"]["details"]["fields"]) == ["roles"]


def test_disable_locks_the_account_out_and_enable_lets_it_back(app, admin, alice):
    client = app.test_client()
    refresh = _login(app, "alice@example.org").json["data"]["refresh_token"]
    assert alice.get("/api/auth/me").status_code == 200

    response = admin.post(f"/api/admin/users/{alice.user_id}/disable")
    assert response.status_code == 200 and response.json["data"]["disabled_at"] is not None
    disabled_at = response.json["data"]["disabled_at"]
    # Disabling twice keeps the first timestamp.
    assert admin.post(f"/api/admin/users/{alice.user_id}/disable").json["data"]["disabled_at"] == disabled_at

    assert _login(app, "alice@example.org").status_code == 401
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    # The access token alice holds stops working at once, not when it expires.
    for response in (alice.get("/api/auth/me"), alice.get("/api/jobs"), alice.post("/api/jobs", {"type": "noop"})):
        assert response.status_code == 401
        assert response.json["error"] == {"code": "UNAUTHORIZED", "message": "account disabled or removed",
                                          "details": {}}

    enabled = admin.post(f"/api/admin/users/{alice.user_id}/enable")
    assert enabled.status_code == 200 and enabled.json["data"]["disabled_at"] is None
    assert alice.get("/api/auth/me").status_code == 200
    assert _login(app, "alice@example.org").status_code == 200
    # Refresh tokens revoked by the disable stay revoked.
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401


def test_disable_and_enable_unknown_account_is_404(admin):
    assert admin.post("/api/admin/users/99999/disable").status_code == 404
    assert admin.post("/api/admin/users/99999/enable").status_code == 404


def test_service_accounts_list_and_rotate(app, admin, alice):
    created = admin.post("/api/admin/service-accounts", {"name": "pool-a", "role": "WORKER"}).json["data"]
    admin.post("/api/admin/service-accounts", {"name": "scaler", "role": "MANAGER"})
    listed = admin.get("/api/admin/service-accounts?sort=email")
    assert listed.status_code == 200
    assert [a["email"] for a in listed.json["data"]] == ["pool-a@service.skyfleet.internal",
                                                         "scaler@service.skyfleet.internal"]
    assert listed.json["meta"]["pagination"]["total"] == 2
    assert all("password" not in a for a in listed.json["data"])

    old_password = created["password"]
    refresh = _login(app, created["email"], old_password).json["data"]["refresh_token"]
    rotated = admin.post(f"/api/admin/service-accounts/{created['id']}/rotate")
    assert rotated.status_code == 200
    new_password = rotated.json["data"]["password"]
    assert new_password and new_password != old_password
    assert _login(app, created["email"], old_password).status_code == 401
    assert _login(app, created["email"], new_password).status_code == 200
    assert app.test_client().post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    # Only service accounts rotate; a person's id is not one.
    assert admin.post(f"/api/admin/service-accounts/{alice.user_id}/rotate").status_code == 404


def _admin_requests(user_id: int) -> list[tuple[str, str, Any]]:
    return [
        ("GET", "/api/admin/users", None),
        ("POST", "/api/admin/users", {"email": "eve@example.org"}),
        ("GET", f"/api/admin/users/{user_id}", None),
        ("PATCH", f"/api/admin/users/{user_id}", {"name": "x"}),
        ("POST", f"/api/admin/users/{user_id}/disable", None),
        ("POST", f"/api/admin/users/{user_id}/enable", None),
        ("GET", "/api/admin/service-accounts", None),
        ("POST", "/api/admin/service-accounts", {"name": "x", "role": "WORKER"}),
        ("POST", f"/api/admin/service-accounts/{user_id}/rotate", None),
    ]


def test_only_admins_reach_account_management(app, admin, alice, worker_account):
    manager = make_account(app, MANAGER_EMAIL, [Role.MANAGER], is_service=True)
    for who in (alice, worker_account, manager):
        for method, path, body in _admin_requests(worker_account.user_id):
            response = who.client.open(path, method=method, json=body,
                                       headers={"Authorization": f"Bearer {who.token}"})
            assert response.status_code == 403, (method, path, who.user_id)
            assert response.json["error"]["code"] == "FORBIDDEN"
    for method, path, body in _admin_requests(worker_account.user_id):
        assert app.test_client().open(path, method=method, json=body).status_code == 401
    # Nothing was changed by the refused calls.
    assert admin.get(f"/api/admin/users/{worker_account.user_id}").json["data"]["disabled_at"] is None


def test_service_accounts_cannot_use_user_routes(worker_account):
    for response in (worker_account.get("/api/jobs"), worker_account.post("/api/jobs", {"type": "noop"}),
                     worker_account.get("/api/jobs/1"), worker_account.post("/api/jobs/1/cancel")):
        assert response.status_code == 403
