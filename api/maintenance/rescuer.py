"""The lease rescuer: takes back attempts whose worker stopped heartbeating."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import Engine, text

from api.queue.leases import rescue_expired

log = logging.getLogger(__name__)

RESCUE_INTERVAL_S = 1.0
RESCUE_BATCH = 1000
#: A worker silent this long is marked stopped (its leases lapsed long before).
LOST_WORKER_AFTER_S = 60.0


@dataclass(frozen=True)
class RescuerConfig:
    interval_s: float = RESCUE_INTERVAL_S
    batch_size: int = RESCUE_BATCH
    lost_worker_after_s: float = LOST_WORKER_AFTER_S


@dataclass(frozen=True)
class RescueResult:
    rescued: list[tuple[int, str, str]]
    workers_lost: int


_MARK_LOST_WORKERS = text("""
    UPDATE workers SET stopped_at = now()
    WHERE stopped_at IS NULL AND last_heartbeat_at < now() - make_interval(secs => :after_s)
""")


class Rescuer:
    """Returns expired attempts to the queue (or times them out) and marks silent workers lost."""

    name = "rescuer"

    def __init__(self, engine: Engine, config: RescuerConfig = RescuerConfig()) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s

    def run_once(self) -> RescueResult:
        """One pass: rescue up to a batch of expired leases, then mark lost workers."""
        with self.engine.begin() as conn:
            rescued = rescue_expired(conn, self.config.batch_size)
        with self.engine.begin() as conn:
            lost = conn.execute(_MARK_LOST_WORKERS, {"after_s": self.config.lost_worker_after_s}).rowcount
        for job_id, job_type, status in rescued:
            log.info("lease expired", extra={"job_id": job_id, "type": job_type, "status": status})
        return RescueResult(rescued=rescued, workers_lost=lost)
