"""The job pruner: deletes finished jobs older than the retention period, in batches, and
their outputs in storage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Self

from sqlalchemy import Engine

from api.config import PRUNE_INTERVAL_S, RETENTION_DAYS, Settings
from api.queue.jobs import prune_finished
from storage import Storage, StorageError

log = logging.getLogger(__name__)

PRUNE_BATCH = 1000
#: Batches per pass, so one pass never holds the database for long.
PRUNE_MAX_BATCHES = 20


@dataclass(frozen=True)
class JobPrunerConfig:
    """How long finished jobs are kept, and how much one pass deletes."""

    interval_s: float = PRUNE_INTERVAL_S
    #: Jobs finished longer ago than this go, with their attempts, results and outputs.
    retention_days: float = RETENTION_DAYS
    batch_size: int = PRUNE_BATCH
    max_batches: int = PRUNE_MAX_BATCHES

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the API settings."""
        return cls(interval_s=settings.prune_interval_s, retention_days=settings.retention_days)


@dataclass(frozen=True)
class PruneResult:
    """What one pass deleted."""

    jobs: int
    #: Pruned jobs whose outputs were deleted from storage (jobs that never ran have none).
    outputs_deleted: int = 0
    #: Pruned jobs whose outputs could not be deleted (left in storage, logged).
    outputs_failed: int = 0


class JobPruner:
    """Keeps the hot tables small by deleting old finished jobs, and their outputs in storage."""

    name = "job pruner"

    def __init__(self, engine: Engine, config: JobPrunerConfig = JobPrunerConfig(),
                 storage: Storage | None = None) -> None:
        self.engine = engine
        self.config = config
        self.storage = storage
        self.interval_s = config.interval_s

    def run_once(self) -> PruneResult:
        """Delete up to ``max_batches`` batches of expired jobs, and the outputs of those that ran."""
        age_s = self.config.retention_days * 86400.0
        jobs = deleted_outputs = failed_outputs = 0
        for _ in range(self.config.max_batches):
            with self.engine.begin() as conn:
                rows = prune_finished(conn, age_s, self.config.batch_size)
            # After the commit: a crash in between leaves unreferenced objects, never a result
            # whose files are gone.
            deleted, failed = self._delete_outputs([job_id for job_id, ran in rows if ran])
            jobs, deleted_outputs, failed_outputs = jobs + len(rows), deleted_outputs + deleted, failed_outputs + failed
            if len(rows) < self.config.batch_size:
                break
        if jobs:
            log.info("pruned finished jobs", extra={"count": jobs})
        return PruneResult(jobs=jobs, outputs_deleted=deleted_outputs, outputs_failed=failed_outputs)

    def _delete_outputs(self, job_ids: list[int]) -> tuple[int, int]:
        """Delete the outputs of these jobs: (how many jobs' went, how many failed)."""
        if self.storage is None:
            return 0, 0
        deleted = 0
        for job_id in job_ids:
            try:
                self.storage.delete_prefix(f"jobs/{job_id}")
            except StorageError:
                log.warning("could not delete the outputs of pruned job %s", job_id, exc_info=True)
            else:
                deleted += 1
        return deleted, len(job_ids) - deleted
