"""Bodies and query arguments of the admin account endpoints."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from api.auth.accounts import PERSON_ROLES, SORTABLE
from api.auth.models import Role
from api.auth.schemas import PASSWORD_MAX, AccountSchema, NormalisedEmail, not_a_service_address
from api.pagination import PageArgs, sort_choices
from api.validation import ApiSchema
from jobtypes.catalogue import MAX_PRIORITY, MIN_PRIORITY

MAX_ACTIVE_JOBS_LIMIT = 1_000_000

_PASSWORD_HELP = "Checked against the password policy (as at registration)."


class UserCreateSchema(ApiSchema):
    email = NormalisedEmail(required=True, validate=[validate.Length(max=320), not_a_service_address])
    password = fields.String(load_default=None, allow_none=True, load_only=True,
                             validate=validate.Length(max=PASSWORD_MAX),
                             metadata={"description": f"Generated (and returned once) when omitted. {_PASSWORD_HELP}"})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    roles = fields.List(fields.Enum(Role, by_value=True), load_default=lambda: [Role.USER],
                        validate=[validate.Length(min=1, max=3),
                                  validate.ContainsOnly([Role(r) for r in sorted(PERSON_ROLES)],
                                                        error="people hold ADMIN or USER; service accounts "
                                                              "are made at /api/admin/service-accounts")])


class UserUpdateSchema(ApiSchema):
    name = fields.String(allow_none=True, validate=validate.Length(max=200))
    roles = fields.List(fields.Enum(Role, by_value=True), validate=validate.Length(min=1, max=3),
                        metadata={"description": "People: ADMIN, USER and/or VIEWER (read-only admin views); service accounts: WORKER and/or MANAGER."})
    max_active_jobs = fields.Integer(allow_none=True, validate=validate.Range(min=1, max=MAX_ACTIVE_JOBS_LIMIT),
                                     metadata={"description": "null: the configured default."})
    min_priority = fields.Integer(allow_none=True, validate=validate.Range(min=MIN_PRIORITY, max=MAX_PRIORITY),
                                  metadata={"description": "The most urgent priority (0-9) the account may use; "
                                                           "null: the configured default."})
    password = fields.String(load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX),
                             metadata={"description": f"A new password; revokes the account's refresh tokens. "
                                                      f"{_PASSWORD_HELP}"})

    @validates_schema
    def not_empty(self, data: dict[str, Any], **_: Any) -> None:
        if not data:
            raise ValidationError("give at least one field to change")


class ServiceAccountCreateSchema(ApiSchema):
    name = fields.String(required=True, validate=[
        validate.Length(min=1, max=100),
        validate.Regexp(r"^[a-z0-9][a-z0-9-]*$", error="lower-case letters, digits and dashes only"),
    ])
    role = fields.Enum(Role, by_value=True, required=True,
                       validate=validate.OneOf([Role.WORKER, Role.MANAGER], error="must be WORKER or MANAGER"))


class AdminAccountSchema(AccountSchema):
    max_active_jobs = fields.Integer(allow_none=True, metadata={"description": "null: the configured default."})
    min_priority = fields.Integer(allow_none=True, metadata={"description": "null: the configured default."})


class CreatedAccountSchema(AdminAccountSchema):
    password = fields.String(allow_none=True, metadata={"description": "Shown once, when generated."})


class UserListArgs(PageArgs):
    role = fields.Enum(Role, by_value=True, load_default=None)
    is_service = fields.Boolean(load_default=None)
    disabled = fields.Boolean(load_default=None)
    q = fields.String(load_default=None, validate=validate.Length(min=1, max=320),
                      metadata={"description": "Only emails containing this (case-insensitive)."})
    sort = fields.String(load_default="-created_at", validate=validate.OneOf(sort_choices(*SORTABLE)),
                         metadata={"description": "A field, with '-' for descending."})


class ServiceAccountListArgs(PageArgs):
    disabled = fields.Boolean(load_default=None)
    sort = fields.String(load_default="-created_at", validate=validate.OneOf(sort_choices(*SORTABLE)),
                         metadata={"description": "A field, with '-' for descending."})
