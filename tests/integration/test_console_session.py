"""The console's sign-in: session cookie, CSRF, CSP, roles (Flask's test client; the browser
tests in tests/acceptance/test_console_browser.py drive the same pages in Chromium)."""

from __future__ import annotations

import itertools
import re

import pytest

from api.auth.models import Role
from api.auth.sessions import SESSION_COOKIE
from api.console.security import CONTENT_SECURITY_POLICY
from tests.integration.conftest import PASSWORD, make_account


def sign_in(app, email: str, password: str = PASSWORD):
    """A test client signed in to the console; (client, csrf token)."""
    client = app.test_client()
    page = client.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    answer = client.post("/login", data={"email": email, "password": password, "nonce": nonce, "next": "/jobs"})
    assert answer.status_code == 302, answer.text
    assert answer.headers["Location"] == "/jobs"
    overview = client.get("/overview")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', overview.text).group(1)
    return client, csrf


def test_the_session_cookie_is_httponly_and_strict(app, alice):
    client = app.test_client()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/login").text).group(1)
    answer = client.post("/login", data={"email": "alice@example.org", "password": PASSWORD, "nonce": nonce})
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith(f"{SESSION_COOKIE}="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure behind HTTPS (next test)


def test_behind_https_the_cookie_is_secure(app, alice):
    client = app.test_client()
    page = client.get("/login", base_url="https://console.example")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text).group(1)
    answer = client.post("/login", base_url="https://console.example",
                         data={"email": "alice@example.org", "password": PASSWORD, "nonce": nonce})
    cookie = next(c for c in answer.headers.getlist("Set-Cookie") if c.startswith(f"{SESSION_COOKIE}="))
    assert "Secure" in cookie


def test_pages_carry_a_strict_csp_and_no_inline_script(app, alice):
    client, _ = sign_in(app, "alice@example.org")
    for path in ("/login", "/overview", "/jobs", "/submit", "/submit/sources.detect", "/files"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self'" in CONTENT_SECURITY_POLICY and "unsafe-inline" not in CONTENT_SECURITY_POLICY
        assert page.headers["X-Frame-Options"] == "DENY"
        assert re.search(r"<script(?![^>]*\bsrc=)", page.text) is None, f"inline script on {path}"


def test_signed_out_pages_lead_to_sign_in(app):
    answer = app.test_client().get("/jobs?status=FAILED")
    assert answer.status_code == 302 and answer.headers["Location"].startswith("/login?next=")


def test_wrong_password_and_stale_form_are_refused(app, alice):
    client = app.test_client()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/login").text).group(1)
    wrong = client.post("/login", data={"email": "alice@example.org", "password": "nope", "nonce": nonce})
    assert wrong.status_code == 401 and "Wrong email or password" in wrong.text
    forged = app.test_client().post("/login", data={"email": "alice@example.org", "password": PASSWORD,
                                                    "nonce": "made-up"})
    assert forged.status_code == 400 and SESSION_COOKIE not in forged.headers.get("Set-Cookie", "")


def test_state_changes_need_the_csrf_token(app, alice):
    client, csrf = sign_in(app, "alice@example.org")
    body = {"type": "noop", "input_payload": {"tag": "csrf"}}
    refused = client.post("/api/jobs", json=body)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "CSRF_FAILED"
    wrong = client.post("/api/jobs", json=body, headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    created = client.post("/api/jobs", json=body, headers={"X-CSRF-Token": csrf})
    assert created.status_code == 201
    assert client.get(f"/api/jobs/{created.json['data']['id']}").status_code == 200  # reads need no token
    assert client.post("/logout").status_code == 403  # sign-out is a state change too


def test_sign_out_ends_the_session_everywhere(app, alice):
    client, csrf = sign_in(app, "alice@example.org")
    stolen = client.get_cookie(SESSION_COOKIE).value
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    other = app.test_client()
    other.set_cookie(SESSION_COOKIE, stolen)
    assert other.get("/api/jobs").status_code == 401
    assert other.get("/overview").status_code == 302


def test_another_users_job_is_a_404_page(app, alice, bob):
    job = alice.post("/api/jobs", {"type": "noop", "input_payload": {"tag": "mine"}}).json["data"]
    client, _ = sign_in(app, "bob@example.org")
    page = client.get(f"/jobs/{job['id']}")
    assert page.status_code == 404 and 'id="not-found"' in page.text and "mine" not in page.text
    assert client.get(f"/api/jobs/{job['id']}").status_code == 404
    own, _ = sign_in(app, "alice@example.org")
    assert own.get(f"/jobs/{job['id']}").status_code == 200


def test_a_viewer_reads_admin_views_and_changes_nothing(app, admin):
    make_account(app, "vera@example.org", [Role.VIEWER])
    client, csrf = sign_in(app, "vera@example.org")
    overview = client.get("/overview")
    assert 'id="queues"' in overview.text and ">Submit<" not in overview.text
    assert client.get("/fleet").status_code == 200
    assert client.get("/api/admin/queues").status_code == 200
    scaled = client.post("/api/admin/scale", json={"pool": "local", "count": 1}, headers={"X-CSRF-Token": csrf})
    assert scaled.status_code == 403
    submitted = client.post("/api/jobs", json={"type": "noop"}, headers={"X-CSRF-Token": csrf})
    assert submitted.status_code == 403


def test_service_accounts_cannot_sign_in_to_the_console(app):
    make_account(app, "robot@service.skyfleet.internal", [Role.WORKER], is_service=True)
    client = app.test_client()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/login").text).group(1)
    answer = client.post("/login", data={"email": "robot@service.skyfleet.internal", "password": PASSWORD,
                                         "nonce": nonce})
    assert answer.status_code == 401


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example/x", "javascript:alert(1)",
                                    "/\\evil.example", "/\tevil", "/\r\nSet-Cookie:x"])
