"""The worker reaper: marks stopped the workers not heard from for ``worker_lost_after_s``.

A lost worker must register again to claim (its leases lapsed, and were rescued, long
before). "Lost" has one definition, :attr:`api.config.Settings.worker_lost_after_s`, which
the admin views and metrics use too. After a start or an outage the reaper holds off for a
grace period (:mod:`api.maintenance.grace`), so the workers that kept running through it are
heard again before anyone is judged by their silence.
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
from api.queue.workers import mark_lost_workers

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerReaperConfig:
    """When a worker counts as lost, how often the reaper looks, and its grace after an outage."""

    #: A worker silent this long is lost: ``Settings.worker_lost_after_s``, never a second number.
    lost_after_s: float
    interval_s: float = RESCUE_INTERVAL_S
    grace: OutageGraceConfig = field(default_factory=OutageGraceConfig)

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the API settings."""
        # On the rescuer's interval: a worker is judged as often as its leases are.
        return cls(lost_after_s=settings.worker_lost_after_s, interval_s=settings.rescue_interval_s,
                   grace=OutageGraceConfig.from_settings(settings))


@dataclass(frozen=True)
class ReapResult:
    """What one pass did."""

    workers_lost: int
    #: True when the pass did nothing because the grace after an outage is still running.
    held_off: bool = False


class WorkerReaper:
    """Marks the workers silent for ``lost_after_s`` stopped."""

    name = "worker reaper"

    def __init__(self, engine: Engine, config: WorkerReaperConfig,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s
        self._grace = OutageGrace(config.grace, self.name, clock)

    def run_once(self) -> ReapResult:
        """Mark the lost workers stopped; held off while the grace after an outage runs."""
        if self._grace.holds_off():
            return ReapResult(workers_lost=0, held_off=True)
        with self.engine.begin() as conn:
            lost = mark_lost_workers(conn, self.config.lost_after_s)
        self._grace.passed()
        if lost:
            log.info("workers lost", extra={"count": lost})
        return ReapResult(workers_lost=lost)
