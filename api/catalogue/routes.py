"""``/api/job-types``: what the fleet can run, and how to ask for it (no authentication)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.catalogue.describe import describe, describe_all
from api.envelope import envelope, ok
from api.errors import NotFound
from jobtypes import get_job_type

blp = Blueprint("job-types", __name__, url_prefix="/api/job-types",
                description="The job types: input JSON Schemas, result fields, retry policy, timeout.")


class RetrySchema(Schema):
    max_attempts = fields.Integer(required=True)
    backoff_base_s = fields.Float(required=True)
    backoff_cap_s = fields.Float(required=True)


class ResultFieldSchema(Schema):
    name = fields.String(required=True)
    type = fields.String(required=True)
    description = fields.String(required=True)


class JobTypeSchema(Schema):
    name = fields.String(required=True, metadata={"example": "sources.detect"})
    description = fields.String(required=True)
    input_schema = fields.Dict(required=True, metadata={
        "description": "A JSON Schema (2020-12) of `input_payload`: defaults, bounds and enums included."})
    result_fields = fields.List(fields.Nested(ResultFieldSchema), required=True,
                                metadata={"description": "The fields of `result_payload` when the job succeeds."})
    retry = fields.Nested(RetrySchema, required=True)
    timeout_s = fields.Float(required=True, metadata={"description": "A run is stopped after this long."})
    resource_class = fields.String(required=True, metadata={"description": "small, medium or large (memory)."})


@blp.route("")
class JobTypes(MethodView):
    @blp.response(200, envelope(JobTypeSchema, many=True))
    def get(self) -> dict[str, Any]:
        """Every job type, by name."""
        types = describe_all()
        return ok(types, {"count": len(types)})


@blp.route("/<string:name>")
class OneJobType(MethodView):
    @blp.response(200, envelope(JobTypeSchema))
    @blp.alt_response(404, description="No such job type.")
    def get(self, name: str) -> dict[str, Any]:
        """One job type."""
        if get_job_type(name) is None:
            raise NotFound(f"no job type {name!r}")
        return ok(describe(name))
