"""The retention pruner: deletes finished jobs older than the retention period, in batches."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, text

from api.ratelimit.service import prune_counters

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


# Requests, assignments and results go with their job (ON DELETE CASCADE).
_PRUNE = text("""
    DELETE FROM jobs WHERE id IN (
        SELECT id FROM jobs
        WHERE finished_at IS NOT NULL
          AND finished_at < now() - make_interval(secs => :age_s)
          AND status IN ('SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT')
        ORDER BY finished_at
        LIMIT :limit
        FOR UPDATE SKIP LOCKED)
""")


class Pruner:
    """Keeps the hot tables small by deleting old finished jobs."""

    name = "pruner"

    def __init__(self, engine: Engine, config: PrunerConfig = PrunerConfig()) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s

    def run_once(self) -> int:
        """Delete up to ``max_batches`` batches of expired jobs; return how many went."""
        age_s = self.config.retention_days * 86400.0
        total = 0
        for _ in range(self.config.max_batches):
            with self.engine.begin() as conn:
                deleted = conn.execute(_PRUNE, {"age_s": age_s, "limit": self.config.batch_size}).rowcount
            total += deleted
            if deleted < self.config.batch_size:
                break
        if total:
            log.info("pruned finished jobs", extra={"count": total})
        # Rate-limit windows are useless once they have ended; a few minutes' worth stay.
        prune_counters(self.engine)
        return total
