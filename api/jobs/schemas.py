"""Job submission and job views. A submission is validated against its type's input schema."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from api.pagination import PageArgs
from api.queue.jobs import SORTABLE
from api.validation import ApiSchema
from jobtypes import JobStatus, get_job_type, job_type_names
from jobtypes.catalogue import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

MAX_BATCH = 1000


class JobTypeField(fields.String):
    """A job type name that must be in the catalogue."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        name = super()._deserialize(value, attr, data, **kwargs)
        if get_job_type(name) is None:
            raise ValidationError(f"unknown job type {name!r}; known types: {', '.join(job_type_names())}")
        return name


def input_schema(job_type: str) -> Schema:
    """The type's input schema (built once, by its catalogue entry)."""
    found = get_job_type(job_type)
    assert found is not None  # JobTypeField checked it
    return found.inputs


class JobCreateSchema(ApiSchema):
    type = JobTypeField(required=True, metadata={"example": "sleep"})
    input_payload = fields.Dict(
        keys=fields.String(), load_default=dict,
        metadata={"description": "Input of the job, validated against the type's schema."},
    )
    priority = fields.Integer(
        load_default=DEFAULT_PRIORITY, validate=validate.Range(min=MIN_PRIORITY, max=MAX_PRIORITY),
        metadata={"description": "0 runs first, 9 last."},
    )
    run_after = fields.AwareDateTime(
        load_default=None, allow_none=True, metadata={"description": "Not claimed before this time."}
    )
    cache = fields.Boolean(
        load_default=True,
        metadata={"description": "Reuse the result of an identical job that succeeded (false: always run)."},
    )
    callback_url = fields.Url(load_default=None, allow_none=True, schemes={"http", "https"},
                              validate=validate.Length(max=2000))
    callback_token = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=500))

    @post_load
    def validate_input(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        """Load ``input_payload`` with its type's schema (defaults filled in, unknown keys refused)."""
        try:
            data["input_payload"] = input_schema(data["type"]).load(data["input_payload"])
        except ValidationError as err:
            raise ValidationError({"input_payload": err.messages}) from err
        return data


class JobBatchCreateSchema(ApiSchema):
    jobs = fields.List(fields.Nested(JobCreateSchema), required=True,
                       validate=validate.Length(min=1, max=MAX_BATCH))


class ProgressSchema(ApiSchema):
    percent = fields.Float(allow_none=True)
    stage = fields.String(allow_none=True)
    message = fields.String(allow_none=True)


class JobErrorSchema(ApiSchema):
    code = fields.String()
    message = fields.String()


class JobSchema(ApiSchema):
    id = fields.Integer(required=True)
    type = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf([s.value for s in JobStatus]),
                           metadata={"enum": [s.value for s in JobStatus]})
    priority = fields.Integer(required=True)
    run_after = fields.DateTime(required=True)
    attempt = fields.Integer(required=True)
    max_attempts = fields.Integer(required=True)
    input_payload = fields.Dict(required=True)
    progress = fields.Nested(ProgressSchema, allow_none=True)
    error = fields.Nested(JobErrorSchema, allow_none=True)
    cancel_requested = fields.Boolean(required=True)
    created_at = fields.DateTime(required=True)
    updated_at = fields.DateTime(required=True)
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class SubmittedJobSchema(JobSchema):
    request_id = fields.Integer(required=True)
    origin = fields.String(
        required=True, validate=validate.OneOf(["created", "joined", "cached"]),
        metadata={"description": "created: a new job; joined: an identical job was already queued "
                                 "or running; cached: the result of an identical job was reused."},
    )


class OutputFileSchema(ApiSchema):
    key = fields.String(required=True)
    name = fields.String(allow_none=True)
    size = fields.Integer(required=True)
    sha256 = fields.String(allow_none=True)
    content_type = fields.String(allow_none=True)


class JobResultSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    result_payload = fields.Dict(allow_none=True)
    storage_uri = fields.String(allow_none=True)
    files = fields.List(fields.Nested(OutputFileSchema), allow_none=True,
                        metadata={"description": "Output files; GET …/download for URLs."})
    created_at = fields.DateTime(required=True)


class LimitsSchema(ApiSchema):
    max_active_jobs = fields.Integer(required=True)
    active_jobs = fields.Integer(required=True)
    min_priority = fields.Integer(required=True, metadata={"description": "The most urgent priority you may use."})
    max_priority = fields.Integer(required=True)
    max_batch = fields.Integer(required=True)
    max_payload_bytes = fields.Integer(required=True)
    max_upload_bytes = fields.Integer(required=True)
    rate_limit_per_minute = fields.Integer(required=True)


class JobDeletedSchema(ApiSchema):
    id = fields.Integer(required=True)
    deleted_objects = fields.Integer(required=True, metadata={"description": "Output objects removed."})




class JobListArgs(PageArgs):
    status = fields.String(load_default=None, validate=validate.OneOf([s.value for s in JobStatus]))
    type = JobTypeField(load_default=None)
    created_after = fields.AwareDateTime(load_default=None, metadata={"description": "Created at or after."})
    created_before = fields.AwareDateTime(load_default=None, metadata={"description": "Created before."})
    user_id = fields.Integer(load_default=None, validate=validate.Range(min=1),
                             metadata={"description": "Admins: only this user's jobs."})
    q = fields.String(load_default=None, validate=validate.Length(min=1, max=200),
                      metadata={"description": "Only jobs whose input (a tag, a file name) or error contains this "
                                               "(case-insensitive)."})
    sort = fields.String(
        load_default="-created_at",
        validate=validate.OneOf([f"{sign}{name}" for name in SORTABLE for sign in ("", "-")]),
        metadata={"description": "A field, with '-' for descending."},
    )


class PaginationSchema(ApiSchema):
    page = fields.Integer()
    per_page = fields.Integer()
    total = fields.Integer()
    pages = fields.Integer()
    has_next = fields.Boolean()
    has_prev = fields.Boolean()


class JobFilterSchema(ApiSchema):
    """The filters of ``GET /api/jobs``, to act on every job they match."""

    status = fields.String(load_default=None, validate=validate.OneOf([s.value for s in JobStatus]))
    type = JobTypeField(load_default=None)
    created_after = fields.AwareDateTime(load_default=None)
    created_before = fields.AwareDateTime(load_default=None)
    user_id = fields.Integer(load_default=None, validate=validate.Range(min=1))
    q = fields.String(load_default=None, validate=validate.Length(min=1, max=200))


BULK_ACTIONS = ("cancel", "delete", "retry")


class BulkActionSchema(ApiSchema):
    action = fields.String(required=True, validate=validate.OneOf(BULK_ACTIONS))
    ids = fields.List(fields.Integer(validate=validate.Range(min=1, max=2**63 - 1)),
                      validate=validate.Length(min=1, max=MAX_BATCH),
                      metadata={"description": "These jobs (give ids or filter)."})
    filter = fields.Nested(JobFilterSchema, metadata={
        "description": f"Every job these filters match, up to {MAX_BATCH} per call (`more` says if some are left)."})

    @validates_schema
    def one_target(self, data: dict[str, Any], **_: Any) -> None:
        if ("ids" in data) == ("filter" in data):
            raise ValidationError("give either ids or filter", field_name="ids")


class BulkRefusalSchema(ApiSchema):
    id = fields.Integer(required=True)
    code = fields.String(required=True)
    message = fields.String(required=True)


class BulkResultSchema(ApiSchema):
    action = fields.String(required=True)
    done = fields.List(fields.Integer(), required=True, metadata={"description": "The jobs it was done to."})
    refused = fields.List(fields.Nested(BulkRefusalSchema), required=True,
                          metadata={"description": "The jobs it was not done to, and why (a 404 or 409 each)."})
    more = fields.Boolean(required=True, metadata={"description": "The filter matches more jobs: call again."})
