"""Login, tokens, rotation with reuse detection, and roles on every endpoint."""

from __future__ import annotations

import datetime as dt

import jwt as pyjwt
import pytest

from api.config import generate_private_key_pem, public_key_pem
from tests.helpers import count
from tests.integration.conftest import PASSWORD, submit


def _login(client, email, password=PASSWORD):
    return client.post("/api/auth/login", json={"email": email, "password": password})


def test_login_is_case_insensitive_and_wrong_password_is_401(app, alice):
    client = app.test_client()
    assert _login(client, "  ALICE@example.org ").status_code == 200
    response = _login(client, "alice@example.org", "wrong password")
    assert response.status_code == 401 and response.json["error"]["code"] == "UNAUTHORIZED"
    assert _login(client, "nobody@example.org").status_code == 401


def test_me(alice):
    me = alice.get("/api/auth/me").json["data"]
    assert me["email"] == "alice@example.org" and me["roles"] == ["USER"]


def test_refresh_rotates_and_reuse_revokes_the_family(app, alice):
    client = app.test_client()
    first = _login(client, "alice@example.org").json["data"]["refresh_token"]
    second = client.post("/api/auth/refresh", json={"refresh_token": first}).json["data"]["refresh_token"]
    assert second != first
    third_response = client.post("/api/auth/refresh", json={"refresh_token": second})
    assert third_response.status_code == 200
    third = third_response.json["data"]["refresh_token"]
    # Replaying a rotated token: rejected, and the newest token of the family dies with it.
    replay = client.post("/api/auth/refresh", json={"refresh_token": first})
    assert replay.status_code == 401 and "reuse" in replay.json["error"]["message"]
    assert client.post("/api/auth/refresh", json={"refresh_token": third}).status_code == 401


def test_logout_revokes(app, alice):
    client = app.test_client()
    refresh = _login(client, "alice@example.org").json["data"]["refresh_token"]
    assert client.post("/api/auth/logout", json={"refresh_token": refresh}).status_code == 200
    assert client.post("/api/auth/refresh", json={"refresh_token": refresh}).status_code == 401


