"""Jobs, the submissions that joined them, and their attempts' history (with the result).

The live attempt sits on the job row itself (``lease_token``, ``worker_id``,
``lease_expires_at``): a claim, a heartbeat and a report each update that one row, and an
attempt leaves one row in ``job_attempts`` when it ends, carrying its outcome and result.
From submission to SUCCEEDED a job costs four row writes: insert, claim, report, history.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, SmallInteger, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base, enum_values
from jobtypes import JobStatus
from jobtypes.catalogue import DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY

#: Queue tables churn: leave room on each page for HOT updates (heartbeats, progress) and
#: vacuum/analyze them after a small fraction of changes rather than the default 20 %.
QUEUE_TABLE_STORAGE = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
}

_status_type = Enum(
    JobStatus, name="job_status", native_enum=False, length=16, values_callable=enum_values,
    create_constraint=True, validate_strings=True,
)


class Job(Base):
    """One unit of work, with its live attempt's lease while IN_PROGRESS.

    ``lease_token`` fences the live attempt: a random UUID drawn at each claim, so a token is
    never handed out twice, even when a crash rolls back a claim whose answer the worker got
    (claims commit asynchronously); ``attempt`` only counts, for people and retry limits.
    """

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim reads only this index: pending rows, in claim order, per type.
        Index("ix_jobs_claimable", "type", "priority", "run_after", "id",
              postgresql_where=text("status = 'PENDING'")),
        # Concurrent identical submissions by one user collide here and share one job. Dedup is
        # per user: a job is never shared across accounts, so one user's cancel or delete can
        # never reach another's work, and no one learns what someone else submitted.
        Index("uq_jobs_active_input", "user_id", "type", "input_hash", unique=True,
              postgresql_where=text("status IN ('PENDING', 'IN_PROGRESS')")),
        Index("ix_jobs_cached_input", "user_id", "type", "input_hash",
              postgresql_where=text("status = 'SUCCEEDED'")),
        Index("ix_jobs_finished_at", "finished_at",
              postgresql_where=text("finished_at IS NOT NULL")),
        Index(None, "user_id", "created_at"),
        # Live leases, per worker (drain, the admin views) and all of them (the rescuer's scan).
        # lease_expires_at is deliberately not indexed, so a heartbeat is a HOT update.
        Index("ix_jobs_running_worker", "worker_id", postgresql_where=text("status = 'IN_PROGRESS'")),
        CheckConstraint(f"priority BETWEEN {MIN_PRIORITY} AND {MAX_PRIORITY}", name="priority_range"),
        CheckConstraint("attempt >= 0 AND max_attempts >= 1", name="attempt_bounds"),
        {"postgresql_with": QUEUE_TABLE_STORAGE},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    status: Mapped[JobStatus] = mapped_column(_status_type, server_default=JobStatus.PENDING.value)
    #: Lower runs first (0 most urgent, 9 least), like Oban and graphile-worker.
    priority: Mapped[int] = mapped_column(SmallInteger, server_default=str(DEFAULT_PRIORITY))
    run_after: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    attempt: Mapped[int] = mapped_column(server_default="0")
    max_attempts: Mapped[int]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    input_payload: Mapped[dict[str, Any]]
    #: SHA-256 of the canonical JSON of the validated payload.
    input_hash: Mapped[str] = mapped_column(String(64))
    progress: Mapped[dict[str, Any] | None]
    error: Mapped[dict[str, Any] | None]
    cancel_requested: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    #: The live attempt while IN_PROGRESS (afterwards, the last one's): its fence token, worker,
    #: lease and last heartbeat.
    lease_token: Mapped[uuid.UUID | None]
    #: Not a foreign key (workers' rows are never deleted): a claim pays no referential check.
    worker_id: Mapped[int | None]
    lease_expires_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    #: The submission that created the job: its id (from the ``job_requests`` sequence, so every
    #: submission's id is unique) and its callback. Later submissions that join it, or reuse
    #: its result, are rows of ``job_requests``.
    request_id: Mapped[int] = mapped_column(server_default=text("nextval('job_requests_id_seq')"))
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_token: Mapped[str | None] = mapped_column(Text)


class JobRequest(Base):
    """A submission that joined an active job or reused a finished one's result (the one that
    created a job is recorded on the job row)."""

    __tablename__ = "job_requests"
    __table_args__ = (Index(None, "user_id", "job_id"), Index(None, "job_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: "joined" (an identical job was active) or "cached" (a finished result was reused).
    origin: Mapped[str] = mapped_column(String(16))
    #: Each submission has its own callback: POSTed to ``{callback_url}/{job_id}`` when the job ends.
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_token: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class JobAttempt(Base):
    """One attempt of a job, written once when it ends, with its outcome and result."""

    __tablename__ = "job_attempts"
    __table_args__ = (
        Index(None, "job_id", "attempt"),
        # Exactly one accepted completion per job, enforced by the database too.
        Index("uq_job_attempts_succeeded", "job_id", unique=True, postgresql_where=text("outcome = 'SUCCEEDED'")),
        # The history charts read attempts by when they ended.
        Index(None, "ended_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    lease_token: Mapped[uuid.UUID | None]
    worker_id: Mapped[int | None]
    #: When the job was due for this attempt (its run_after when claimed): the pickup latency is
    #: started_at - due_at. NULL for attempts older than the column.
    due_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    heartbeat_at: Mapped[dt.datetime | None]
    #: When its lease ran (or would have run) out.
    lease_expires_at: Mapped[dt.datetime | None]
    ended_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    #: SUCCEEDED, FAILED, CANCELLED, EXPIRED (lease lapsed) or RELEASED (handed back).
    outcome: Mapped[str] = mapped_column(String(16))
    error: Mapped[dict[str, Any] | None]
    #: What a successful attempt produced: its payload and output files
    #: ([{"key", "size", "sha256", "content_type", "name"}]).
    result_payload: Mapped[dict[str, Any] | None]
    storage_uri: Mapped[str | None] = mapped_column(Text)
    files: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    #: False once the result may no longer be reused by identical submissions.
    cache_valid: Mapped[bool] = mapped_column(server_default=text("true"))


class IdempotencyKey(Base):
    """A submission's ``Idempotency-Key``: a repeat of the key gets the first answer back.

    Written in the transaction that creates the jobs, so a key exists exactly when its
    submission committed; a client whose request timed out or answered 503 retries with the
    same key and learns what happened instead of submitting twice.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index(None, "created_at"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 of the method, path and body: the same key with another request is refused.
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(SmallInteger)
    #: What the first answer was made of: [{"job_id", "request_id", "origin"}, ...].
    submitted: Mapped[list[dict[str, Any]]] = mapped_column(JSONB)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
