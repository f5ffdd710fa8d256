"""Reading jobs as their requesters see them; deleting finished ones."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, text

from api.auth.guards import Caller
from api.errors import Conflict, NotFound
from jobtypes.protocol import output_prefix

_JOB_COLUMNS = """j.id, j.type, j.status, j.priority, j.run_after, j.attempt, j.max_attempts,
    j.input_payload, j.progress, j.error, j.cancel_requested, j.created_at, j.updated_at,
    j.started_at, j.finished_at"""

# A job is visible to an admin, or to the user who submitted it (dedup never shares a job
# across users, so every submission of a job is its owner's).
_VISIBLE = "(:is_admin OR j.user_id = :user_id)"


def _who(who: Caller) -> dict[str, Any]:
    return {"is_admin": who.is_admin, "user_id": who.user_id}


def get_jobs(conn: Connection, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Jobs by id, without visibility checks (for rendering what a caller just submitted)."""
    rows = conn.execute(
        text(f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.id = ANY(CAST(:ids AS bigint[]))"), {"ids": job_ids}
    ).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def get_visible_job(conn: Connection, who: Caller, job_id: int) -> dict[str, Any]:
    """The job, if the caller may see it; otherwise 404 (never 403: ids are not confirmed)."""
    row = conn.execute(
        text(f"SELECT {_JOB_COLUMNS} FROM jobs j WHERE j.id = :job_id AND {_VISIBLE}"),
        {"job_id": job_id} | _who(who),
    ).mappings().one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return dict(row)


def get_result(conn: Connection, who: Caller, job_id: int) -> dict[str, Any]:
    """The result of a job that succeeded (payload and output files); 404 if there is none (yet)."""
    job = get_visible_job(conn, who, job_id)
    row = conn.execute(
        text("""SELECT job_id, result_payload, storage_uri, files, created_at FROM job_results
                WHERE job_id = :job_id ORDER BY id DESC LIMIT 1"""),
        {"job_id": job_id},
    ).mappings().one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} has no result (status {job['status']})", details={"status": job["status"]})
    return dict(row)


def list_jobs(conn: Connection, who: Caller, page: int, limit: int, status: str | None,
              job_type: str | None, sort: str, created_after: dt.datetime | None = None,
              created_before: dt.datetime | None = None,
              user_id: int | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of the jobs the caller may see, and how many there are in all.

    Users see their own jobs; admins see everyone's, or one user's with ``user_id``.
    """
    column = sort.lstrip("-")
    direction = "DESC" if sort.startswith("-") else "ASC"
    # `column` and `direction` come from a closed list (JobListArgs.sort), never from raw input.
    where = f"""{_VISIBLE} AND (CAST(:status AS text) IS NULL OR j.status = :status)
                AND (CAST(:type AS text) IS NULL OR j.type = :type)
                AND (CAST(:created_after AS timestamptz) IS NULL OR j.created_at >= :created_after)
                AND (CAST(:created_before AS timestamptz) IS NULL OR j.created_at < :created_before)
                AND (CAST(:owner AS bigint) IS NULL OR j.user_id = :owner)"""
    params = _who(who) | {"status": status, "type": job_type, "created_after": created_after,
                          "created_before": created_before, "owner": user_id}
    total = conn.execute(text(f"SELECT count(*) FROM jobs j WHERE {where}"), params).scalar_one()
    rows = conn.execute(
        text(f"""SELECT {_JOB_COLUMNS} FROM jobs j WHERE {where}
                 ORDER BY j.{column} {direction}, j.id {direction} LIMIT :limit OFFSET :offset"""),
        params | {"limit": limit, "offset": (page - 1) * limit},
    ).mappings().all()
    return [dict(r) for r in rows], total


_DELETE_FINISHED = text("""
    DELETE FROM jobs j
    WHERE j.id = :job_id AND j.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
    RETURNING j.id
""")


def delete_job(conn: Connection, who: Caller, job_id: int) -> str:
    """Delete a finished job and everything recorded about it; return its output prefix.

    The caller deletes the objects under the prefix after the commit (the rows go first: a
    crash in between leaves unreferenced objects, never a result that points at nothing).
    An active job is a 409: cancel it first.
    """
    job = get_visible_job(conn, who, job_id)
    if conn.execute(_DELETE_FINISHED, {"job_id": job_id}).scalar_one_or_none() is None:
        raise Conflict(f"job {job_id} is {job['status']}; cancel it before deleting it",
                       details={"status": job["status"]})
    return output_prefix(job_id)
