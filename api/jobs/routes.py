"""``/api/jobs``: submit (one or a batch), list, read (ETag), cancel, result, download, delete, limits."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from typing import Any

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint
from sqlalchemy import Connection

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import envelope, ok
from api.errors import Conflict, ValidationFailed
from api.files.routes import download_entry
from api.files.schemas import DownloadSchema
from api.jobs import idempotency
from api.jobs.archive import zip_stream
from api.jobs.inputs import check_inputs
from api.jobs.limits import check_submission, limits_for
from api.jobs.schemas import (
    JobBatchCreateSchema,
    JobCreateSchema,
    JobDeletedSchema,
    JobListArgs,
    JobResultSchema,
    JobSchema,
    LimitsSchema,
    SubmittedJobSchema,
)
from api.pagination import pagination
from api.queue import jobs as queue_jobs
from api.queue.jobs import link_job_files
from api.queue.submit import NewJob, Submitted, cancel_job, enqueue_jobs
from jobtypes import get_job_type
from storage.netguard import ForbiddenAddress

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


def _check_callbacks(bodies: list[dict[str, Any]]) -> None:
    """Refuse callback URLs the dispatcher would refuse, now rather than when the job ends."""
    problems: dict[str, list[str]] = {}
    for i, body in enumerate(bodies):
        if body["callback_url"]:
            try:
                ctx().guard.check_url(body["callback_url"])
            except ForbiddenAddress as exc:
                problems[f"jobs.{i}.callback_url" if len(bodies) > 1 else "callback_url"] = [str(exc)]
    if problems:
        summary = "; ".join(f"{p}: {' '.join(m)}" for p, m in problems.items())
        raise ValidationFailed(f"Validation failed: {summary}", details={"location": "json", "fields": problems})


Answer = tuple[list[dict[str, Any]], int, dict[str, str]]


def _submit(bodies: list[dict[str, Any]], status_of: Callable[[list[Submitted]], int]) -> Answer:
    """Submit, or replay the answer stored under the request's ``Idempotency-Key``.

    Returns the submitted jobs, the status code and the headers to answer with.
    """
    c, who = ctx(), caller()
    key = idempotency.parse_key(request.headers.get(idempotency.HEADER))
    ttl_s = c.settings.idempotency_key_ttl_s
    hash_ = idempotency.request_hash(request.method, request.path, request.get_data()) if key else ""
    if key is not None:
        with c.transaction() as conn:
            stored = idempotency.find_answer(conn, who.user_id, key, ttl_s)
        if stored is not None:
            return _answer(stored, hash_, replayed=True)
    _check_callbacks(bodies)
    new_jobs = [_new_job(b) for b in bodies]

    def submit(conn: Connection) -> tuple[idempotency.StoredAnswer, bool]:
        """The submission's transaction: (the answer, whether it is a replay)."""
        # The key first: a concurrent request with the same key waits here for this one's outcome.
        if key is not None and not idempotency.claim_key(conn, who.user_id, key, hash_, ttl_s):
            # A request with this key committed while this one waited on its row.
            found = idempotency.find_answer(conn, who.user_id, key, ttl_s)
            if found is None:  # deleted at once with its account: nothing to replay, nothing to do
                raise Conflict(f"this {idempotency.HEADER} was just used and is gone; retry")
            return found, True
        file_ids = check_inputs(conn, who, c.guard, bodies)
        submitted = enqueue_jobs(conn, who.user_id, new_jobs)
        check_submission(conn, who, c.settings, bodies, sum(s.origin == "created" for s in submitted))
        link_job_files(conn, [s.job_id for s in submitted], file_ids)
        answer = idempotency.StoredAnswer(hash_, status_of(submitted), submitted)
        if key is not None:
            idempotency.complete_key(conn, who.user_id, key, answer)
        return answer, False

    # Concurrent submissions of one user that share inputs wait on each other's new rows, and
    # two batches holding them in opposite orders deadlock: the one PostgreSQL rolls back runs again.
    answer, replayed = c.run_transaction(submit)
    # Read back after the commit: the NOTIFY goes out, and workers start, sooner.
    return _answer(answer, hash_, replayed)


def _answer(answer: idempotency.StoredAnswer, hash_: str, replayed: bool) -> Answer:
    """The jobs as they are now, with each submission's origin and request id, and the status.

    A replay (the first answer under a key again) is refused when the key came with another
    request, and says it is a replay in a header.
    """
    if replayed:
        idempotency.check_same_request(answer, hash_)
    with ctx().read() as conn:
        jobs = queue_jobs.get_jobs(conn, [s.job_id for s in answer.submitted])
    gone = sorted({s.job_id for s in answer.submitted} - jobs.keys())
    if gone:
        # Only a finished job can be deleted: a replay after a DELETE, or a reused result deleted at once.
        raise Conflict(f"job(s) {', '.join(map(str, gone))} of this submission were deleted since; "
                       "submit again (with a new Idempotency-Key, if you sent one)",
                       details={"deleted_job_ids": gone})
    data = [jobs[s.job_id] | {"request_id": s.request_id, "origin": s.origin} for s in answer.submitted]
    return data, answer.status_code, {idempotency.REPLAYED_HEADER: "true"} if replayed else {}


def _single_status(submitted: list[Submitted]) -> int:
    return 201 if submitted[0].origin == "created" else 200


def _batch_status(submitted: list[Submitted]) -> int:
    return 201


