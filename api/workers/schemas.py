"""Bodies of the worker endpoints: register, claim, heartbeat, results."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from api.jobs.schemas import JobTypeField, ProgressSchema
from api.validation import ApiSchema, Int32
from storage import InvalidKey, validate_key

MAX_BATCH = 1000


class WorkerRegisterSchema(ApiSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    job_types = fields.List(JobTypeField(), required=True, validate=validate.Length(min=1, max=100))
    concurrency = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1000))
    hostname = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))
    pid = fields.Integer(load_default=None, allow_none=True, validate=validate.Range(min=0))
    ecs_task_arn = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2048))
    ecs_cluster_arn = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=2048))
    attributes = fields.Dict(load_default=None, allow_none=True)


class WorkerSchema(ApiSchema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    job_types = fields.List(fields.String(), required=True)
    concurrency = fields.Integer(required=True)
    lease_s = fields.Float(required=True, metadata={"description": "How long a claimed job's lease lasts."})
    heartbeat_interval_s = fields.Float(required=True, metadata={"description": "Heartbeat this often."})
    max_claim_batch = fields.Integer(required=True)
    max_claim_wait_s = fields.Float(required=True)


class ClaimedInputFileSchema(ApiSchema):
    """An uploaded file the job reads, and where it is stored."""

    file_id = fields.Integer(required=True)
    key = fields.String(required=True)
    size = fields.Integer(required=True)
    name = fields.String(required=True)


class ClaimedJobSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    assignment_id = fields.Integer(required=True)
    type = fields.String(required=True)
    attempt = fields.Integer(required=True)
    max_attempts = fields.Integer(required=True)
    input_payload = fields.Dict(required=True)
    lease_expires_at = fields.DateTime(required=True)
    timeout_s = fields.Float(required=True)
    input_files = fields.List(fields.Nested(ClaimedInputFileSchema), required=True,
                              metadata={"description": "Where each uploaded file the job names is stored."})


class RunningJobSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    attempt = Int32(required=True, validate=validate.Range(min=1))
    progress = fields.Nested(ProgressSchema, load_default=None, allow_none=True)


class HeartbeatSchema(ApiSchema):
    jobs = fields.List(fields.Nested(RunningJobSchema), load_default=list,
                       validate=validate.Length(max=MAX_BATCH))


class StopSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    attempt = fields.Integer(required=True)
    reason = fields.String(required=True, metadata={"description": "cancelled, or lost (no longer yours)."})


class HeartbeatResponseSchema(ApiSchema):
    stop = fields.List(fields.Nested(StopSchema), required=True)
    drain = fields.Boolean(required=True)
    lease_expires_at = fields.DateTime(allow_none=True)


class ReportErrorSchema(ApiSchema):
    code = fields.String(load_default="HANDLER_ERROR", validate=validate.Length(max=100))
    message = fields.String(required=True, validate=validate.Length(max=10_000))
    permanent = fields.Boolean(load_default=False, metadata={"description": "Do not retry (bad input)."})


class ReportedFileSchema(ApiSchema):
    """One output file, already written to storage under the attempt's prefix."""

    key = fields.String(required=True, validate=validate.Length(min=1, max=1024),
                        metadata={"description": "Under jobs/<job_id>/attempt-<attempt>/."})
    name = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=255))
    size = fields.Integer(required=True, validate=validate.Range(min=0))
    sha256 = fields.String(load_default=None, allow_none=True)
    content_type = fields.String(load_default=None, allow_none=True)


class ReportSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    attempt = Int32(required=True, validate=validate.Range(min=1))
    status = fields.String(required=True, validate=validate.OneOf(["SUCCEEDED", "FAILED", "CANCELLED"]))
    result_payload = fields.Dict(load_default=None, allow_none=True)
    storage_uri = fields.String(load_default=None, allow_none=True)
    files = fields.List(fields.Nested(ReportedFileSchema), load_default=None, allow_none=True)
    error = fields.Nested(ReportErrorSchema, load_default=None, allow_none=True)

    @validates_schema
    def failure_has_error(self, data: dict[str, Any], **_: Any) -> None:
        if data["status"] == "FAILED" and not data.get("error"):
            raise ValidationError("a FAILED report needs an error", field_name="error")

    @validates_schema
    def files_under_the_attempt(self, data: dict[str, Any], **_: Any) -> None:
        """An attempt may only publish objects under its own prefix (never another job's)."""
        prefix = f"jobs/{data['job_id']}/attempt-{data['attempt']}/"
        for i, entry in enumerate(data.get("files") or []):
            try:
                validate_key(entry["key"])
            except InvalidKey as exc:
                raise ValidationError({str(i): {"key": [str(exc)]}}, field_name="files") from None
            if not entry["key"].startswith(prefix):
                raise ValidationError({str(i): {"key": [f"must be under {prefix}"]}}, field_name="files")


class ResultsSchema(ApiSchema):
    results = fields.List(fields.Nested(ReportSchema), required=True, validate=validate.Length(min=1, max=MAX_BATCH))


class ReleaseSchema(ApiSchema):
    jobs = fields.List(fields.Nested(RunningJobSchema), required=True, validate=validate.Length(max=MAX_BATCH))


class ReportOutcomeSchema(ApiSchema):
    job_id = fields.Integer(required=True)
    attempt = fields.Integer(required=True)
    accepted = fields.Boolean(required=True)
    status = fields.String(allow_none=True, metadata={"description": "The job's status after the report."})
    error = fields.Dict(allow_none=True, metadata={"description": "Why it was not accepted."})


class ResultsResponseSchema(ApiSchema):
    results = fields.List(fields.Nested(ReportOutcomeSchema), required=True)


class ReleasedSchema(ApiSchema):
    released = fields.List(fields.Integer(), required=True)


class ClaimSchema(ApiSchema):
    max_jobs = fields.Integer(load_default=1, validate=validate.Range(min=1, max=MAX_BATCH),
                              metadata={"description": "How many free slots the worker has."})
    wait_s = fields.Float(load_default=0.0, validate=validate.Range(min=0.0, max=60.0),
                          metadata={"description": "Long poll: wait up to this long for work."})
    job_types = fields.List(JobTypeField(), load_default=None, allow_none=True,
                            metadata={"description": "A subset of the registered types (default: all)."})
    results = fields.List(fields.Nested(ReportSchema), load_default=list, validate=validate.Length(max=MAX_BATCH),
                          metadata={"description": "Finished attempts to report first (as /results)."})


class ClaimResponseSchema(ApiSchema):
    jobs = fields.List(fields.Nested(ClaimedJobSchema), required=True)
    drain = fields.Boolean(required=True, metadata={"description": "Stop claiming and exit when idle."})
    results = fields.List(fields.Nested(lambda: ReportOutcomeSchema()), required=True,
                          metadata={"description": "Outcomes of the reports sent with the claim."})