def test_sign_in_never_redirects_off_site(app, alice, target):
    client = app.test_client()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/login").text).group(1)
    answer = client.post("/login", data={"email": "alice@example.org", "password": PASSWORD, "nonce": nonce,
                                         "next": target})
    assert answer.headers["Location"] == "/overview"


def test_the_jobs_page_keeps_its_filters_in_the_url(app, alice):
    for tag in ("andromeda", "orion", "andromeda-2"):
        alice.post("/api/jobs", {"type": "noop", "input_payload": {"tag": tag}})
    client, _ = sign_in(app, "alice@example.org")
    page = client.get("/jobs?q=andromeda&since=day&sort=id&status=PENDING")
    assert page.status_code == 200
    rows = re.findall(r'<a href="/jobs/(\d+)">', page.text)
    assert len(rows) == 2
    assert 'value="andromeda"' in page.text and '<option value="day" selected>' in page.text
    assert '"q": "andromeda"' in page.text  # the filter the bulk actions may act on
    # Hostile or unknown values fall back to no filter rather than an error.
    assert client.get("/jobs?status=<script>&sort=;drop&since=century&page=-4&q=" + "x" * 500).status_code == 200


def test_the_tab_stream_says_when_the_shown_job_changes_then_ends(app, alice, monkeypatch):
    import api.console.stream as stream_module

    monkeypatch.setattr(stream_module, "TICK_S", 0.2)
    job = alice.post("/api/jobs", {"type": "sleep", "input_payload": {"seconds": 60, "tag": "follow"}}).json["data"]
    client, csrf = sign_in(app, "alice@example.org")
    response = client.get(f"/console/events?job={job['id']}", buffered=False)
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    chunks = iter(response.response)
    assert next(chunks) == b"retry: 3000\n\n"
    assert b"event: job" in next(chunks)  # at once: the job may have changed since the page was drawn
    # (Another job event may come: the listener wakes every stream when it (re)connects.)
    assert any(b"event: tick" in next(chunks) for _ in range(3))  # the overview's clock
    assert client.post(f"/api/jobs/{job['id']}/cancel", headers={"X-CSRF-Token": csrf}).status_code == 200
    rest = list(itertools.islice(chunks, 10))  # the job event, then the stream ends (the job is over)
    assert any(b"event: job" in e for e in rest) and len(rest) < 10, rest
    response.close()
    # The job is over: a page drawn before its end hears one job event (and the stream ends);
    # the browser's reconnect (it sends Last-Event-ID) hears 204 and stops.
    late = client.get(f"/console/events?job={job['id']}")
    assert late.status_code == 200 and b"event: job" in late.data
    assert client.get(f"/console/events?job={job['id']}", headers={"Last-Event-ID": "1"}).status_code == 204
    other, _ = sign_in(app, "alice@example.org")
    assert other.get("/console/events?job=999999").status_code == 404
    assert other.get("/console/events?job=99999999999999999999999").status_code == 404
    assert other.get("/console/events?job=-1").status_code == 404
    assert app.test_client().get("/console/events").status_code == 302  # signed out: to sign-in


