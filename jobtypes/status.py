"""Job states, and which of them are active (pending or running) or finished."""

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is in its life; stored in the database by value."""

    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


#: States in which a job still holds its place in the dedup index.
ACTIVE_STATUSES: frozenset[JobStatus] = frozenset({JobStatus.PENDING, JobStatus.IN_PROGRESS})
#: Terminal states: nothing moves a job out of these.
FINISHED_STATUSES: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.TIMED_OUT}
)
