"""Jobs as their requesters see them; deleting and pruning finished ones (sql/jobs.sql)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

from sqlalchemy import Connection, TextClause, text

from api.auth.guards import Caller
from api.database import contains_pattern
from api.errors import Conflict, NotFound
from api.queue.sql import Q
from jobtypes.protocol import output_prefix

#: Namespace of the per-user advisory lock held from a submission's active-job count to its
#: commit, so two concurrent submissions cannot both pass the limit ("skyl" in ASCII, shifted).
SUBMIT_LOCK_NAMESPACE = 0x736B796C << 32


def _who(who: Caller) -> dict[str, Any]:
    return {"is_admin": who.is_admin, "user_id": who.user_id}


def get_jobs(conn: Connection, job_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Jobs by id, without visibility checks (for rendering what a caller just submitted)."""
    rows = conn.execute(Q.jobs_by_id, {"ids": job_ids}).mappings().all()
    return {row["id"]: dict(row) for row in rows}


def get_visible_job(conn: Connection, who: Caller, job_id: int) -> dict[str, Any]:
    """The job, if the caller may see it; otherwise 404 (never 403: ids are not confirmed)."""
    row = conn.execute(Q.visible_job, {"job_id": job_id} | _who(who)).mappings().one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    return dict(row)


def get_result(conn: Connection, who: Caller, job_id: int) -> dict[str, Any]:
    """The result of a job that succeeded (payload and output files); 404 if there is none (yet)."""
    job = get_visible_job(conn, who, job_id)
    row = conn.execute(Q.result, {"job_id": job_id}).mappings().one_or_none()
    if row is None:
        raise NotFound(f"job {job_id} has no result (status {job['status']})", details={"status": job["status"]})
    return dict(row)


def job_attempts(conn: Connection, job_id: int) -> list[dict[str, Any]]:
    """A job's attempts as a timeline (worker, claimed, last heartbeat, ended, outcome, error),
    the running one last with outcome RUNNING. No visibility check: call after one."""
    return [dict(r) for r in conn.execute(Q.attempts_of, {"job_id": job_id}).mappings()]


def _filters(who: Caller, status: str | None, job_type: str | None, created_after: dt.datetime | None,
             created_before: dt.datetime | None, user_id: int | None, q: str | None) -> dict[str, Any]:
    return _who(who) | {"status": status, "type": job_type, "created_after": created_after,
                        "created_before": created_before, "owner": user_id, "q": contains_pattern(q)}


def list_jobs(conn: Connection, who: Caller, page: int, limit: int, status: str | None,
              job_type: str | None, sort: str, created_after: dt.datetime | None = None,
              created_before: dt.datetime | None = None,
              user_id: int | None = None, q: str | None = None) -> tuple[list[dict[str, Any]], int]:
    """One page of the jobs the caller may see, and how many there are in all.

    Users see their own jobs; admins see everyone's, or one user's with ``user_id``. ``q``
    keeps the jobs whose input (a tag, a file name) or error contains it.
    """
    params = _filters(who, status, job_type, created_after, created_before, user_id, q)
    total = conn.execute(Q.count_jobs, params).scalar_one()
    rows = conn.execute(_page_query(sort), params | {"limit": limit, "offset": (page - 1) * limit}).mappings().all()
    return [dict(r) for r in rows], total


def matching_job_ids(conn: Connection, who: Caller, limit: int, status: str | None = None,
                     job_type: str | None = None, created_after: dt.datetime | None = None,
                     created_before: dt.datetime | None = None, user_id: int | None = None,
                     q: str | None = None) -> list[int]:
    """The ids of up to ``limit`` jobs that :func:`list_jobs` shows with these filters, oldest first."""
    params = _filters(who, status, job_type, created_after, created_before, user_id, q) | {"limit": limit}
    return [int(i) for i in conn.execute(Q.matching_job_ids, params).scalars()]


#: The fields a job list can be sorted by.
SORTABLE = ("created_at", "updated_at", "priority", "id")


