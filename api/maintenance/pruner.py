"""The retention pruner: deletes finished jobs older than the retention period, in batches, and
what else only needs keeping for a while (rate-limit windows, scaling decisions, idempotency keys,
console sessions)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine

from api.auth.sessions import prune_sessions
from api.fleet.service import DECISION_RETENTION_S, DECISIONS_KEPT_PER_POOL, prune_decisions
from api.jobs.idempotency import IDEMPOTENCY_KEY_TTL_S, prune_keys
from api.queue.jobs import prune_finished
from api.ratelimit.service import prune_counters
from storage import Storage, StorageError

log = logging.getLogger(__name__)

PRUNE_INTERVAL_S = 300.0
RETENTION_DAYS = 7.0
PRUNE_BATCH = 1000
#: Batches per pass, so one pass never holds the database for long.
PRUNE_MAX_BATCHES = 20


@dataclass(frozen=True)
class PrunerConfig:
    interval_s: float = PRUNE_INTERVAL_S
    retention_days: float = RETENTION_DAYS
    batch_size: int = PRUNE_BATCH
    max_batches: int = PRUNE_MAX_BATCHES
    #: Scaling decisions: the newest this many per pool, none older than decision_retention_s.
    decisions_per_pool: int = DECISIONS_KEPT_PER_POOL
    decision_retention_s: float = DECISION_RETENTION_S
    #: Submissions' Idempotency-Keys older than this are forgotten.
    idempotency_key_ttl_s: float = IDEMPOTENCY_KEY_TTL_S




class Pruner:
    """Keeps the hot tables small by deleting old finished jobs, and their outputs in storage."""

    name = "pruner"

    def __init__(self, engine: Engine, config: PrunerConfig = PrunerConfig(),
                 storage: Storage | None = None) -> None:
        self.engine = engine
        self.config = config
        self.storage = storage
        self.interval_s = config.interval_s

    def run_once(self) -> int:
        """Delete up to ``max_batches`` batches of expired jobs, then ended rate-limit windows, old
        scaling decisions, expired idempotency keys and ended console sessions; return how many
        jobs went."""
        age_s = self.config.retention_days * 86400.0
        total = 0
        for _ in range(self.config.max_batches):
            with self.engine.begin() as conn:
                rows = prune_finished(conn, age_s, self.config.batch_size)
            deleted = len(rows)
            # After the commit: a crash in between leaves unreferenced objects, never a result
            # whose files are gone.
            self._delete_outputs([job_id for job_id, ran in rows if ran])
            total += deleted
            if deleted < self.config.batch_size:
                break
        if total:
            log.info("pruned finished jobs", extra={"count": total})
        # Rate-limit windows are useless once they have ended; a few minutes' worth stay.
        prune_counters(self.engine)
        decisions = prune_decisions(self.engine, self.config.decisions_per_pool, self.config.decision_retention_s)
        if decisions:
            log.info("pruned scaling decisions", extra={"count": decisions})
        keys = prune_keys(self.engine, self.config.idempotency_key_ttl_s, self.config.batch_size,
                          self.config.max_batches)
        if keys:
            log.info("pruned idempotency keys", extra={"count": keys})
        with self.engine.begin() as conn:
            sessions = prune_sessions(conn)
        if sessions:
            log.info("pruned ended console sessions", extra={"count": sessions})
        return total

    def _delete_outputs(self, job_ids: list[int]) -> None:
        if self.storage is None:
            return
        for job_id in job_ids:
            try:
                self.storage.delete_prefix(f"jobs/{job_id}")
            except StorageError:
                log.warning("could not delete the outputs of pruned job %s", job_id, exc_info=True)
