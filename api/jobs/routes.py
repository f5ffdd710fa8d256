"""``/api/jobs``: submit (one or a batch), read, cancel, result."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import envelope, ok
from api.jobs import service
from api.jobs.schemas import (
    JobBatchCreateSchema,
    JobCreateSchema,
    JobListArgs,
    JobResultSchema,
    JobSchema,
    SubmittedJobSchema,
)
from api.queue.submit import NewJob, cancel_job, enqueue_jobs
from jobtypes import get_job_type

blp = Blueprint("jobs", __name__, url_prefix="/api/jobs", description="Submit and follow jobs.")

SUBMITTERS = (Role.USER, Role.ADMIN)


def _new_job(body: dict[str, Any]) -> NewJob:
    job_type = get_job_type(body["type"])
    assert job_type is not None
    return NewJob(
        type=body["type"],
        input_payload=body["input_payload"],
        max_attempts=job_type.retry.max_attempts,
        priority=body["priority"],
        run_after=body["run_after"],
        use_cache=body["cache"],
        callback_url=body["callback_url"],
        callback_token=body["callback_token"],
    )


def _submit(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    c = ctx()
    with c.transaction() as conn:
        submitted = enqueue_jobs(conn, caller().user_id, [_new_job(b) for b in bodies])
    # Read back after the commit: the NOTIFY goes out, and workers start, sooner.
    with c.transaction() as conn:
        jobs = service.get_jobs(conn, [s.job_id for s in submitted])
    return [jobs[s.job_id] | {"request_id": s.request_id, "origin": s.origin} for s in submitted]


@blp.route("")
class Jobs(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.arguments(JobListArgs, location="query")
    @blp.response(200, envelope(JobSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the jobs you submitted (admins: everyone's), newest first; ``meta.pagination``."""
        with ctx().transaction() as conn:
            jobs, total = service.list_jobs(conn, caller(), args["page"], args["limit"], args["status"],
                                            args["type"], args["sort"])
        return ok(jobs, {"pagination": service.pagination(args["page"], args["limit"], total)})

    @require_roles(*SUBMITTERS)
    @blp.arguments(JobCreateSchema)
    @blp.response(201, envelope(SubmittedJobSchema))
    @blp.alt_response(200, schema=envelope(SubmittedJobSchema),
                      description="An identical job was already active (joined) or its result was reused (cached).")
    @blp.alt_response(422, description="The body or its input_payload failed validation.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Submit a job. Identical active submissions share one job; a cached result is reused
        unless ``cache`` is false."""
        (job,) = _submit([body])
        return ok(job), 201 if job["origin"] == "created" else 200


@blp.route("/batch")
class JobBatch(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.arguments(JobBatchCreateSchema)
    @blp.response(201, envelope(SubmittedJobSchema, many=True))
    @blp.alt_response(422, description="Some job in the batch failed validation; nothing was submitted.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Submit up to 1000 jobs in one transaction: all are accepted, or none."""
        return ok(_submit(body["jobs"]))


@blp.route("/<int:job_id>")
class JobDetail(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobSchema))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> dict[str, Any]:
        """A job's status, progress and error."""
        with ctx().transaction() as conn:
            return ok(service.get_visible_job(conn, caller(), job_id))


@blp.route("/<int:job_id>/cancel")
class JobCancel(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobSchema))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.alt_response(409, description="The job already finished.")
    @blp.doc(security=BEARER)
    def post(self, job_id: int) -> dict[str, Any]:
        """Cancel a job: a pending one at once; a running one is stopped by its worker
        (``cancel_requested`` is true until it is CANCELLED)."""
        with ctx().transaction() as conn:
            service.get_visible_job(conn, caller(), job_id)
            cancel_job(conn, job_id)
            return ok(service.get_visible_job(conn, caller(), job_id))


@blp.route("/<int:job_id>/result")
class JobResult(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobResultSchema))
    @blp.alt_response(404, description="No such job, not yours, or it has no result yet.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> dict[str, Any]:
        """The result payload and output files of a job that succeeded."""
        with ctx().transaction() as conn:
            return ok(service.get_result(conn, caller(), job_id))
