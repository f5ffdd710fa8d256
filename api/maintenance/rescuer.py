"""The lease rescuer: takes back attempts whose worker stopped heartbeating.

A lease also lapses when nobody was there to hear the heartbeats: the API was down, or its
database was. Rescuing those attempts the moment the API is back would throw away work the
workers finished (and still hold) during the outage, so after an outage the rescuer holds off
for a grace period: the workers' next heartbeats renew their leases, their held results
arrive, and only the attempts nobody claims again are rescued once the grace has passed.
The rescuer cannot tell an outage from a worker that died, so it treats every start (a
restarted API, a new maintenance leader) and every gap in its own passes longer than
``outage_after_s`` as a possible outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine

from api.queue.leases import mark_lapsed_workers, rescue_expired
from api.queue.workers import mark_lost_workers

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
    #: After a start or an outage, nothing is rescued (and no worker marked lost) for this long.
    #: 0 turns the grace off (tests of the rescue itself); the API uses one lease.
    outage_grace_s: float = 0.0
    #: A gap this long between two passes counts as an outage (leases may have lapsed unheard).
    outage_after_s: float = 5.0


@dataclass(frozen=True)
class RescueResult:
    rescued: list[tuple[int, str, str]]
    workers_lost: int
    #: True when the pass did nothing because the grace after an outage is still running.
    held_off: bool = False


class Rescuer:
    """Returns expired attempts to the queue (or times them out) and marks silent workers lost."""

    name = "rescuer"

    def __init__(self, engine: Engine, config: RescuerConfig = RescuerConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s
        self._clock = clock
        self._last_pass_at: float | None = None
        self._grace_until = 0.0

    def run_once(self) -> RescueResult:
        """One pass: rescue up to a batch of expired leases, then mark lost workers.

        Held off (nothing changed) while the grace after a start or an outage runs.
        """
        now = self._clock()
        if self.config.outage_grace_s > 0 and (
                self._last_pass_at is None or now - self._last_pass_at > self.config.outage_after_s):
            self._grace_until = now + self.config.outage_grace_s
            gap = "start" if self._last_pass_at is None else f"{now - self._last_pass_at:.1f} s without a pass"
            log.info("rescuer resuming after %s: leases get %.1f s for their heartbeats to return",
                     gap, self.config.outage_grace_s)
        if now < self._grace_until:
            self._passed()
            return RescueResult(rescued=[], workers_lost=0, held_off=True)
        with self.engine.begin() as conn:
            mark_lapsed_workers(conn)
        with self.engine.begin() as conn:
            rescued = rescue_expired(conn, self.config.batch_size)
        with self.engine.begin() as conn:
            lost = mark_lost_workers(conn, self.config.lost_worker_after_s)
        self._passed()
        for job_id, job_type, status in rescued:
            log.info("lease expired", extra={"job_id": job_id, "type": job_type, "status": status})
        return RescueResult(rescued=rescued, workers_lost=lost)

    def _passed(self) -> None:
        """Record a pass: a failed one (the database is away) does not, so the gap grows."""
        self._last_pass_at = self._clock()
