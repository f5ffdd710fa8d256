"""Request and response bodies of the auth endpoints."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate

from api.auth.passwords import PASSWORD_MAX_LENGTH
from api.auth.service import SERVICE_EMAIL_DOMAIN, normalise_email
from api.validation import ApiSchema

PASSWORD_MAX = PASSWORD_MAX_LENGTH


class NormalisedEmail(fields.Email):
    """An email address, trimmed and lower-cased before it is validated (emails are unique that way)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        email = super()._deserialize(value, attr, data, **kwargs)
        return normalise_email(email)


def not_a_service_address(email: str) -> None:
    """People may not take the domain reserved for service accounts (their logins are exempt
    from the per-account login limit)."""
    if email.endswith("@" + SERVICE_EMAIL_DOMAIN):
        raise ValidationError(f"addresses @{SERVICE_EMAIL_DOMAIN} are reserved for service accounts")


class LoginSchema(ApiSchema):
    email = fields.String(required=True, validate=validate.Length(min=3, max=320))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=PASSWORD_MAX))


class RegisterSchema(ApiSchema):
    email = NormalisedEmail(required=True, validate=[validate.Length(max=320), not_a_service_address])
    password = fields.String(required=True, load_only=True,
                             metadata={"description": "At least the configured minimum length (12 by default), "
                                                      "not a common password, not mostly your email."})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=200))


class RefreshSchema(ApiSchema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=10, max=200))


class TokensSchema(ApiSchema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True, metadata={"example": "Bearer"})
    expires_in = fields.Integer(required=True, metadata={"description": "Access token lifetime in seconds."})


class AccountSchema(ApiSchema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(allow_none=True)
    roles = fields.List(fields.String(), required=True)
    is_service = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    disabled_at = fields.DateTime(allow_none=True)


class EmptySchema(ApiSchema):
    pass
