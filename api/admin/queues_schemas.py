"""Bodies and views of the admin queue, worker and cache endpoints."""

from __future__ import annotations

from marshmallow import fields, validate

from api.jobs.schemas import JobTypeField
from api.pagination import PageArgs
from api.queue.views import WORKER_STATES
from api.validation import ApiSchema


class QueueCountsSchema(ApiSchema):
    pending = fields.Integer(required=True, metadata={"description": "PENDING and due now."})
    scheduled = fields.Integer(required=True, metadata={"description": "PENDING, run_after in the future."})
    in_progress = fields.Integer(required=True)
    oldest_pending_age_s = fields.Float(
        required=True, metadata={"description": "Seconds the longest-waiting due job has waited since it became due."})
    completed_last_minute = fields.Integer(required=True)
    failed_last_minute = fields.Integer(required=True, metadata={"description": "FAILED and TIMED_OUT."})


class TypeQueueSchema(QueueCountsSchema):
    type = fields.String(required=True, metadata={"example": "sleep"})


class QueuesSchema(ApiSchema):
    types = fields.List(fields.Nested(TypeQueueSchema), required=True)
    totals = fields.Nested(QueueCountsSchema, required=True)


class WorkerListArgs(PageArgs):
    state = fields.String(load_default=None, validate=validate.OneOf(WORKER_STATES),
                          metadata={"description": "live, lost (silent for SKYFLEET_MAX_CLAIM_WAIT_S + two leases: its jobs were taken back) or stopped."})


class WorkerViewSchema(ApiSchema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    hostname = fields.String(allow_none=True)
    pid = fields.Integer(allow_none=True)
    job_types = fields.List(fields.String(), required=True)
    concurrency = fields.Integer(required=True)
    ecs_task_arn = fields.String(allow_none=True)
    ecs_cluster_arn = fields.String(allow_none=True)
    started_at = fields.AwareDateTime(required=True)
    last_heartbeat_at = fields.AwareDateTime(required=True)
    draining = fields.Boolean(required=True)
    stopped_at = fields.AwareDateTime(allow_none=True)
    state = fields.String(required=True, validate=validate.OneOf(WORKER_STATES))
    running_jobs = fields.Integer(required=True, metadata={"description": "Jobs it holds a live lease on now."})


class CacheInvalidateSchema(ApiSchema):
    type = JobTypeField(required=True, metadata={"example": "sleep"})


class CacheInvalidatedSchema(ApiSchema):
    type = fields.String(required=True)
    invalidated = fields.Integer(required=True, metadata={"description": "Cached results no longer reused."})


class HistoryArgs(ApiSchema):
    window = fields.String(load_default="hour", validate=validate.OneOf(["hour", "day", "week"]),
                           metadata={"description": "hour (by minute), day (by 15 minutes) or week (by hour)."})


class PickupSchema(ApiSchema):
    p50 = fields.List(fields.Float(allow_none=True), required=True)
    p95 = fields.List(fields.Float(allow_none=True), required=True)
    p99 = fields.List(fields.Float(allow_none=True), required=True)


class HistorySchema(ApiSchema):
    window = fields.String(required=True)
    bucket_s = fields.Integer(required=True, metadata={"description": "Each value covers this many seconds."})
    t = fields.List(fields.Float(), required=True, metadata={"description": "Each bucket's start (epoch seconds)."})
    completed = fields.List(fields.Integer(), required=True, metadata={"description": "Attempts that succeeded."})
    failed = fields.List(fields.Integer(), required=True, metadata={
        "description": "Jobs that failed for good (their last attempt FAILED or expired)."})
    retried = fields.List(fields.Integer(), required=True, metadata={
        "description": "Attempts that failed or expired and were tried again."})
    pickup_s = fields.Nested(PickupSchema, required=True, metadata={
        "description": "Seconds from due to claimed, of the attempts that ended in the bucket (null: none)."})
    duration_s = fields.Dict(keys=fields.String(), values=fields.List(fields.Float(allow_none=True)), required=True,
                             metadata={"description": "Per job type, the median run time of successful attempts."})
    workers = fields.List(fields.Integer(), required=True, metadata={"description": "Workers alive in the bucket."})
