"""The data library's SQL: record, list, read and delete uploaded files."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from api.auth.guards import Caller
from api.database import contains_pattern
from api.errors import Conflict, NotFound
from api.queue.jobs import active_jobs_reading
from api.queue.submit import cancel_job
from jobtypes.fitsfiles import FITS_THUMBNAIL
from storage import StoredObject

#: A FITS file starts with this card (FITS standard 4.0, section 4.4.1.1).
FITS_SIGNATURE = b"SIMPLE  ="
FITS_CARD = 80

_COLUMNS = "id, name, size, sha256, content_type, storage_key, user_id, created_at"
_VISIBLE = "(:is_admin OR user_id = :user_id)"


def looks_like_fits(head: bytes) -> bool:
    """Whether the first bytes are a FITS primary header (``SIMPLE = T`` in the first card)."""
    if len(head) < FITS_CARD or not head.startswith(FITS_SIGNATURE):
        return False
    value = head[10:FITS_CARD].split(b"/")[0].strip()
    return value == b"T"


def upload_key(user_id: int, token: str, name: str) -> str:
    """Where an upload is stored: ``uploads/<user>/<random>/<name>``."""
    return f"uploads/{user_id}/{token}/{name}"


def record_file(conn: Connection, user_id: int, name: str, stored: StoredObject) -> dict[str, Any]:
    row = conn.execute(text(f"""
        INSERT INTO files (user_id, name, storage_key, size, sha256, content_type)
        VALUES (:user_id, :name, :key, :size, :sha256, :content_type)
        RETURNING {_COLUMNS}
    """), {"user_id": user_id, "name": name, "key": stored.key, "size": stored.size,
           "sha256": stored.sha256, "content_type": stored.content_type}).mappings().one()
    return dict(row)


def _who(who: Caller) -> dict[str, Any]:
    return {"is_admin": who.is_admin, "user_id": who.user_id}


def get_file(conn: Connection, who: Caller, file_id: int) -> dict[str, Any]:
    """The file, if the caller may see it (their own; admins: any); otherwise 404."""
    row = conn.execute(text(f"SELECT {_COLUMNS} FROM files WHERE id = :id AND {_VISIBLE}"),
                       {"id": file_id} | _who(who)).mappings().one_or_none()
    if row is None:
        raise NotFound(f"file {file_id} not found")
    return dict(row)


def list_files(conn: Connection, who: Caller, page: int, limit: int, sort: str,
               q: str | None) -> tuple[list[dict[str, Any]], int]:
    """One page of the caller's files (admins: everyone's) and the total."""
    column = sort.lstrip("-")
    direction = "DESC" if sort.startswith("-") else "ASC"
    # column/direction come from FileListArgs.sort's closed list.
    where = f"{_VISIBLE} AND (CAST(:q AS text) IS NULL OR name ILIKE :q)"
    params = _who(who) | {"q": contains_pattern(q)}
    total = conn.execute(text(f"SELECT count(*) FROM files WHERE {where}"), params).scalar_one()
    rows = conn.execute(text(f"""
        SELECT {_COLUMNS} FROM files WHERE {where}
        ORDER BY {column} {direction}, id {direction} LIMIT :limit OFFSET :offset
    """), params | {"limit": limit, "offset": (page - 1) * limit}).mappings().all()
    return [dict(r) for r in rows], total


def delete_file(conn: Connection, who: Caller, file_id: int) -> str:
    """Delete the file's row; return its storage key (the caller removes the object after commit).

    Locks the row first, then looks for active jobs in a new statement: a submission that
    references the file holds ``FOR KEY SHARE`` on it until it commits, so either we wait and
    then see its job (409), or it waits and then finds the file gone (422). Its thumbnail job,
    if still active, is cancelled rather than counted.
    """
    row = conn.execute(text(f"SELECT storage_key FROM files WHERE id = :id AND {_VISIBLE} FOR UPDATE"),
                       {"id": file_id} | _who(who)).one_or_none()
    if row is None:
        raise NotFound(f"file {file_id} not found")
    active = []
    for job_id, job_type in active_jobs_reading(conn, file_id):
        if job_type == FITS_THUMBNAIL.name:  # its quick-look picture is not worth keeping the file for
            cancel_job(conn, job_id)
        else:
            active.append(job_id)
    if active:
        raise Conflict(f"file {file_id} is an input of active jobs {list(active)}; wait for them or cancel them",
                       details={"job_ids": list(active)})
    conn.execute(text("DELETE FROM files WHERE id = :id"), {"id": file_id})
    return str(row[0])
