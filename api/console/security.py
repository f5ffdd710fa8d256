"""The console's response headers and its sign-in gate."""

from __future__ import annotations

from flask import Response, redirect, request, url_for

from api.auth.guards import Caller, current_session, session_identity
from api.errors import Unauthorized

#: No inline script or style, nothing from another origin, no framing, forms only to us.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def secure_headers(response: Response) -> Response:
    """Headers of every console response."""
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def https() -> bool:
    """Whether the browser reached us over HTTPS (behind a trusted proxy: as it says): cookies are Secure then."""
    return request.is_secure


class SignInNeeded(Exception):
    """The page needs a signed-in browser: answered with a redirect to the sign-in page."""


def page_caller() -> Caller:
    """Who is looking at this page; :class:`SignInNeeded` without a live session."""
    try:
        identity = session_identity()
    except Unauthorized:
        identity = None
    if identity is None:
        raise SignInNeeded()
    return Caller(identity.user_id, identity.roles)


def csrf_token() -> str:
    session = current_session()
    return session.csrf_token if session is not None else ""


def to_sign_in() -> Response:
    target = request.full_path.rstrip("?") if request.method == "GET" else "/"
    return redirect(url_for("console.login", next=target))  # type: ignore[return-value]
