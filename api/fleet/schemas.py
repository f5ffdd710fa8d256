"""Bodies and views of the fleet endpoints: ``/api/manager/*`` and ``/api/admin/status|scale|redeploy``."""

from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from api.fleet.models import ACTIONS, BACKENDS
from api.jobs.schemas import JobTypeField
from api.validation import ApiSchema
from settings import DECISION_REASON_CHARS, MANAGER_LEASE_TTL_MAX_S, MANAGER_LEASE_TTL_MIN_S

#: Bounds that keep every list a sane size (api.validation keeps numbers in a bigint, text storable).
MAX_POOLS = 100
MAX_POOL_WORKERS = 10_000
MAX_JOBS_PER_WORKER = 10_000
MAX_DECISIONS = 100
MAX_DRAIN_BATCH = 1000
MAX_COUNT = 1_000_000_000
#: Decision inputs the status view reads; when present they must be counts.
COUNTED_INPUTS = ("pending", "in_progress", "running", "starting", "draining")

POOL_NAME = validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                            error="letters, digits, '_', '.' and '-', starting with a letter or digit")


def _count(**kw: Any) -> fields.Integer:
    return fields.Integer(validate=validate.Range(min=0, max=MAX_COUNT), **kw)


def _text(max_chars: int, **kw: Any) -> fields.String:
    return fields.String(validate=validate.Length(min=1, max=max_chars), **kw)


# --- pools -----------------------------------------------------------------------------------

class PoolConfigSchema(ApiSchema):
    """One pool as the manager's configuration defines it."""

    name = fields.String(required=True, validate=[validate.Length(min=1, max=100), POOL_NAME])
    job_types = fields.List(JobTypeField(), required=True, validate=validate.Length(min=1, max=100))
    backend = fields.String(required=True, validate=validate.OneOf(BACKENDS))
    min_workers = fields.Integer(data_key="min", required=True,
                                 validate=validate.Range(min=0, max=MAX_POOL_WORKERS))
    max_workers = fields.Integer(data_key="max", required=True,
                                 validate=validate.Range(min=0, max=MAX_POOL_WORKERS))
    jobs_per_worker = fields.Integer(required=True,
                                     validate=validate.Range(min=1, max=MAX_JOBS_PER_WORKER))
    details = fields.Dict(load_default=dict,
                          metadata={"description": "Free-form backend settings: command, cluster, task_definition, ..."})

    @validates_schema
    def min_within_max(self, data: dict[str, Any], **_: Any) -> None:
        if data["min_workers"] > data["max_workers"]:
            raise ValidationError(f"must not exceed max ({data['max_workers']})", field_name="min")


class PoolsReportSchema(ApiSchema):
    pools = fields.List(fields.Nested(PoolConfigSchema), required=True, validate=validate.Length(max=MAX_POOLS),
                        metadata={"description": "Every pool: pools not listed are removed with their decisions."})

    @validates_schema
    def unique_names(self, data: dict[str, Any], **_: Any) -> None:
        names = [p["name"] for p in data["pools"]]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValidationError(f"pool names must be unique: {', '.join(repeated)} repeated", field_name="pools")


class PoolSchema(ApiSchema):
    """A pool: the manager's configuration and what admins asked for."""

    name = fields.String(required=True)
    job_types = fields.List(fields.String(), required=True)
    backend = fields.String(required=True)
    min_workers = fields.Integer(data_key="min", required=True)
    max_workers = fields.Integer(data_key="max", required=True)
    jobs_per_worker = fields.Integer(required=True)
    details = fields.Dict(required=True)
    pinned_count = fields.Integer(allow_none=True, metadata={"description": "Fixed worker count set by an admin."})
    min_override = fields.Integer(allow_none=True)
    max_override = fields.Integer(allow_none=True)
    redeploy_generation = fields.Integer(required=True, metadata={"description": "Bumped by each redeploy."})
    redeploy_requested_at = fields.AwareDateTime(allow_none=True)


