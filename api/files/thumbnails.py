"""Quick-look pictures of uploaded files: made by a worker (``fits.thumbnail``), never here.

An upload queues one ``fits.thumbnail`` job in the upload's transaction, as its owner, linked
to the file like any job that reads it; the file's thumbnail is that job's ``thumbnail.png``
once it has succeeded. It counts as one of the owner's jobs, like any other.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from api.queue.jobs import file_thumbnails, link_job_files
from api.queue.submit import NewJob, enqueue_jobs
from jobtypes.catalogue import MAX_PRIORITY
from jobtypes.fitsfiles import FITS_THUMBNAIL


def queue_thumbnail(conn: Connection, user_id: int, file_id: int) -> int:
    """Queue the file's thumbnail job (low priority: people's jobs go first); its id."""
    payload: dict[str, Any] = FITS_THUMBNAIL.inputs.load({"file": {"file_id": file_id}})
    (submitted,) = enqueue_jobs(conn, user_id, [NewJob(FITS_THUMBNAIL.name, payload,
                                                        FITS_THUMBNAIL.retry.max_attempts, priority=MAX_PRIORITY)])
    link_job_files(conn, [submitted.job_id], [[file_id]])
    return submitted.job_id


def thumbnails(conn: Connection, file_ids: list[int]) -> dict[int, dict[str, Any]]:
    """Each file's thumbnail job: ``{"job_id", "status", "key"}`` (key: the picture, once made)."""
    return file_thumbnails(conn, file_ids, FITS_THUMBNAIL.name)
