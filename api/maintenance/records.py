"""The record pruners: one service per table of records that only need keeping for a while.

Each deletes its table's ended rows by that table's own rule (rate-limit windows that ended,
scaling decisions beyond the newest per pool, idempotency keys past their time to live, console
sessions that ended), on the pruning interval. They share one config and one pass,
:meth:`RecordPruner.run_once`; a subclass says only which records and how they go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Self

from sqlalchemy import Engine

from api.auth.sessions import prune_sessions
from api.config import IDEMPOTENCY_KEY_TTL_S, PRUNE_INTERVAL_S, Settings
from api.fleet.service import DECISION_RETENTION_S, DECISIONS_KEPT_PER_POOL, prune_decisions
from api.jobs.idempotency import prune_keys
from api.ratelimit.service import prune_counters

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordPrunerConfig:
    """How often the record pruners run, and the rules of the tables that have settings."""

    interval_s: float = PRUNE_INTERVAL_S
    #: Scaling decisions: the newest this many per pool, none older than decision_retention_s.
    decisions_per_pool: int = DECISIONS_KEPT_PER_POOL
    decision_retention_s: float = DECISION_RETENTION_S
    #: Submissions' Idempotency-Keys older than this are forgotten.
    idempotency_key_ttl_s: float = IDEMPOTENCY_KEY_TTL_S

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the API settings."""
        return cls(interval_s=settings.prune_interval_s, idempotency_key_ttl_s=settings.idempotency_key_ttl_s)


@dataclass(frozen=True)
class RecordPruneResult:
    """What one pass deleted."""

    deleted: int


class RecordPruner:
    """Deletes one table's ended records each ``interval_s``, in bounded statements."""

    #: The service's name, and the records' name in the log.
    name: str
    records: str

    def __init__(self, engine: Engine, config: RecordPrunerConfig = RecordPrunerConfig()) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s

    def run_once(self) -> RecordPruneResult:
        """Delete the records that have ended; how many went."""
        deleted = self.prune()
        if deleted:
            log.info("pruned %s", self.records, extra={"count": deleted})
        return RecordPruneResult(deleted=deleted)

    def prune(self) -> int:
        """Delete this table's ended records; how many."""
        raise NotImplementedError


class RateLimitWindowPruner(RecordPruner):
    """Rate-limit windows are useless once they have ended; a few minutes' worth stay."""

    name = "rate-limit window pruner"
    records = "ended rate-limit windows"

    def prune(self) -> int:
        return prune_counters(self.engine)


class DecisionPruner(RecordPruner):
    """The manager's scaling decisions: the newest per pool stay, for the status and the console."""

    name = "decision pruner"
    records = "scaling decisions"

    def prune(self) -> int:
        return prune_decisions(self.engine, self.config.decisions_per_pool, self.config.decision_retention_s)


class IdempotencyKeyPruner(RecordPruner):
    """Idempotency-Keys past their time to live (already ignored by submissions)."""

    name = "idempotency key pruner"
    records = "idempotency keys"

    def prune(self) -> int:
        return prune_keys(self.engine, self.config.idempotency_key_ttl_s)


class ConsoleSessionPruner(RecordPruner):
    """Console sessions that expired or sat idle too long."""

    name = "console session pruner"
    records = "ended console sessions"

    def prune(self) -> int:
        with self.engine.begin() as conn:
            return prune_sessions(conn)


#: Every record pruner, in the order they run.
RECORD_PRUNERS: tuple[type[RecordPruner], ...] = (
    RateLimitWindowPruner, DecisionPruner, IdempotencyKeyPruner, ConsoleSessionPruner)
