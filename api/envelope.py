"""The success envelope ``{success, data, meta}`` and its OpenAPI schemas."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Response, jsonify
from marshmallow import Schema, fields


def ok(data: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Wrap a payload in the success envelope."""
    return {"success": True, "data": data, "meta": meta or {}}


def error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None) -> Response:
    """The error envelope: ``{success: false, error: {code, message, details}}``."""
    response = jsonify({"success": False, "error": {"code": code, "message": message, "details": details or {}}})
    response.status_code = status
    return response


@cache
def envelope(schema: type[Schema], many: bool = False) -> type[Schema]:
    """A schema for ``{success, data: <schema>, meta}``, one class per payload schema."""
    name = schema.__name__.removesuffix("Schema") + ("ListEnvelope" if many else "Envelope")
    return Schema.from_dict(
        {
            "success": fields.Boolean(required=True),
            "data": fields.Nested(schema, many=many, required=True),
            "meta": fields.Dict(),
        },
        name=name,
    )


class ErrorBodySchema(Schema):
    code = fields.String(required=True, metadata={"example": "VALIDATION_ERROR"})
    message = fields.String(required=True)
    details = fields.Dict()


class ErrorEnvelopeSchema(Schema):
    success = fields.Boolean(required=True, metadata={"example": False})
    error = fields.Nested(ErrorBodySchema, required=True)
