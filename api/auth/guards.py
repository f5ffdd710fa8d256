"""JWT setup and the role check every endpoint goes through."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, current_app, g, request
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_current_user,
    get_jwt,
    verify_jwt_in_request,
)

from api.auth import identity_cache
from api.auth.models import Role
from api.auth.service import Identity, active_identity
from api.auth.sessions import SESSION_COOKIE, Session, csrf_ok, find_session
from api.auth.token_cache import VerifiedTokens
from api.config import Settings, public_key_pem
from api.context import ctx
from api.envelope import error_response
from api.errors import CsrfFailed, Forbidden, Unauthorized

F = TypeVar("F", bound=Callable[..., Any])

#: Where the app's :class:`VerifiedTokens` live in ``app.extensions``.
TOKENS_KEY = "skyfleet_verified_tokens"

#: Marker read by the OpenAPI spec: endpoints behind a role need a bearer token.
BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


@dataclass(frozen=True)
class Caller:
    """Who is making the request, from the access token."""

    user_id: int
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return Role.ADMIN in self.roles


def init_jwt(app: Flask, settings: Settings) -> None:
    app.config["JWT_ALGORITHM"] = "RS256"
    app.config["JWT_DECODE_ALGORITHMS"] = ["RS256"]
    app.config["JWT_PRIVATE_KEY"] = settings.jwt_private_key
    app.config["JWT_PUBLIC_KEY"] = public_key_pem(settings.jwt_private_key)
    app.config["JWT_ACCESS_TOKEN_EXPIRES"] = dt.timedelta(seconds=settings.access_token_ttl_s)
    app.config["JWT_TOKEN_LOCATION"] = ["headers"]
    jwt = JWTManager(app)
    identity_cache.install(app)
    app.extensions[TOKENS_KEY] = VerifiedTokens()

    # Every token problem renders as our 401 envelope.
    def reject(message: str) -> Any:
        return error_response(Unauthorized.status, Unauthorized.code, message)

    jwt.unauthorized_loader(lambda reason: reject(f"missing access token ({reason})"))
    jwt.invalid_token_loader(lambda reason: reject(f"invalid access token ({reason})"))
    jwt.expired_token_loader(lambda header, payload: reject("access token expired; refresh it"))
    jwt.revoked_token_loader(lambda header, payload: reject("access token revoked"))
    jwt.needs_fresh_token_loader(lambda header, payload: reject("fresh login required"))
    jwt.user_lookup_loader(_load_identity)
    jwt.user_lookup_error_loader(lambda header, payload: reject("account disabled or removed"))


def _load_identity(header: dict[str, Any], payload: dict[str, Any]) -> Identity | None:
    """The token's account as it is now (None: disabled or removed), give or take
    :data:`~api.auth.identity_cache.IDENTITY_TTL_S`: disabling an account or changing its roles
    takes effect at once on the API process that made the change and within that TTL on the
    others, not when its access tokens expire.

    Read from the app's :class:`~api.auth.identity_cache.IdentityCache`, which reads the account
    by primary key (on an autocommit connection: one round trip) about once per TTL, and kept in
    ``g`` for the rest of the request (the rate limiter and the role check both verify the token).
    """
    try:
        user_id = int(payload["sub"])
    except (KeyError, TypeError, ValueError):
        return None
    return _account(user_id)


def _account(user_id: int) -> Identity | None:
    """The account as the identity cache has it, kept in ``g`` for the rest of the request."""
    cached: Identity | None = g.get("skyfleet_identity")
    if cached is not None and cached.user_id == user_id:
        return cached
    identity = identity_cache.identity_cache().get(user_id, _read_identity)
    if identity is not None:
        g.skyfleet_identity = identity
    return identity


def _read_identity(user_id: int) -> Identity | None:
    with ctx().engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT")
        return active_identity(conn, user_id)


def access_token_for(user_id: int, roles: list[str]) -> str:
    return create_access_token(identity=str(user_id), additional_claims={"roles": roles})


def require_roles(*roles: Role) -> Callable[[F], F]:
    """Allow the request only with a valid access token of an enabled account that has one of
    ``roles`` (its roles as stored now, give or take the identity cache's TTL, not as they were
    when the token was issued)."""
    allowed = {r.value for r in roles}

    def decorate(view: F) -> F:
        @wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            identity = _authenticate()
            if not identity.roles & allowed:
                raise Forbidden(f"this endpoint needs one of the roles {sorted(allowed)}")
            g.caller = Caller(identity.user_id, identity.roles)
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorate


def current_session() -> Session | None:
    """The console session the request's cookie names, if it is live (read once per request)."""
    if "skyfleet_session" not in g:
        cookie = request.cookies.get(SESSION_COOKIE)
        session = None
        if cookie:
            with ctx().read() as conn:
                session = find_session(conn, cookie)
        g.skyfleet_session = session
    found: Session | None = g.skyfleet_session
    return found


def session_identity() -> Identity | None:
    """The account of the request's console session (None without one); 403 ``CSRF_FAILED`` for
    a state-changing request without the session's CSRF token, 401 if the account was disabled."""
    session = current_session()
    if session is None:
        return None
    if not csrf_ok(request, session):
        raise CsrfFailed("missing or wrong X-CSRF-Token for this signed-in session")
    identity = _account(session.user_id)
    if identity is None:
        raise Unauthorized("account disabled or removed")
    return identity


def _authenticate() -> Identity:
    """The request's account: from a bearer token this process verified before (see
    :mod:`api.auth.token_cache`), else verified now by flask-jwt-extended and remembered; without
    an ``Authorization`` header, from the console's session cookie (:mod:`api.auth.sessions`)."""
    verified: VerifiedTokens = current_app.extensions[TOKENS_KEY]
    header = request.headers.get("Authorization", "")
    token = header[7:] if header[:7].lower() == "bearer " else ""
    if not header:
        from_session = session_identity()
        if from_session is not None:
            return from_session
    user_id = verified.user_of(token) if token else None
    if user_id is not None:
        identity = _account(user_id)
        if identity is None:
            raise Unauthorized("account disabled or removed")
        return identity
    verify_jwt_in_request()
    checked: Identity = get_current_user()
    claims = get_jwt()
    if token and claims.get("type") == "access" and isinstance(claims.get("exp"), int | float):
        verified.remember(token, checked.user_id, float(claims["exp"]))
    return checked


def caller() -> Caller:
    """The authenticated caller of this request (after :func:`require_roles`)."""
    who: Caller = g.caller
    return who
