"""The callback outbox. Rows are written by a trigger on ``jobs`` in the transaction that ends a job."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, SmallInteger, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from api.database import Base


class CallbackDelivery(Base):
    """One POST to make: ``{url}/{job_id}`` for one submission of a job that ended."""

    __tablename__ = "callback_deliveries"
    __table_args__ = (
        # The dispatcher's scan: undelivered rows that are due, oldest first.
        Index("ix_callback_deliveries_due", "next_attempt_at",
              postgresql_where=text("delivered_at IS NULL AND gave_up_at IS NULL")),
        Index(None, "job_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    #: The submission that asked: a joined or cached one's row; None for the job's creator
    #: (whose callback is on the job row).
    job_request_id: Mapped[int | None] = mapped_column(ForeignKey("job_requests.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(Text)
    #: The job's status when it ended (SUCCEEDED, FAILED, CANCELLED, TIMED_OUT).
    job_status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(SmallInteger, server_default="0")
    next_attempt_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
    #: The receiver's last HTTP status, or the error that prevented an answer.
    last_status: Mapped[int | None] = mapped_column(SmallInteger)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None]
    gave_up_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(server_default=func.now())
