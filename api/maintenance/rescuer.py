"""The lease rescuer: takes back attempts whose worker stopped heartbeating.

After a start or an outage it holds off for a grace period (:mod:`api.maintenance.grace`):
leases that lapsed while nobody heard the heartbeats are renewed by the workers' next ones,
and only the attempts nobody claims again are rescued once the grace has passed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from sqlalchemy import Engine

from api.config import RESCUE_INTERVAL_S, Settings
from api.maintenance.grace import OutageGrace, OutageGraceConfig
from api.queue.leases import mark_lapsed_workers, rescue_expired

log = logging.getLogger(__name__)

RESCUE_BATCH = 1000


@dataclass(frozen=True)
class LeaseRescuerConfig:
    """How often the lease rescuer looks, how much one pass takes back, and its grace after an outage."""

    interval_s: float = RESCUE_INTERVAL_S
    #: Attempts rescued per pass at most.
    batch_size: int = RESCUE_BATCH
    grace: OutageGraceConfig = field(default_factory=OutageGraceConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the API settings."""
        return cls(interval_s=settings.rescue_interval_s, grace=OutageGraceConfig.from_settings(settings))


@dataclass(frozen=True)
class RescueResult:
    """What one pass did: the attempts taken back as (job id, type, the job's new status)."""

    rescued: list[tuple[int, str, str]]
    #: Workers newly stamped as holding an expired lease (their parked claims take no job).
    workers_lapsed: int = 0
    #: True when the pass did nothing because the grace after an outage is still running.
    held_off: bool = False


class LeaseRescuer:
    """Returns expired attempts to the queue, or times them out (or cancels them)."""

    name = "lease rescuer"

    def __init__(self, engine: Engine, config: LeaseRescuerConfig = LeaseRescuerConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s
        self._grace = OutageGrace(config.grace, self.name, clock)

    def run_once(self) -> RescueResult:
        """Stamp the lapsed workers, then rescue up to a batch of expired leases.

        Held off (nothing changed) while the grace after a start or an outage runs.
        """
        if self._grace.holds_off():
            return RescueResult(rescued=[], held_off=True)
        # In its own transaction, committed before the rescue: the claims the rescue's
        # notification wakes must already see their worker lapsed.
        with self.engine.begin() as conn:
            lapsed = mark_lapsed_workers(conn)
        with self.engine.begin() as conn:
            rescued = rescue_expired(conn, self.config.batch_size)
        self._grace.passed()
        for job_id, job_type, status in rescued:
            log.info("lease expired", extra={"job_id": job_id, "type": job_type, "status": status})
        return RescueResult(rescued=rescued, workers_lapsed=lapsed)
