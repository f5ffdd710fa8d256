"""``GET /console/events``: one Server-Sent Events stream per console tab.

The page's live parts refresh when the stream says so (htmx's SSE extension turns each event
into a trigger): ``tick`` every :data:`TICK_S` (the overview, the fleet), and ``job`` when the
stream opens (the job may have changed since the page was drawn) and as soon as the job the
page shows changes (the ``jobs_changed`` trigger's NOTIFY, through the
process's :class:`~api.queue.notify.JobEventHub`, as the job event streams of the API). The
stream holds a greenlet and no database connection, counts against the same per-process and
per-account caps as ``/api/jobs/{id}/events``, and ends after ``event_stream_max_s`` (the
browser reconnects by itself).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Generator

from flask import Response, request

from api.console.security import page_caller
from api.context import ctx
from api.errors import NotFound, ServiceUnavailable
from api.events.routes import stream_slots
from api.events.service import ReleasingStream
from api.queue.jobs import get_visible_job
from api.queue.notify import Subscription
from api.validation import INT64_MAX
from jobtypes import ACTIVE_STATUSES

ACTIVE = {s.value for s in ACTIVE_STATUSES}
#: How often the overview's figures refresh.
TICK_S = 5.0


def _message(event: str, event_id: int) -> bytes:
    return f"id: {event_id}\nevent: {event}\ndata: {event}\n\n".encode()


class ConsoleStream(ReleasingStream):
    """The body of one tab's stream; ``on_close`` runs once, when it ends or the tab goes away."""

    def __init__(self, subscription: Subscription | None, max_s: float, on_close: Callable[[], None],
                 stopping: Callable[[], bool], finished: Callable[[], bool] = lambda: False) -> None:
        super().__init__(on_close)
        self._messages = self._run(subscription, max_s, stopping, finished)

    def _run(self, subscription: Subscription | None, max_s: float, stopping: Callable[[], bool],
             finished: Callable[[], bool]) -> Generator[bytes, None, None]:
        try:
            ids = itertools.count(1)
            yield b"retry: 3000\n\n"
            if subscription is not None:
                # The job may have changed between the page's rendering and this connection (or
                # during a reconnect): the page refreshes once now.
                yield _message("job", next(ids))
                if finished():
                    return
            deadline = time.monotonic() + max_s
            next_tick = time.monotonic() + TICK_S
            while (now := time.monotonic()) < deadline and not stopping():
                wait = max(0.0, min(next_tick, deadline) - now)
                if subscription is not None and subscription.wait(wait):
                    yield _message("job", next(ids))
                    if finished():  # the page has its final state; the reconnect hears 204 and stops
                        return
                    continue
                if subscription is None:
                    time.sleep(wait)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + TICK_S
                    yield _message("tick", next(ids))
        finally:
            self._release()


def console_events() -> Response:
    who = page_caller()
    c = ctx()
    settings = c.settings
    job_id = request.args.get("job", type=int)
    if job_id is not None and not 0 < job_id <= INT64_MAX:
        raise NotFound(f"job {job_id} not found")
    subscription = None
    finished: Callable[[], bool] = lambda: False
    if job_id is not None:
        c.listener.ensure_started()
        # Subscribed before the read: no change falls between the two.
        subscription = c.listener.events.subscribe(job_id)

        def finished() -> bool:
            with c.read() as conn:
                return get_visible_job(conn, who, job_id)["status"] not in ACTIVE

        try:
            done = finished()  # 404 unless the caller may see it
        except BaseException:
            c.listener.events.unsubscribe(subscription)
            raise
        if done and request.headers.get("Last-Event-ID"):
            # A reconnect after the job's end was sent: 204 tells the browser to stop.
            c.listener.events.unsubscribe(subscription)
            return Response(status=204)
    slots = stream_slots()
    refused = slots.acquire(who.user_id, settings.max_event_streams, settings.max_event_streams_per_user)
    if refused is not None:
        if subscription is not None:
            c.listener.events.unsubscribe(subscription)
        raise ServiceUnavailable(f"too many event streams ({refused}); the page refreshes less often")

    def on_close() -> None:
        if subscription is not None:
            c.listener.events.unsubscribe(subscription)
        slots.release(who.user_id)

    stream = ConsoleStream(subscription, settings.event_stream_max_s, on_close, stopping=lambda: c.hub.closed,
                           finished=finished)
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})