class PoolListSchema(ApiSchema):
    pools = fields.List(fields.Nested(PoolSchema), required=True)


# --- queues and workers ------------------------------------------------------------------------

class QueueDepthSchema(ApiSchema):
    pending = fields.Integer(required=True, metadata={"description": "PENDING and due now (claimable)."})
    scheduled = fields.Integer(required=True, metadata={"description": "PENDING with run_after in the future."})
    in_progress = fields.Integer(required=True)


class ManagerQueuesSchema(ApiSchema):
    types = fields.Dict(keys=fields.String(), values=fields.Nested(QueueDepthSchema), required=True,
                        metadata={"description": "Exact counts per job type (every catalogue type)."})


class ManagerWorkerSchema(ApiSchema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    pool = fields.String(allow_none=True, metadata={"description": "From the registration's attributes."})
    revision = fields.String(allow_none=True)
    launch_id = fields.String(allow_none=True)
    ecs_task_arn = fields.String(allow_none=True)
    pid = fields.Integer(allow_none=True)
    hostname = fields.String(allow_none=True)
    job_types = fields.List(fields.String(), required=True)
    concurrency = fields.Integer(required=True)
    running_jobs = fields.Integer(required=True, metadata={"description": "Its current IN_PROGRESS attempts."})
    draining = fields.Boolean(required=True)
    started_at = fields.AwareDateTime(required=True)
    last_heartbeat_at = fields.AwareDateTime(required=True)


class ManagerWorkersSchema(ApiSchema):
    workers = fields.List(fields.Nested(ManagerWorkerSchema), required=True)


class DrainSchema(ApiSchema):
    worker_ids = fields.List(fields.Integer(validate=validate.Range(min=1)),
                             required=True, validate=validate.Length(min=1, max=MAX_DRAIN_BATCH))
    only_idle = fields.Boolean(load_default=True,
                               metadata={"description": "Only workers holding no IN_PROGRESS job (checked in the "
                                                        "UPDATE itself)."})


class DrainedSchema(ApiSchema):
    drained = fields.List(fields.Integer(), required=True,
                          metadata={"description": "Workers now draining (unknown, stopped or busy ones left out)."})


# --- decisions -------------------------------------------------------------------------------

class DecisionSchema(ApiSchema):
    pool = fields.String(required=True, validate=validate.Length(min=1, max=100))
    desired = _count(required=True)
    previous = _count(required=True)
    action = fields.String(required=True, validate=validate.OneOf(ACTIONS))
    reason = _text(DECISION_REASON_CHARS, required=True)
    inputs = fields.Dict(load_default=dict,
                         metadata={"description": f"The policy's inputs; {', '.join(COUNTED_INPUTS)} are counts."})
    observed = fields.Dict(load_default=dict,
                           metadata={"description": "Backend details (ECS cluster, task definition, last error)."})

    @validates_schema
    def counted_inputs(self, data: dict[str, Any], **_: Any) -> None:
        for key in COUNTED_INPUTS:
            value = data.get("inputs", {}).get(key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or not 0 <= value <= MAX_COUNT):
                raise ValidationError({key: ["must be a count (an integer >= 0)"]}, field_name="inputs")


class DecisionsSchema(ApiSchema):
    decisions = fields.List(fields.Nested(DecisionSchema), required=True,
                            validate=validate.Length(min=1, max=MAX_DECISIONS))


class RecordedSchema(ApiSchema):
    recorded = fields.Integer(required=True)


class DecisionViewSchema(ApiSchema):
    id = fields.Integer(required=True)
    created_at = fields.AwareDateTime(required=True)
    desired = fields.Integer(required=True)
    previous = fields.Integer(required=True)
    action = fields.String(required=True)
    reason = fields.String(required=True)
    inputs = fields.Dict(required=True)
    observed = fields.Dict(required=True)


# --- the manager lease -------------------------------------------------------------------------

class LeaseRequestSchema(ApiSchema):
    holder = _text(200, required=True, metadata={"description": "This manager replica's identity."})
    ttl_s = fields.Float(required=True, validate=validate.Range(min=MANAGER_LEASE_TTL_MIN_S, max=MANAGER_LEASE_TTL_MAX_S))


class LeaseSchema(ApiSchema):
    holder = fields.String(required=True)
    expires_at = fields.AwareDateTime(required=True)
    acquired = fields.Boolean(required=True)


class LeaseReleaseSchema(ApiSchema):
    holder = _text(200, required=True)


class LeaseReleasedSchema(ApiSchema):
    released = fields.Boolean(required=True, metadata={"description": "false: the lease was not this holder's."})


# --- admin -------------------------------------------------------------------------------------

class ScaleSchema(ApiSchema):
    """Omitted fields stay as they are; null clears (unpins, drops the override)."""

    pool = fields.String(required=True, validate=validate.Length(min=1, max=100))
    count = _count(allow_none=True, metadata={"description": "Pin the worker count; null unpins."})
    min = _count(allow_none=True, metadata={"description": "Override the pool's min; null restores it."})
    max = _count(allow_none=True, metadata={"description": "Override the pool's max; null restores it."})

    @validates_schema
    def something_to_change(self, data: dict[str, Any], **_: Any) -> None:
        if not {"count", "min", "max"} & set(data):
            raise ValidationError("give count, min or max (null clears one)")
        if data.get("min") is not None and data.get("max") is not None and data["min"] > data["max"]:
            raise ValidationError(f"must not exceed max ({data['max']})", field_name="min")


class RedeploySchema(ApiSchema):
    pool = fields.String(required=True, validate=validate.Length(min=1, max=100))


class RedeployedSchema(ApiSchema):
    pool = fields.String(required=True)
    redeploy_generation = fields.Integer(required=True)
    drained = fields.List(fields.Integer(), required=True, metadata={"description": "Workers told to drain."})


class PoolWorkerSchema(ApiSchema):
    id = fields.Integer(required=True)
    name = fields.String(required=True)
    revision = fields.String(allow_none=True)
    launch_id = fields.String(allow_none=True)
    ecs_task_arn = fields.String(allow_none=True)
    running_jobs = fields.Integer(required=True)
    draining = fields.Boolean(required=True)
    last_heartbeat_at = fields.AwareDateTime(required=True)


class PoolStatusSchema(PoolSchema):
    reported_at = fields.AwareDateTime(required=True, metadata={"description": "When the manager last reported it."})
    effective_min = fields.Integer(required=True)
    effective_max = fields.Integer(required=True)
    desired = fields.Integer(allow_none=True, metadata={"description": "From the latest decision."})
    running = fields.Integer(allow_none=True, metadata={"description": "From the latest decision's inputs."})
    starting = fields.Integer(allow_none=True, metadata={"description": "From the latest decision's inputs."})
    draining = fields.Integer(allow_none=True, metadata={"description": "From the latest decision's inputs."})
    observed = fields.Dict(allow_none=True, metadata={"description": "The latest decision's backend details."})
    queue = fields.Nested(QueueDepthSchema, required=True, metadata={"description": "Summed over its job types."})
    workers = fields.List(fields.Nested(PoolWorkerSchema), required=True,
                          metadata={"description": "Its live workers (registered with this pool)."})
    decisions = fields.List(fields.Nested(DecisionViewSchema), required=True, metadata={"description": "Newest first."})


class ManagerViewSchema(ApiSchema):
    holder = fields.String(allow_none=True)
    acquired_at = fields.AwareDateTime(allow_none=True)
    expires_at = fields.AwareDateTime(allow_none=True)
    active = fields.Boolean(required=True, metadata={"description": "A manager holds an unexpired lease."})


class FleetStatusSchema(ApiSchema):
    manager = fields.Nested(ManagerViewSchema, required=True)
    pools = fields.List(fields.Nested(PoolStatusSchema), required=True)
