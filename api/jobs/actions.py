"""``/api/jobs/{id}/retry`` and ``/api/jobs/bulk``: act on finished jobs, or on many at once."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, Caller, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import envelope, ok
from api.errors import ApiError
from api.jobs.schemas import MAX_BATCH, BulkActionSchema, BulkResultSchema, JobSchema
from api.queue import jobs as queue_jobs
from api.queue.submit import cancel_job, retry_job
from jobtypes import get_job_type

blp = Blueprint("job-actions", __name__, url_prefix="/api/jobs", description="Run again; act on many jobs.")

SUBMITTERS = (Role.USER, Role.ADMIN)


def _retry(conn: Any, who: Caller, job_id: int) -> None:
    job = queue_jobs.get_visible_job(conn, who, job_id)
    known = get_job_type(job["type"])
    retry_job(conn, job_id, known.retry.max_attempts if known else 1)


@blp.route("/<int:job_id>/retry")
class JobRetry(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobSchema))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.alt_response(409, description="The job is active or SUCCEEDED, or an identical job of yours is active.")
    @blp.doc(security=BEARER)
    def post(self, job_id: int) -> dict[str, Any]:
        """Run a FAILED, CANCELLED or TIMED_OUT job again: PENDING now, with its type's number of
        attempts on top of those it made (its attempts so far stay in its history)."""
        who = caller()
        with ctx().transaction() as conn:
            _retry(conn, who, job_id)
            return ok(queue_jobs.get_visible_job(conn, who, job_id))


@blp.route("/bulk")
class JobBulk(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.arguments(BulkActionSchema)
    @blp.response(200, envelope(BulkResultSchema))
    @blp.alt_response(422, description="Neither or both of ids and filter, or an unknown action.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Cancel, delete or retry many jobs: the listed ``ids``, or every job a ``filter`` (the
        filters of ``GET /api/jobs``) matches, up to 1000 per call. Each job is done or refused on
        its own (``refused`` says why: not found, still active, already finished…)."""
        c, who = ctx(), caller()
        action = body["action"]
        with c.transaction() as conn:
            if "ids" in body:
                ids, more = list(dict.fromkeys(body["ids"])), False
            else:
                f = body["filter"]
                found = queue_jobs.matching_job_ids(conn, who, MAX_BATCH + 1, f["status"], f["type"],
                                                    f["created_after"], f["created_before"], f["user_id"], f["q"])
                ids, more = found[:MAX_BATCH], len(found) > MAX_BATCH
            done: list[int] = []
            refused: list[dict[str, Any]] = []
            prefixes: list[str] = []
            for job_id in ids:
                try:
                    with conn.begin_nested():
                        if action == "cancel":
                            queue_jobs.get_visible_job(conn, who, job_id)
                            cancel_job(conn, job_id)
                        elif action == "delete":
                            prefixes.append(queue_jobs.delete_job(conn, who, job_id))
                        else:
                            _retry(conn, who, job_id)
                    done.append(job_id)
                except ApiError as exc:
                    refused.append({"id": job_id, "code": exc.code, "message": exc.message})
        for prefix in prefixes:  # the rows went first (see delete_job)
            c.storage.delete_prefix(prefix)
        return ok({"action": action, "done": done, "refused": refused, "more": more})