def test_missing_expired_and_tampered_tokens_are_rejected(app, alice, jwt_private_key):
    client = app.test_client()
    assert client.get("/api/jobs/1").status_code == 401
    expired = pyjwt.encode({"sub": str(alice.user_id), "roles": ["USER"], "type": "access", "fresh": False,
                            "jti": "x", "iat": 0, "nbf": 0, "exp": int(dt.datetime(2000, 1, 1).timestamp())},
                           jwt_private_key, algorithm="RS256")
    claims = {"sub": str(alice.user_id), "roles": ["ADMIN"], "type": "access", "fresh": False,
              "jti": "y", "iat": 0, "nbf": 0, "exp": 4102444800}
    forged = pyjwt.encode(claims, generate_private_key_pem(2048), algorithm="RS256")
    # The classic confusion attack: HS256 "signed" with the public key must not pass.
    public = public_key_pem(jwt_private_key).encode()
    confused = pyjwt.encode(claims, "x" * 64, algorithm="HS256")
    unsigned = pyjwt.encode(claims, None, algorithm="none")
    head, payload, signature = alice.token.split(".")
    tampered = ".".join([head, payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB"), signature])
    assert public.startswith(b"-----BEGIN PUBLIC KEY")
    for token in (expired, forged, confused, unsigned, tampered, "garbage"):
        response = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
        assert response.json["error"]["code"] == "UNAUTHORIZED"


def test_roles_are_checked(alice, worker_account, admin):
    # Workers cannot use user endpoints; users cannot use worker or admin endpoints.
    assert worker_account.post("/api/jobs", {"type": "noop"}).status_code == 403
    assert worker_account.get("/api/jobs").status_code == 403
    assert alice.post("/api/workers", {"name": "x", "job_types": ["noop"]}).status_code == 403
    assert alice.post("/api/admin/users", {"email": "eve@example.org"}).status_code == 403
    assert worker_account.post("/api/admin/service-accounts", {"name": "x", "role": "WORKER"}).status_code == 403
    assert submit(admin, "noop")["status"] == "PENDING"


def test_admin_creates_service_accounts_that_can_log_in(app, admin):
    response = admin.post("/api/admin/service-accounts", {"name": "pool-a", "role": "WORKER"})
    assert response.status_code == 201
    account = response.json["data"]
    assert account["email"] == "pool-a@service.skyfleet.internal" and account["roles"] == ["WORKER"]
    login = _login(app.test_client(), account["email"], account["password"])
    assert login.status_code == 200
    again = admin.post("/api/admin/service-accounts", {"name": "pool-a", "role": "WORKER"})
    assert again.status_code == 409
    bad = admin.post("/api/admin/service-accounts", {"name": "Pool A", "role": "ADMIN"})
    assert bad.status_code == 422 and set(bad.json["error"]["details"]["fields"]) == {"name", "role"}


@pytest.mark.parametrize("password", [None, "a long enough password"])
def test_admin_creates_users(app, admin, password):
    body = {"email": "carol@example.org", "roles": ["USER"]} | ({"password": password} if password else {})
    created = admin.post("/api/admin/users", body).json["data"]
    assert (created["password"] is None) == (password is not None)
    assert _login(app.test_client(), "carol@example.org", password or created["password"]).status_code == 200


def _register(client, **body):
    return client.post("/api/auth/register", json=body)


def test_register_then_log_in(app):
    client = app.test_client()
    response = _register(client, email="  Carol.Jones@Example.ORG ", password="a fine long passphrase", name="Carol")
    assert response.status_code == 201, response.json
    account = response.json["data"]
    assert account["email"] == "carol.jones@example.org" and account["roles"] == ["USER"]
    assert account["name"] == "Carol" and account["is_service"] is False and account["disabled_at"] is None
    assert "access_token" not in account and "password" not in account
    login = _login(client, "CAROL.JONES@example.org", "a fine long passphrase")
    assert login.status_code == 200
    me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {login.json['data']['access_token']}"})
    assert me.json["data"]["id"] == account["id"]


def test_register_duplicate_email_is_409(app, alice):
    response = _register(app.test_client(), email="ALICE@example.org", password="a fine long passphrase")
    assert response.status_code == 409 and response.json["error"]["code"] == "CONFLICT"


@pytest.mark.parametrize("email", ["not-an-email", "alice@", "@example.org", "a b@example.org", "",
                                  "w9@service.skyfleet.internal"])
def test_register_bad_email_names_the_field(app, email):
    response = _register(app.test_client(), email=email, password="a fine long passphrase")
    assert response.status_code == 422
    details = response.json["error"]["details"]
    assert details["location"] == "json" and list(details["fields"]) == ["email"]


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "must be at least 12 characters long"),
    ("x" * 300, "must be at most 256 characters long"),
    ("password123456", "is one of the most commonly used passwords"),
    ("zzzzzzzzzzzzzzzz", "must not be one character or a short pattern repeated"),
    ("dave.brown@example.org", "must not be mostly your email address"),
])
def test_register_weak_password_names_the_field(app, engine, password, problem):
    response = _register(app.test_client(), email="dave.brown@example.org", password=password)
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert list(error["details"]["fields"]) == ["password"] and problem in error["details"]["fields"]["password"]
    assert count(engine, "users") == 0


def test_register_missing_fields(app):
    response = _register(app.test_client(), name="nobody")
    assert response.status_code == 422
    assert set(response.json["error"]["details"]["fields"]) == {"email", "password"}


def test_register_when_closed_is_403(app_factory):
    closed = app_factory(registration="closed")
    response = _register(closed.test_client(), email="erin@example.org", password="a fine long passphrase")
    assert response.status_code == 403
    assert response.json["error"]["code"] == "FORBIDDEN" and "registration is closed" in response.json["error"]["message"]


def test_password_minimum_is_configurable(app_factory):
    strict = app_factory(password_min_length=30)
    response = _register(strict.test_client(), email="fay@example.org", password="a fine long passphrase")
    assert response.json["error"]["details"]["fields"]["password"] == ["must be at least 30 characters long"]