@functools.cache
def _page_query(sort: str) -> TextClause:
    """``list_jobs`` in the order ``sort`` names: a field of a closed list (JobListArgs.sort), with
    '-' for descending, never raw input."""
    column, direction = sort.lstrip("-"), "DESC" if sort.startswith("-") else "ASC"
    if column not in SORTABLE:
        raise ValueError(f"cannot sort jobs by {sort!r}")
    return text(Q.source("list_jobs").replace("ORDER_BY", f"j.{column} {direction}, j.id {direction}"))


def delete_job(conn: Connection, who: Caller, job_id: int) -> str:
    """Delete a finished job and everything recorded about it; return its output prefix.

    The caller deletes the objects under the prefix after the commit (the rows go first: a
    crash in between leaves unreferenced objects, never a result that points at nothing).
    An active job is a 409: cancel it first.
    """
    job = get_visible_job(conn, who, job_id)
    if conn.execute(Q.delete_finished, {"job_id": job_id}).scalar_one_or_none() is None:
        raise Conflict(f"job {job_id} is {job['status']}; cancel it before deleting it",
                       details={"status": job["status"]})
    return output_prefix(job_id)


def prune_finished(conn: Connection, age_s: float, limit: int) -> list[tuple[int, bool]]:
    """Delete up to ``limit`` jobs finished more than ``age_s`` ago, oldest first:
    (job id, whether it ran and so may have left outputs)."""
    return [(int(job_id), bool(ran)) for job_id, ran in conn.execute(Q.prune_finished,
                                                                      {"age_s": age_s, "limit": limit}).all()]


def invalidate_cache(conn: Connection, job_type: str) -> int:
    """Stop reusing every cached result of ``job_type``; returns how many results were valid."""
    return int(conn.execute(Q.invalidate_cache, {"type": job_type}).rowcount)


def account_limits(conn: Connection, user_id: int) -> tuple[int | None, int | None, int]:
    """An account's own limits (None: the defaults) and how many of its jobs are active."""
    row = conn.execute(Q.account_limits, {"user_id": user_id}).one_or_none()
    return (row[0], row[1], int(row[2])) if row is not None else (None, None, 0)


def submission_limits(conn: Connection, user_id: int, cap: int) -> tuple[int | None, int | None, int]:
    """Take the user's submission lock (held until the transaction ends), then read the account's
    own limits (None: the defaults) and its active jobs counted up to ``cap``."""
    conn.execute(Q.lock_submissions, {"lock_key": SUBMIT_LOCK_NAMESPACE + user_id})
    row = conn.execute(Q.submission_limits, {"user_id": user_id, "cap": cap}).one()
    return row[0], row[1], int(row[2])


def own_job_ids(conn: Connection, who: Caller, job_ids: list[int]) -> set[int]:
    """Those of ``job_ids`` whose outputs the caller may read (an admin: all that exist)."""
    if not job_ids:
        return set()
    return {int(i) for i in conn.execute(Q.own_job_ids, {"ids": job_ids} | _who(who)).scalars()}


def link_job_files(conn: Connection, job_ids: list[int], file_ids: list[list[int]]) -> None:
    """Record which uploaded files each job reads (a file is not deleted under an active job)."""
    pairs = [(job_id, fid) for job_id, fids in zip(job_ids, file_ids, strict=True) for fid in fids]
    if pairs:
        conn.execute(Q.link_job_files, {"jobs": [p[0] for p in pairs], "files": [p[1] for p in pairs]})


def file_thumbnails(conn: Connection, file_ids: list[int], job_type: str) -> dict[int, dict[str, Any]]:
    """The newest ``job_type`` job reading each file: {file_id: {"job_id", "status", "key"}}."""
    if not file_ids:
        return {}
    rows = conn.execute(Q.file_thumbnails, {"file_ids": file_ids, "type": job_type}).mappings()
    return {int(r["file_id"]): {"job_id": r["job_id"], "status": r["status"], "key": r["key"]} for r in rows}


def active_jobs_reading(conn: Connection, file_id: int) -> list[tuple[int, str]]:
    """The pending or running jobs that read the file (up to 100), oldest first: (id, type)."""
    return [(int(i), str(t)) for i, t in conn.execute(Q.active_jobs_reading, {"file_id": file_id}).all()]
