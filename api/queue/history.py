"""The fleet over time for the console's charts (statements in sql/history.sql).

Read from ``job_attempts`` and ``workers``, so the charts survive restarts and show what the
database kept (finished jobs are pruned after the retention period).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from api.queue.sql import Q


@dataclass(frozen=True)
class Window:
    name: str
    bucket_s: int
    buckets: int

    @property
    def fresh_s(self) -> float:
        """How long an answer may be reused: a twelfth of a bucket, at most a minute."""
        return min(self.bucket_s / 12, 60.0)


#: The charts' time ranges: an hour by minute, a day by 15 minutes, a week by hour.
WINDOWS = {w.name: w for w in (Window("hour", 60, 60), Window("day", 900, 96), Window("week", 3600, 168))}


class HistoryCache:
    """The latest answer per window, reused for a while (:meth:`Window.fresh_s`): a week of
    attempts takes a few hundred milliseconds to aggregate, and every open overview asks."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[float, dict[str, Any]]] = {}

    def get(self, window: Window, read: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        with self._lock:
            kept = self._kept.get(window.name)
        if kept is not None and self._clock() - kept[0] < window.fresh_s:
            return kept[1]
        answer = read()
        with self._lock:
            self._kept[window.name] = (self._clock(), answer)
        return answer


def history(conn: Connection, window: Window) -> dict[str, Any]:
    """The window's series, one value per bucket (null where there was nothing to measure)."""
    params = {"bucket_s": window.bucket_s, "buckets": window.buckets}
    rows = conn.execute(Q.history, params).all()
    pickup = [row.pickup or [None, None, None] for row in rows]
    durations: dict[str, list[float | None]] = {}
    for n, job_type, p50 in conn.execute(Q.history_durations, params).all():
        if 0 <= n < window.buckets:
            durations.setdefault(job_type, [None] * window.buckets)[n] = p50
    workers = [int(w) for _, w in conn.execute(Q.history_workers, params).all()]
    return {
        "window": window.name, "bucket_s": window.bucket_s,
        "t": [float(row.bucket_start) for row in rows],
        "completed": [int(row.completed) for row in rows],
        "failed": [int(row.failed) for row in rows],
        "retried": [int(row.retried) for row in rows],
        "pickup_s": {"p50": [p[0] for p in pickup], "p95": [p[1] for p in pickup], "p99": [p[2] for p in pickup]},
        "duration_s": dict(sorted(durations.items())),
        "workers": workers,
    }
