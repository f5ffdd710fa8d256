"""The event stream of one job, and the caps on open streams (per process, and per account in it).

A stream is a plain iterator of ``text/event-stream`` messages; it never touches Flask, so
it runs after the request context is gone. Every message has an ``id`` (a per-stream
sequence: a reconnecting client gets a fresh snapshot, so there is nothing to resume) and
a ``retry`` hint. Events:

- ``snapshot`` (the job) first;
- ``status`` (the job) when the status or the attempt changes and the job is not finished;
- ``progress`` ``{job_id, percent, stage, message}`` when the progress changes;
- last, one of ``completed`` / ``failed`` / ``cancelled`` / ``timed_out`` (the job), then the end.

Changes are read, not pushed: a NOTIFY only says "job 42 changed", and the stream reads
the job in a short transaction. Several changes between two reads arrive as one event
each (the newest progress, the newest status), which is what a progress bar needs.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from api.auth.guards import Caller
from api.errors import NotFound, ServiceUnavailable
from api.jobs.schemas import JobSchema
from api.queue.jobs import get_visible_job
from api.queue.notify import Subscription
from jobtypes import JobStatus

log = logging.getLogger(__name__)

#: The ``retry:`` hint: how long a client waits before reconnecting after the stream ends.
RECONNECT_MS = 3000
#: ``Retry-After`` when this process already serves as many streams as it may, or the account
#: as many as it may hold.
BUSY_RETRY_AFTER_S = 5
#: The caps :meth:`StreamSlots.acquire` reports, named as their settings are.
USER_CAP = "max_event_streams_per_user"
PROCESS_CAP = "max_event_streams"
#: Floor on the keepalive interval, which is also the fallback read interval.
MIN_KEEPALIVE_S = 0.1

#: The last event of a stream, by the job's finished status.
FINAL_EVENTS: dict[str, str] = {
    JobStatus.SUCCEEDED: "completed",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
    JobStatus.TIMED_OUT: "timed_out",
}

KEEPALIVE = b": keepalive\n\n"
_TIME_LIMIT = b": time limit reached; reconnect for a fresh snapshot\n\n"
_STOPPING = b": this server is stopping; reconnect for a fresh snapshot\n\n"

_JOB_SCHEMA = JobSchema()

Job = dict[str, Any]
Transaction = Callable[[], AbstractContextManager[Connection]]


@dataclass(frozen=True)
class StreamConfig:
    #: Send a comment when idle this long; read the job at least this often.
    keepalive_s: float
    #: Close the stream after this long (the client reconnects).
    max_s: float
    reconnect_ms: int = RECONNECT_MS


def encode(event: str, data: dict[str, Any], event_id: int, reconnect_ms: int = RECONNECT_MS) -> bytes:
    """One SSE message; the JSON is a single ``data`` line (json.dumps escapes newlines)."""
    payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return f"id: {event_id}\nevent: {event}\nretry: {reconnect_ms}\ndata: {payload}\n\n".encode()


def job_view(job: Job) -> dict[str, Any]:
    """The job as GET /api/jobs/{id} shows it."""
    view: dict[str, Any] = _JOB_SCHEMA.dump(job)
    return view


def progress_view(job: Job) -> dict[str, Any]:
    progress = job["progress"] or {}
    return {"job_id": job["id"], "percent": progress.get("percent"), "stage": progress.get("stage"),
            "message": progress.get("message")}


def changes(before: Job, after: Job) -> list[tuple[str, dict[str, Any]]]:
    """The events that take a client from ``before`` to ``after``, except the final one."""
    events: list[tuple[str, dict[str, Any]]] = []
    # The attempt too: a retry between two reads (IN_PROGRESS again, one attempt later) is news.
    moved = (after["status"], after["attempt"]) != (before["status"], before["attempt"])
    if moved and after["status"] not in FINAL_EVENTS:
        events.append(("status", job_view(after)))
    if after["progress"] is not None and after["progress"] != before["progress"]:
        events.append(("progress", progress_view(after)))
    return events


def read_job(transaction: Transaction, who: Caller, job_id: int) -> Job | None:
    """The job in a short transaction; None ends the stream (job deleted, database gone)."""
    try:
        with transaction() as conn:
            return get_visible_job(conn, who, job_id)
    except NotFound:
        log.info("event stream ends: job %s is gone", job_id, extra={"job_id": job_id})
    except ServiceUnavailable as exc:
        # Nothing useful can be said mid-stream; the client reconnects and gets a 503 or a snapshot.
        log.warning("event stream ends: %s", exc.message, extra={"job_id": job_id})
    return None


class StreamSlots:
    """A thread-safe count of the streams open in this process, in all and per account.

    Both caps are the caller's: one account may hold ``per_user_limit`` of the process's
    ``limit`` slots, so a single user cannot take every slot and leave everyone else a 503.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._by_user: Counter[int] = Counter()

    def acquire(self, user_id: int, limit: int, per_user_limit: int) -> str | None:
        """Take a slot for ``user_id``; None when taken, else the name of the cap reached
        (``max_event_streams_per_user`` or ``max_event_streams``). The account's cap is checked
        first: a user at their own cap learns that, whatever the process's load."""
        with self._lock:
            if self._by_user[user_id] >= per_user_limit:
                return USER_CAP
            if self._open >= limit:
                return PROCESS_CAP
            self._open += 1
            self._by_user[user_id] += 1
            return None

    def release(self, user_id: int) -> None:
        with self._lock:
            self._open -= 1
            self._by_user[user_id] -= 1
            if self._by_user[user_id] <= 0:
                del self._by_user[user_id]

    @property
    def open(self) -> int:
        return self._open

    def open_for(self, user_id: int) -> int:
        """The streams ``user_id`` holds in this process."""
        with self._lock:
            return self._by_user[user_id]


