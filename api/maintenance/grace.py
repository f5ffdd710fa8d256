"""The grace after an outage, shared by the services that judge workers by their silence.

A lease also lapses, and a worker also falls silent, when nobody was there to hear the
heartbeats: the API was down, or its database was. Acting on that the moment the API is back
would throw away work the workers finished (and still hold) during the outage, or make every
worker register again. So after an outage the lease rescuer and the worker reaper hold off
for a grace period: the workers' next heartbeats renew their leases and their ``last seen``,
their held results arrive, and only what nobody comes back for is acted on once the grace
has passed. A service cannot tell an outage from a worker that died, so it treats every
start (a restarted API, a new maintenance leader) and every gap in its own passes longer
than ``after_s`` as a possible outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Self

from api.config import Settings

log = logging.getLogger(__name__)

#: A gap this long between two passes counts as an outage unless the settings say otherwise.
OUTAGE_AFTER_S = 5.0


@dataclass(frozen=True)
class OutageGraceConfig:
    """How long a service holds off after a possible outage, and what gap between passes counts as one."""

    #: After a start or an outage, the service does nothing for this long. 0 turns the grace off
    #: (tests of the rescue itself); the API uses ``outage_grace_s``, or one lease.
    grace_s: float = 0.0
    #: A gap this long between two passes counts as an outage (leases may have lapsed unheard).
    after_s: float = OUTAGE_AFTER_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the API settings."""
        return cls(grace_s=settings.outage_grace_s or settings.lease_s,
                   # A shorter gap cannot have cost a heartbeating worker its lease.
                   after_s=max(2 * settings.rescue_interval_s, settings.lease_s - settings.heartbeat_interval_s))


class OutageGrace:
    """One service's view of outages: call :meth:`holds_off` as a pass starts and :meth:`passed`
    when it has done its work (a pass that failed, the database being away, is not recorded,
    so the gap grows)."""

    def __init__(self, config: OutageGraceConfig, service: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._service = service
        self._clock = clock
        self._last_pass_at: float | None = None
        self._grace_until = 0.0

    def holds_off(self) -> bool:
        """Whether this pass must change nothing: a grace is running, or starts now. A pass held
        off counts as a pass (the service was there to hear the heartbeats)."""
        now = self._clock()
        if self.config.grace_s > 0 and (
                self._last_pass_at is None or now - self._last_pass_at > self.config.after_s):
            self._grace_until = now + self.config.grace_s
            gap = "start" if self._last_pass_at is None else f"{now - self._last_pass_at:.1f} s without a pass"
            log.info("%s resuming after %s: workers get %.1f s for their heartbeats to return",
                     self._service, gap, self.config.grace_s)
        if now < self._grace_until:
            self.passed()
            return True
        return False

    def passed(self) -> None:
        """Record a pass that did its work."""
        self._last_pass_at = self._clock()