def test_a_jobs_page_shows_its_callback_deliveries(app, alice, engine):
    from sqlalchemy import text

    job = alice.post("/api/jobs", {"type": "noop", "input_payload": {"tag": "hook"},
                                   "callback_url": "https://hooks.example.org/skyfleet"}).json["data"]
    with engine.begin() as conn:  # as a report would end it: the trigger writes the delivery
        conn.execute(text("UPDATE jobs SET status = 'CANCELLED', finished_at = now() WHERE id = :id"),
                     {"id": job["id"]})
    client, _ = sign_in(app, "alice@example.org")
    page = client.get(f"/jobs/{job['id']}")
    assert 'id="callbacks"' in page.text and "https://hooks.example.org/skyfleet" in page.text
    assert ">CANCELLED<" in page.text and 'id="retry"' in page.text


def test_ended_sessions_are_pruned(app, alice, engine):
    from sqlalchemy import text

    from api.maintenance.records import ConsoleSessionPruner

    sign_in(app, "alice@example.org")
    sign_in(app, "alice@example.org")
    with engine.begin() as conn:  # one idle for nine hours
        conn.execute(text("UPDATE console_sessions SET last_seen_at = now() - interval '9 hours' "
                          "WHERE id_hash = (SELECT min(id_hash) FROM console_sessions)"))
    assert ConsoleSessionPruner(engine).run_once().deleted == 1
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM console_sessions")).scalar_one() == 1



@pytest.mark.parametrize("fields", [
    {"nonce": "é" * 10},  # not ASCII: compared as bytes, not a 500
    {"email": "a" * 100_000},
    {"password": "p" * 100_000},
    {"email": "\x00"},
])
def test_hostile_sign_in_forms_are_refused_cleanly(app, alice, fields):
    client = app.test_client()
    nonce = re.search(r'name="nonce" value="([^"]+)"', client.get("/login").text).group(1)
    answer = client.post("/login", data={"email": "alice@example.org", "password": PASSWORD, "nonce": nonce} | fields)
    assert answer.status_code in (400, 401, 422) and SESSION_COOKIE not in answer.headers.get("Set-Cookie", "")


@pytest.mark.parametrize("path", ["/jobs?q=%00", "/jobs?q=a%00b&status=%00", "/files?q=%00", "/jobs/1%00",
                                  "/submit/%00", "/jobs?since=%00&sort=%00"])
def test_hostile_query_strings_never_500(app, alice, path):
    client, _ = sign_in(app, "alice@example.org")
    assert client.get(path).status_code in (200, 404)


@pytest.mark.parametrize("path", ["/api/jobs?q=%00", "/api/files?q=%00"])
def test_hostile_api_filters_are_422(alice, path):
    answer = alice.get(path)
    assert answer.status_code == 422, answer.json