@blp.route("")
class Jobs(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.arguments(JobListArgs, location="query")
    @blp.response(200, envelope(JobSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """List the jobs you submitted (admins: everyone's), newest first; ``meta.pagination``."""
        with ctx().transaction() as conn:
            jobs, total = queue_jobs.list_jobs(conn, caller(), args["page"], args["limit"], args["status"],
                                            args["type"], args["sort"], args["created_after"],
                                            args["created_before"], args["user_id"], args["q"])
        return ok(jobs, {"pagination": pagination(args["page"], args["limit"], total)})

    @require_roles(*SUBMITTERS)
    @blp.arguments(JobCreateSchema)
    @blp.response(201, envelope(SubmittedJobSchema), headers=idempotency.REPLAYED_HEADER_DOC)
    @blp.alt_response(200, schema=envelope(SubmittedJobSchema), headers=idempotency.REPLAYED_HEADER_DOC,
                      description="An identical job was already active (joined) or its result was reused (cached).")
    @blp.alt_response(409, description="The jobs an Idempotency-Key submitted were deleted since.")
    @blp.alt_response(422, description="The body or its input_payload failed validation, or the "
                                       "Idempotency-Key is malformed or was used with another request.")
    @blp.alt_response(429, description="LIMIT_EXCEEDED: max_active_jobs (see GET /api/jobs/limits).")
    @blp.doc(security=BEARER, parameters=[idempotency.KEY_PARAMETER])
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Submit a job. Identical active submissions share one job; a cached result is reused
        unless ``cache`` is false. With an ``Idempotency-Key`` a retry gets the first answer back."""
        (job,), status, headers = _submit([body], _single_status)
        return ok(job), status, headers


@blp.route("/batch")
class JobBatch(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.arguments(JobBatchCreateSchema)
    @blp.response(201, envelope(SubmittedJobSchema, many=True), headers=idempotency.REPLAYED_HEADER_DOC)
    @blp.alt_response(409, description="The jobs an Idempotency-Key submitted were deleted since.")
    @blp.alt_response(422, description="Some job in the batch failed validation (nothing was submitted), or "
                                       "the Idempotency-Key is malformed or was used with another request.")
    @blp.doc(security=BEARER, parameters=[idempotency.KEY_PARAMETER])
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Submit up to 1000 jobs in one transaction: all are accepted, or none. With an
        ``Idempotency-Key`` a retry gets the first answer back."""
        jobs, status, headers = _submit(body["jobs"], _batch_status)
        return ok(jobs), status, headers


@blp.route("/limits")
class JobLimits(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(LimitsSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """Your limits: active jobs (and how many you have), priority allowance, sizes, rate."""
        c = ctx()
        with c.transaction() as conn:
            return ok(limits_for(conn, caller(), c.settings).as_dict())


@blp.route("/<int:job_id>")
class JobDetail(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.etag
    @blp.response(200, envelope(JobSchema))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> dict[str, Any]:
        """A job's status, progress and error. Send ``If-None-Match`` with the last ETag: 304
        while nothing changed."""
        with ctx().transaction() as conn:
            return ok(queue_jobs.get_visible_job(conn, caller(), job_id))

    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobDeletedSchema))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.alt_response(409, description="The job is still pending or running: cancel it first.")
    @blp.doc(security=BEARER)
    def delete(self, job_id: int) -> dict[str, Any]:
        """Delete a finished job's data: its record, result and output files."""
        c = ctx()
        with c.transaction() as conn:
            prefix = queue_jobs.delete_job(conn, caller(), job_id)
        return ok({"id": job_id, "deleted_objects": c.storage.delete_prefix(prefix)})


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
            queue_jobs.get_visible_job(conn, caller(), job_id)
            cancel_job(conn, job_id)
            return ok(queue_jobs.get_visible_job(conn, caller(), job_id))


@blp.route("/<int:job_id>/result")
class JobResult(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(JobResultSchema))
    @blp.alt_response(404, description="No such job, not yours, or it has no result yet.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> dict[str, Any]:
        """The result payload and output files of a job that succeeded."""
        with ctx().transaction() as conn:
            return ok(queue_jobs.get_result(conn, caller(), job_id))


def _outputs(job_id: int) -> list[dict[str, Any]]:
    with ctx().transaction() as conn:
        job = queue_jobs.get_visible_job(conn, caller(), job_id)
        if job["status"] != "SUCCEEDED":
            raise Conflict(f"job {job_id} is {job['status']}; outputs exist once it has SUCCEEDED",
                           details={"status": job["status"]})
        files: list[dict[str, Any]] = queue_jobs.get_result(conn, caller(), job_id)["files"] or []
    return files


@blp.route("/<int:job_id>/download")
class JobDownload(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, envelope(DownloadSchema, many=True))
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.alt_response(409, description="The job has not succeeded.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> dict[str, Any]:
        """A download URL for every output file (S3 presigned, or a signed link served here),
        each valid until its ``expires_at``. All files are listed, however many."""
        entries = [download_entry(f["key"], f.get("name") or posixpath.basename(f["key"]), f.get("size"),
                                  f.get("sha256"), f.get("content_type")) for f in _outputs(job_id)]
        return ok(entries, {"count": len(entries)})


@blp.route("/<int:job_id>/download.zip")
class JobDownloadZip(MethodView):
    @require_roles(*SUBMITTERS)
    @blp.response(200, description="application/zip: every output file, streamed.")
    @blp.alt_response(404, description="No such job, or not yours.")
    @blp.alt_response(409, description="The job has not succeeded.")
    @blp.doc(security=BEARER)
    def get(self, job_id: int) -> Response:
        """All output files as one zip, streamed as it is built."""
        files = _outputs(job_id)
        storage = ctx().storage
        return Response(zip_stream(storage, files), mimetype="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="job-{job_id}.zip"'})
