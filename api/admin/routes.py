"""``/api/admin``: accounts and service accounts (admins only)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.admin.schemas import CreatedAccountSchema, ServiceAccountCreateSchema, UserCreateSchema
from api.auth import service as accounts
from api.auth.guards import BEARER, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import envelope, ok

blp = Blueprint("admin", __name__, url_prefix="/api/admin", description="Administration (role ADMIN).")


@blp.route("/users")
class Users(MethodView):
    @require_roles(Role.ADMIN)
    @blp.arguments(UserCreateSchema)
    @blp.response(201, envelope(CreatedAccountSchema))
    @blp.alt_response(409, description="The email is taken.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create an account with the given roles (password generated when omitted)."""
        password = body["password"] or accounts.generate_password()
        with ctx().transaction() as conn:
            account = accounts.create_user(conn, body["email"], password, body["roles"], body["name"])
        shown = None if body["password"] else password
        return ok(asdict(account) | {"password": shown}), 201


@blp.route("/service-accounts")
class ServiceAccounts(MethodView):
    @require_roles(Role.ADMIN)
    @blp.arguments(ServiceAccountCreateSchema)
    @blp.response(201, envelope(CreatedAccountSchema))
    @blp.alt_response(409, description="A service account of that name exists.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Create a service account (one per worker or manager deployment); its password is shown once.

        It logs in at ``/api/auth/login`` with ``email`` = ``<name>@service.skyfleet.internal``.
        """
        password = accounts.generate_password()
        with ctx().transaction() as conn:
            account = accounts.create_user(conn, accounts.service_email(body["name"]), password,
                                           [body["role"]], body["name"], is_service=True)
        return ok(asdict(account) | {"password": password}), 201
