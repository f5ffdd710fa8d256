"""Jobs, the submissions that point at them, their attempts (assignments) and results."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, SmallInteger, String, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base, enum_values
from jobtypes import JobStatus

#: Queue tables churn: leave room on each page for HOT updates (heartbeats, progress) and
#: vacuum/analyze them after a small fraction of changes rather than the default 20 %.
QUEUE_TABLE_STORAGE = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.02",
}

DEFAULT_PRIORITY = 5
MIN_PRIORITY = 0
MAX_PRIORITY = 9

_status_type = Enum(
    JobStatus, name="job_status", native_enum=False, length=16, values_callable=enum_values,
    create_constraint=True, validate_strings=True,
)


class Job(Base):
    """One unit of work. ``attempt`` is the current attempt; assignments fence on it."""

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


class JobRequest(Base):
    """One submission. Several may share a job (joined an active one, or reused a cached result)."""

    __tablename__ = "job_requests"
    __table_args__ = (Index(None, "user_id", "job_id"), Index(None, "job_id"))

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: "created", "joined" (an identical job was active) or "cached" (a finished result was reused).
    origin: Mapped[str] = mapped_column(String(16))
    #: Each submission has its own callback: POSTed to ``{callback_url}/{job_id}`` when the job ends.
    callback_url: Mapped[str | None] = mapped_column(Text)
    callback_token: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


class JobAssignment(Base):
    """One attempt of a job by one worker, with its lease."""

    __tablename__ = "job_assignments"
    __table_args__ = (
        Index(None, "job_id", "attempt", unique=True),
        # Live leases only: the rescuer scans them all (a fleet's worth of rows). expires_at is
        # deliberately not indexed, so a heartbeat's extension is a HOT update.
        Index("ix_job_assignments_live_worker", "worker_id", postgresql_where=text("completed_at IS NULL")),
        {"postgresql_with": QUEUE_TABLE_STORAGE},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    worker_id: Mapped[int] = mapped_column(ForeignKey("workers.id", ondelete="CASCADE"))
    attempt: Mapped[int]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    expires_at: Mapped[dt.datetime]
    heartbeat_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    storage_uri: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[dt.datetime | None]
    #: SUCCEEDED, FAILED, CANCELLED, EXPIRED or RELEASED once completed.
    outcome: Mapped[str | None] = mapped_column(String(16))


class JobResult(Base):
    """What a successful attempt produced."""

    __tablename__ = "job_results"
    __table_args__ = (Index(None, "job_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    assignment_id: Mapped[int] = mapped_column(
        ForeignKey("job_assignments.id", ondelete="CASCADE"), unique=True
    )
    result_payload: Mapped[dict[str, Any] | None]
    storage_uri: Mapped[str | None] = mapped_column(Text)
    #: Output files: [{"key", "size", "sha256", "content_type"}].
    files: Mapped[dict[str, Any] | None]
    cache_valid: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())


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
