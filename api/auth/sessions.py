"""Browser sessions of the web console: an HttpOnly cookie, and a CSRF token the page sends back.

A browser signs in with an account's email and password (``POST /login``, the same check and
login limits as ``/api/auth/login``) and gets a cookie holding a random session id; the
database keeps only its SHA-256 (:class:`~api.auth.sessions_model.ConsoleSession`), so a
read of the table signs nobody in. The cookie is ``HttpOnly`` (no script reads it),
``SameSite=Strict`` (no other site's page sends it) and ``Secure`` behind HTTPS. With it, the
browser reaches the same public API a bearer token does (:func:`api.auth.guards.require_roles`),
but every state-changing request must also carry the session's CSRF token in ``X-CSRF-Token``,
which only the console's own pages know. Sessions end after :data:`IDLE_S` without a request,
or :data:`LIFETIME_S` after sign-in, or at sign-out (the row is deleted, at once for every
process). A disabled account's session stops working with its tokens (the identity cache).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from flask import Request
from sqlalchemy import Connection, text
from werkzeug.wrappers import Response

SESSION_COOKIE = "skyfleet_session"
CSRF_HEADER = "X-CSRF-Token"
#: A session unused this long has ended.
IDLE_S = 8 * 3600
#: A session ends this long after sign-in, however active.
LIFETIME_S = 7 * 86400
#: ``last_seen_at`` is rewritten at most this often (not on every request).
SEEN_EVERY_S = 60
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    user_id: int
    csrf_token: str


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def open_session(conn: Connection, user_id: int) -> tuple[str, Session]:
    """A new session for the account: (the cookie's value, the session). Its ended sessions go."""
    session_id, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(text("""
        DELETE FROM console_sessions
        WHERE user_id = :user_id AND (expires_at <= now() OR last_seen_at <= now() - make_interval(secs => :idle))
    """), {"user_id": user_id, "idle": IDLE_S})
    conn.execute(text("""
        INSERT INTO console_sessions (id_hash, user_id, csrf_token, expires_at)
        VALUES (:id_hash, :user_id, :csrf, now() + make_interval(secs => :lifetime))
    """), {"id_hash": _hash(session_id), "user_id": user_id, "csrf": csrf, "lifetime": LIFETIME_S})
    return session_id, Session(user_id, csrf)


def find_session(conn: Connection, session_id: str) -> Session | None:
    """The live session with this cookie value (marking it seen now and then), or None."""
    row = conn.execute(text("""
        WITH live AS (
            SELECT id_hash, user_id, csrf_token, last_seen_at FROM console_sessions
            WHERE id_hash = :id_hash AND expires_at > now()
              AND last_seen_at > now() - make_interval(secs => :idle)
        ), seen AS (
            UPDATE console_sessions s SET last_seen_at = now() FROM live
            WHERE s.id_hash = live.id_hash AND live.last_seen_at < now() - make_interval(secs => :every)
        )
        SELECT user_id, csrf_token FROM live
    """), {"id_hash": _hash(session_id), "idle": IDLE_S, "every": SEEN_EVERY_S}).one_or_none()
    return None if row is None else Session(int(row.user_id), row.csrf_token)


def close_session(conn: Connection, session_id: str) -> None:
    conn.execute(text("DELETE FROM console_sessions WHERE id_hash = :id_hash"), {"id_hash": _hash(session_id)})


def close_user_sessions(conn: Connection, user_id: int) -> int:
    """End every console session of an account (its password changed, it was disabled)."""
    return int(conn.execute(text("DELETE FROM console_sessions WHERE user_id = :u"), {"u": user_id}).rowcount)


def prune_sessions(conn: Connection) -> int:
    """Delete the sessions that have ended; how many."""
    return int(conn.execute(text("""
        DELETE FROM console_sessions
        WHERE expires_at <= now() OR last_seen_at <= now() - make_interval(secs => :idle)
    """), {"idle": IDLE_S}).rowcount)


def csrf_ok(request: Request, session: Session) -> bool:
    """Whether a request may go through: a safe method, or the session's CSRF token in its header
    (or, for the console's plain forms, in the form field ``csrf_token``)."""
    if request.method in SAFE_METHODS:
        return True
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent and request.mimetype == "application/x-www-form-urlencoded":
        sent = request.form.get("csrf_token", "")
    return bool(sent) and hmac.compare_digest(sent.encode(), session.csrf_token.encode())


def set_cookie(response: Response, name: str, value: str, secure: bool, max_age: int | None = LIFETIME_S) -> None:
    """An HttpOnly, SameSite=Strict cookie for the whole site (Secure behind HTTPS)."""
    response.set_cookie(name, value, max_age=max_age, path="/", secure=secure, httponly=True, samesite="Strict")


def forget_cookie(response: Response, name: str, secure: bool) -> None:
    response.set_cookie(name, "", max_age=0, expires=0, path="/", secure=secure, httponly=True, samesite="Strict")
