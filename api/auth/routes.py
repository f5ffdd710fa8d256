"""``/api/auth``: register, login, refresh (rotating), logout, me."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth import service
from api.auth.guards import BEARER, access_token_for, caller, require_roles
from api.auth.models import Role
from api.auth.passwords import require_acceptable_password
from api.auth.schemas import (
    AccountSchema,
    EmptySchema,
    LoginSchema,
    RefreshSchema,
    RegisterSchema,
    TokensSchema,
)
from api.context import ctx
from api.envelope import envelope, ok
from api.errors import Forbidden, Unauthorized
from api.ratelimit.hooks import limit_login_attempt, limit_registration, record_failed_login

blp = Blueprint("auth", __name__, url_prefix="/api/auth", description="Log in and manage tokens.")


def _tokens(account: service.Account, refresh_token: str) -> dict[str, Any]:
    return {
        "access_token": access_token_for(account.id, account.roles),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": ctx().settings.access_token_ttl_s,
    }


@blp.route("/register")
class Register(MethodView):
    @blp.arguments(RegisterSchema)
    @blp.response(201, envelope(AccountSchema))
    @blp.alt_response(403, description="Registration is closed on this deployment.")
    @blp.alt_response(409, description="An account with this email exists.")
    @blp.alt_response(422, description="Invalid email, or the password breaks the policy (each problem listed).")
    @blp.alt_response(429, description="Too many registrations from this address.")
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create a USER account (when registration is open); then log in with it.

        The email is stored trimmed and lower-cased. The password must have at least the
        configured number of characters (12 by default), at most 256, and must not be a common
        password, one character repeated, or mostly the email address.
        """
        c = ctx()
        if c.settings.registration != "open":
            raise Forbidden("registration is closed; ask an administrator for an account")
        limit_registration()
        require_acceptable_password(body["password"], body["email"], c.settings.password_min_length)
        with c.transaction() as conn:
            account = service.create_user(conn, body["email"], body["password"], [Role.USER], body["name"])
        return ok(asdict(account)), 201


@blp.route("/login")
class Login(MethodView):
    @blp.arguments(LoginSchema)
    @blp.response(200, envelope(TokensSchema))
    @blp.alt_response(401, description="Wrong email or password, or the account is disabled.")
    @blp.alt_response(429, description="Too many attempts for this account or from this address (service "
                                       "accounts: too many failed attempts from this address).")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Exchange email and password for an access token and a refresh token."""
        c = ctx()
        # Checked before the password is: a brute force meets a 429, not argon2.
        limit_login_attempt(body["email"])
        try:
            with c.transaction() as conn:
                account = service.authenticate(conn, body["email"], body["password"])
                refresh = service.issue_refresh_token(conn, account.id, c.settings.refresh_token_ttl_s)
        except Unauthorized:
            record_failed_login(body["email"])
            raise
        return ok(_tokens(account, refresh))


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, envelope(TokensSchema))
    @blp.alt_response(401, description="Invalid, expired or reused refresh token.")
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Rotate a refresh token: the old one stops working; reusing it revokes the login."""
        c = ctx()
        try:
            with c.transaction() as conn:
                account, refresh = service.rotate_refresh_token(
                    conn, body["refresh_token"], c.settings.refresh_token_ttl_s
                )
        except service.TokenReuse as reuse:
            with c.transaction() as conn:
                service.revoke_family(conn, reuse.family_id)
            raise
        return ok(_tokens(account, refresh))


@blp.route("/logout")
class Logout(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, envelope(EmptySchema))
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Revoke a refresh token (and every token rotated from the same login)."""
        with ctx().transaction() as conn:
            service.revoke_refresh_token(conn, body["refresh_token"])
        return ok({})


@blp.route("/me")
class Me(MethodView):
    @require_roles(*Role)
    @blp.response(200, envelope(AccountSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """The account the access token belongs to."""
        with ctx().transaction() as conn:
            return ok(service.get_account(conn, caller().user_id))