class ReleasingStream:
    """A response body of SSE messages whose ``on_close`` (give back the slot, unsubscribe) runs
    exactly once: when its messages end, or when the server closes the response (the client
    went away: the next write, at most a keepalive interval later, fails). A subclass sets
    ``_messages`` (a generator whose ``finally`` calls :meth:`_release`)."""

    _messages: Generator[bytes, None, None]

    def __init__(self, on_close: Callable[[], None]) -> None:
        self._on_close: Callable[[], None] | None = on_close
        self._lock = threading.Lock()

    def __iter__(self) -> ReleasingStream:
        return self

    def __next__(self) -> bytes:
        return next(self._messages)

    def close(self) -> None:
        """The WSGI server is done with the response (finished, or the client disconnected)."""
        try:
            self._messages.close()
        finally:
            self._release()

    def _release(self) -> None:
        with self._lock:
            on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()


class EventStream(ReleasingStream):
    """The body of one job's stream: a snapshot, then its changes, then its final event."""

    def __init__(self, job: Job, read: Callable[[], Job | None], subscription: Subscription,
                 config: StreamConfig, on_close: Callable[[], None],
                 clock: Callable[[], float] = time.monotonic, stopping: Callable[[], bool] = lambda: False) -> None:
        super().__init__(on_close)
        self._stopping = stopping
        self._messages = self._run(job, read, subscription, config, clock)
        # Run up to the snapshot now: a generator that never started ignores close() and
        # would skip its `finally`; from here on, closing or collecting it releases.
        self._pending: bytes | None = next(self._messages)

    def __next__(self) -> bytes:
        if self._pending is not None:
            message, self._pending = self._pending, None
            return message
        return next(self._messages)

    def _run(self, job: Job, read: Callable[[], Job | None], subscription: Subscription,
             config: StreamConfig, clock: Callable[[], float]) -> Generator[bytes, None, None]:
        try:
            sequence = itertools.count(1)
            keepalive_s = max(config.keepalive_s, MIN_KEEPALIVE_S)
            yield encode("snapshot", job_view(job), next(sequence), config.reconnect_ms)
            deadline = clock() + config.max_s
            last_sent = clock()
            while True:
                final = FINAL_EVENTS.get(job["status"])
                if final is not None:
                    yield encode(final, job_view(job), next(sequence), config.reconnect_ms)
                    return
                now = clock()
                if now >= deadline:
                    yield _TIME_LIMIT
                    return
                # Woken by a NOTIFY for this job, or at the keepalive: a lost notification
                # (LISTEN connection down) delays an event by one interval at most.
                subscription.wait(min(deadline - now, max(0.0, last_sent + keepalive_s - now)))
                if self._stopping():  # this API process is shutting down (SIGTERM)
                    yield _STOPPING
                    return
                current = read()
                if current is None:
                    return
                for event, data in changes(job, current):
                    yield encode(event, data, next(sequence), config.reconnect_ms)
                    last_sent = clock()
                job = current
                if clock() - last_sent >= keepalive_s:
                    yield KEEPALIVE
                    last_sent = clock()
        finally:
            self._release()
