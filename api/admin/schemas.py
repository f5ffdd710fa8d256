"""Bodies of the admin endpoints."""

from marshmallow import Schema, fields, validate

from api.auth.models import Role
from api.auth.schemas import PASSWORD_MAX, PASSWORD_MIN, AccountSchema


class UserCreateSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(load_default=None, allow_none=True, load_only=True,
                             validate=validate.Length(min=PASSWORD_MIN, max=PASSWORD_MAX),
                             metadata={"description": "Generated (and returned once) when omitted."})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))
    roles = fields.List(fields.Enum(Role, by_value=True), load_default=lambda: [Role.USER],
                        validate=validate.Length(min=1, max=4))


class ServiceAccountCreateSchema(Schema):
    name = fields.String(required=True, validate=[
        validate.Length(min=1, max=100),
        validate.Regexp(r"^[a-z0-9][a-z0-9-]*$", error="lower-case letters, digits and dashes only"),
    ])
    role = fields.Enum(Role, by_value=True, required=True,
                       validate=validate.OneOf([Role.WORKER, Role.MANAGER], error="must be WORKER or MANAGER"))


class CreatedAccountSchema(AccountSchema):
    password = fields.String(allow_none=True, metadata={"description": "Shown once, when generated."})
