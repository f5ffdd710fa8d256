"""``GET /api/jobs/{id}/events``: a job's progress as Server-Sent Events.

Everything the stream needs (the app context's engine and settings, the caller) is read
here, before the response is returned; the stream itself (:mod:`api.events.service`) never
touches Flask, so it needs no ``stream_with_context``. An open stream holds a greenlet and
no database connection; see :mod:`api.events`.
"""

from __future__ import annotations

import logging
from functools import partial

from flask import Response, current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import ErrorEnvelopeSchema, error_response
from api.errors import LimitExceeded, ServiceUnavailable
from api.events.service import BUSY_RETRY_AFTER_S, USER_CAP, EventStream, StreamConfig, StreamSlots, read_job
from api.queue.jobs import get_visible_job

log = logging.getLogger(__name__)

blp = Blueprint("events", __name__, url_prefix="/api/jobs",
                description="Follow a job's progress as Server-Sent Events.")

#: Where an app keeps its stream counter (one app per gunicorn process).
SLOTS_KEY = "skyfleet.event_streams"

_STREAM_DOC = {
    "description": (
        "A `text/event-stream`. Each message has `id`, `event`, `retry` and one `data` line of JSON. "
        "Events: `snapshot` (the job, first), `status` (the job, when its status or attempt changes), "
        "`progress` (`{job_id, percent, stage, message}`), and last one of `completed`, `failed`, "
        "`cancelled`, `timed_out` (the job), after which the stream ends: close the EventSource then. "
        "`: keepalive` comments are sent while idle; the stream ends after a time limit, and a "
        "reconnecting client gets a fresh snapshot."
    ),
    "content": {"text/event-stream": {
        "schema": {"type": "string"},
        "example": 'id: 1\nevent: snapshot\nretry: 3000\ndata: {"id": 42, "status": "PENDING", ...}\n\n'
                   'id: 2\nevent: progress\nretry: 3000\n'
                   'data: {"job_id": 42, "percent": 40.0, "stage": "sleeping", "message": null}\n\n',
    }},
}


def stream_slots() -> StreamSlots:
    """This app's count of open streams (created on first use)."""
    slots: StreamSlots = current_app.extensions.setdefault(SLOTS_KEY, StreamSlots())
    return slots


def _busy(limit: int) -> Response:
    response = error_response(
        503, ServiceUnavailable.code,
        f"this API process already serves {limit} event streams; retry shortly",
        {"max_event_streams": limit},
    )
    response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
    return response


def _too_many(limit: int) -> Response:
    response = error_response(
        429, LimitExceeded.code,
        f"max_event_streams_per_user: you already follow {limit} event streams on this API process; "
        "close one (or poll GET /api/jobs/{id} with If-None-Match) and retry",
        {"limit": USER_CAP, "max": limit, "retry_after": BUSY_RETRY_AFTER_S},
    )
    response.headers["Retry-After"] = str(BUSY_RETRY_AFTER_S)
    return response


@blp.route("/<int:job_id>/events")
class JobEvents(MethodView):
    @require_roles(Role.USER, Role.ADMIN)
    @blp.doc(security=BEARER, responses={"200": _STREAM_DOC})
    @blp.alt_response(401, schema=ErrorEnvelopeSchema, description="Missing, invalid or expired access token.")
    @blp.alt_response(403, schema=ErrorEnvelopeSchema, description="Only users and admins follow jobs.")
    @blp.alt_response(404, schema=ErrorEnvelopeSchema, description="No such job, or not yours.")
    @blp.alt_response(429, schema=ErrorEnvelopeSchema,
                      description="LIMIT_EXCEEDED: you hold as many streams on this API process as one account "
                                  "may (details.limit = max_event_streams_per_user); close one, retry after "
                                  "Retry-After. Or RATE_LIMIT_EXCEEDED: the request rate limit.",
                      headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}})
    @blp.alt_response(503, schema=ErrorEnvelopeSchema,
                      description="This API process serves as many streams as it may (retry after "
                                  "Retry-After), or the database is unavailable.",
                      headers={"Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}})
    def get(self, job_id: int) -> Response:
        """Follow a job: a snapshot, then status and progress events, then its final event."""
        context = ctx()
        who = caller()
        settings = context.settings
        context.listener.ensure_started()
        hub = context.listener.events
        slots = stream_slots()
        # Subscribe before the snapshot is read, so no change can fall between the two.
        subscription = hub.subscribe(job_id)
        try:
            with context.transaction() as conn:
                job = get_visible_job(conn, who, job_id)
        except BaseException:
            hub.unsubscribe(subscription)
            raise
        refused = slots.acquire(who.user_id, settings.max_event_streams, settings.max_event_streams_per_user)
        if refused is not None:
            hub.unsubscribe(subscription)
            if refused == USER_CAP:
                log.info("event stream refused: the account holds %s streams", settings.max_event_streams_per_user,
                         extra={"job_id": job_id, "user_id": who.user_id})
                return _too_many(settings.max_event_streams_per_user)
            log.warning("event stream refused: %s streams open", settings.max_event_streams,
                        extra={"job_id": job_id})
            return _busy(settings.max_event_streams)

        def on_close() -> None:
            hub.unsubscribe(subscription)
            slots.release(who.user_id)

        # From here the stream owns the slot and the subscription, and releases them once.
        stream = EventStream(
            job, partial(read_job, context.transaction, who, job_id), subscription,
            StreamConfig(keepalive_s=settings.event_keepalive_s, max_s=settings.event_stream_max_s),
            on_close, stopping=lambda: context.hub.closed,
        )
        return Response(stream, mimetype="text/event-stream", headers={
            "Cache-Control": "no-cache",
            # nginx (and proxies that honour it) must pass each event on at once.
            "X-Accel-Buffering": "no",
        })
