"""``/api/admin``: accounts and service accounts (admins only, every route).

The ``blp`` blueprint here is the admin blueprint; other admin modules add their routes to it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.admin.schemas import (
    AdminAccountSchema,
    CreatedAccountSchema,
    ServiceAccountCreateSchema,
    ServiceAccountListArgs,
    UserCreateSchema,
    UserListArgs,
    UserUpdateSchema,
)
from api.auth import accounts
from api.auth import service as auth
from api.auth.guards import BEARER, caller, require_roles
from api.auth.identity_cache import identity_changes
from api.auth.models import Role
from api.auth.passwords import require_acceptable_password
from api.context import ctx
from api.envelope import envelope, ok
from api.pagination import pagination

blp = Blueprint("admin", __name__, url_prefix="/api/admin", description="Administration (role ADMIN).")


def _page(where: accounts.AccountFilter, args: dict[str, Any]) -> dict[str, Any]:
    with ctx().transaction() as conn:
        found, total = accounts.list_accounts(conn, where, args["page"], args["limit"], args["sort"])
    return ok([asdict(a) for a in found], {"pagination": pagination(args["page"], args["limit"], total)})


@blp.route("/users")
class Users(MethodView):
    @require_roles(Role.ADMIN)
    @blp.arguments(UserListArgs, location="query")
    @blp.response(200, envelope(AdminAccountSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List accounts (people and service accounts), newest first; ``meta.pagination``."""
        role = args["role"].value if args["role"] else None
        where = accounts.AccountFilter(role=role, is_service=args["is_service"], disabled=args["disabled"],
                                       q=args["q"])
        return _page(where, args)

    @require_roles(Role.ADMIN)
    @blp.arguments(UserCreateSchema)
    @blp.response(201, envelope(CreatedAccountSchema))
    @blp.alt_response(409, description="The email is taken.")
    @blp.alt_response(422, description="Invalid email or roles, or the password breaks the policy.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create a person's account with the given roles (password generated when omitted)."""
        c = ctx()
        if body["password"] is not None:
            require_acceptable_password(body["password"], body["email"], c.settings.password_min_length)
        password = body["password"] or auth.generate_password()
        with c.transaction() as conn:
            account = auth.create_user(conn, body["email"], password, body["roles"], body["name"])
        shown = None if body["password"] else password
        return ok(asdict(account) | {"password": shown}), 201


@blp.route("/users/<int:user_id>")
class UserDetail(MethodView):
    @require_roles(Role.ADMIN)
    @blp.response(200, envelope(AdminAccountSchema))
    @blp.alt_response(404, description="No such account.")
    @blp.doc(security=BEARER)
    def get(self, user_id: int) -> dict[str, Any]:
        """One account."""
        with ctx().transaction() as conn:
            return ok(asdict(accounts.find_account(conn, user_id)))

    @require_roles(Role.ADMIN)
    @blp.arguments(UserUpdateSchema)
    @blp.response(200, envelope(AdminAccountSchema))
    @blp.alt_response(404, description="No such account.")
    @blp.alt_response(409, description="You tried to remove ADMIN from your own account.")
    @blp.alt_response(422, description="Invalid values, roles of the wrong kind, or a password against the policy.")
    @blp.doc(security=BEARER)
    def patch(self, body: dict[str, Any], user_id: int) -> dict[str, Any]:
        """Change an account's name, roles, limits (``max_active_jobs``, ``min_priority``; null
        restores the default) or password. A new password revokes its refresh tokens."""
        c = ctx()
        # Its roles may change: this process refuses or allows by the new ones at once.
        with identity_changes(user_id), c.transaction() as conn:
            if body.get("password") is not None:
                email = accounts.find_account(conn, user_id).email
                require_acceptable_password(body["password"], email, c.settings.password_min_length)
            return ok(asdict(accounts.update_account(conn, user_id, body, caller().user_id)))


@blp.route("/users/<int:user_id>/disable")
class UserDisable(MethodView):
    @require_roles(Role.ADMIN)
    @blp.response(200, envelope(AdminAccountSchema))
    @blp.alt_response(404, description="No such account.")
    @blp.alt_response(409, description="You cannot disable your own account.")
    @blp.doc(security=BEARER)
    def post(self, user_id: int) -> dict[str, Any]:
        """Disable an account: it cannot log in or refresh, its refresh tokens are revoked, and
        its access tokens are refused within a few seconds (at once by the API process that
        disabled it)."""
        with identity_changes(user_id), ctx().transaction() as conn:
            return ok(asdict(accounts.disable_account(conn, user_id, caller().user_id)))


@blp.route("/users/<int:user_id>/enable")
class UserEnable(MethodView):
    @require_roles(Role.ADMIN)
    @blp.response(200, envelope(AdminAccountSchema))
    @blp.alt_response(404, description="No such account.")
    @blp.doc(security=BEARER)
    def post(self, user_id: int) -> dict[str, Any]:
        """Enable a disabled account (it must log in again)."""
        with identity_changes(user_id), ctx().transaction() as conn:
            return ok(asdict(accounts.enable_account(conn, user_id)))


@blp.route("/service-accounts")
class ServiceAccounts(MethodView):
    @require_roles(Role.ADMIN)
    @blp.arguments(ServiceAccountListArgs, location="query")
    @blp.response(200, envelope(AdminAccountSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the service accounts (workers and managers), newest first; ``meta.pagination``."""
        return _page(accounts.AccountFilter(is_service=True, disabled=args["disabled"]), args)

    @require_roles(Role.ADMIN)
    @blp.arguments(ServiceAccountCreateSchema)
    @blp.response(201, envelope(CreatedAccountSchema))
    @blp.alt_response(409, description="A service account of that name exists.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create a service account (one per worker or manager deployment); its password is shown once.

        It logs in at ``/api/auth/login`` with ``email`` = ``<name>@service.skyfleet.internal``.
        """
        password = auth.generate_password()
        with ctx().transaction() as conn:
            account = auth.create_user(conn, auth.service_email(body["name"]), password,
                                       [body["role"]], body["name"], is_service=True)
        return ok(asdict(account) | {"password": password}), 201


@blp.route("/service-accounts/<int:user_id>/rotate")
class ServiceAccountRotate(MethodView):
    @require_roles(Role.ADMIN)
    @blp.response(200, envelope(CreatedAccountSchema))
    @blp.alt_response(404, description="No such service account.")
    @blp.doc(security=BEARER)
    def post(self, user_id: int) -> dict[str, Any]:
        """Give a service account a new generated password (shown once) and revoke its refresh
        tokens; its processes must log in with the new one. Issued access tokens live out their
        short lifetime: disable the account to cut them off at once."""
        with identity_changes(user_id), ctx().transaction() as conn:
            account, password = accounts.rotate_service_password(conn, user_id)
        return ok(asdict(account) | {"password": password})
