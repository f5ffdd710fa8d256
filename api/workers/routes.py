"""``/api/workers``: what worker processes call (service accounts with role WORKER).

The bodies and answers are the typed messages of :mod:`jobtypes.protocol`, decoded in one pass
(no schema objects per item: a busy fleet sends thousands of reports a second) and documented
from the same types (:func:`protocol_doc`).
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.context import ctx
from api.envelope import ok
from api.errors import StaleAttempt, ValidationFailed
from api.hardening import json_body
from api.metrics import samples as metric_samples
from api.openapi import PROTOCOL_REF
from api.queue import workers
from api.queue.leases import extend_leases, release_attempts, report_attempts
from api.serving import hung_up
from api.workers import service
from jobtypes import protocol
from jobtypes.protocol import Message

M = TypeVar("M", bound=Message)
blp = Blueprint("workers", __name__, url_prefix="/api/workers",
                description="The worker protocol: register, claim, heartbeat, report.")


def _read(kind: type[M]) -> M:
    """The request body as a ``kind``; 422 naming the field if it is not one."""
    try:
        return protocol.load(kind, json_body())
    except protocol.ProtocolError as exc:
        raise ValidationFailed(f"Validation failed: {exc}", {"location": "json", "fields": exc.fields}) from None


def _ref(kind: type[Message]) -> dict[str, str]:
    return {"$ref": PROTOCOL_REF.format(name=kind.__name__)}


def protocol_doc(body: type[Message] | None, answer: type[Message], status: int = 200,
                 **errors: str) -> dict[str, Any]:
    """OpenAPI of an operation whose body and answer are protocol messages (registered as
    components by :func:`api.openapi.register_protocol_schemas`)."""
    envelope = {"type": "object", "required": ["success", "data"],
                "properties": {"success": {"type": "boolean"}, "data": _ref(answer), "meta": {"type": "object"}}}
    doc: dict[str, Any] = {"security": BEARER, "responses": {
        str(status): {"description": "OK", "content": {"application/json": {"schema": envelope}}},
        "404": {"description": "No such worker for this service account."},
        **{code.removeprefix("e"): {"description": text} for code, text in errors.items()},
    }}
    if body is not None:
        doc["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
        doc["responses"]["422"] = {"description": "The body is not a valid message: details.fields names the field."}
    return doc


@blp.route("")
class Workers(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(**protocol_doc(protocol.Register, protocol.Registered, 201))
    def post(self) -> tuple[dict[str, Any], int]:
        """Register a worker process; the answer carries the lease and heartbeat settings."""
        body = _read(protocol.Register)
        c = ctx()
        with c.transaction() as conn:
            worker = workers.register_worker(conn, caller().user_id, body)
        s = c.settings
        return ok(protocol.dump(protocol.Registered(
            id=worker["id"], name=worker["name"], job_types=list(worker["job_types"]),
            concurrency=worker["concurrency"], lease_s=s.lease_s, heartbeat_interval_s=s.heartbeat_interval_s,
            max_claim_batch=s.max_claim_batch, max_claim_wait_s=s.max_claim_wait_s))), 201


@blp.route("/<int:worker_id>/claim")
class Claim(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(**protocol_doc(protocol.Claim, protocol.ClaimAnswer,
                            e409="The worker was stopped or declared lost (WORKER_GONE): register again."))
    def post(self, worker_id: int) -> dict[str, Any]:
        """Claim up to ``max_jobs`` jobs, long-polling up to ``wait_s`` seconds when there are none.

        ``results`` (optional) reports finished attempts first, in the same transaction, as
        ``/results`` would; their outcomes come back in ``results``."""
        body = _read(protocol.Claim)
        answer = service.long_poll_claim(
            ctx(), worker_id, caller().user_id, body.job_types, body.max_jobs, body.wait_s,
            service.reports_from(body.results),
            on_reported=lambda outcomes: metric_samples.record(outcomes=outcomes),
            client_gone=_client_gone(request.environ.get("gunicorn.socket")),
        )
        metric_samples.record(answer.jobs)
        return ok(protocol.dump(protocol.ClaimAnswer(
            jobs=answer.jobs, drain=answer.drain,
            results=[service.outcome_message(o) for o in answer.reported])))


def _client_gone(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether this request's client hung up (``api.serving.hung_up``; never, outside gunicorn)."""
    return (lambda: False) if sock is None else partial(hung_up, sock)


@blp.route("/<int:worker_id>/heartbeat")
class Heartbeat(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(**protocol_doc(protocol.Heartbeat, protocol.HeartbeatAnswer,
                            e409="The worker was stopped or declared lost (WORKER_GONE): register again."))
    def post(self, worker_id: int) -> dict[str, Any]:
        """Extend the leases of the listed running jobs; answers which to stop and whether to drain."""
        body = _read(protocol.Heartbeat)
        c = ctx()
        held = service.held_from(body.jobs)
        progress = {str(j.token): protocol.dump(j.progress) for j in body.jobs if j.progress}
        with c.transaction() as conn:
            # A lost heartbeat commit only shortens a lease: it commits asynchronously.
            worker = workers.touch_worker(conn, worker_id, caller().user_id, seen=True, durable=False)
            live = extend_leases(conn, worker_id, held, c.settings.lease_s, progress)
        return ok(protocol.dump(protocol.HeartbeatAnswer(
            stop=[protocol.Stop(job_id=h.job_id, attempt=h.attempt, token=uuid.UUID(h.token), reason=why)
                  for h, why in live.stop],
            drain=worker.draining, lease_expires_at=live.lease_expires_at)))


@blp.route("/<int:worker_id>/results")
class Results(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(**protocol_doc(protocol.Results, protocol.ResultsAnswer,
                            e409="No report was accepted: every attempt was stale (or the worker is gone)."))
    def post(self, worker_id: int) -> dict[str, Any]:
        """Report finished attempts. A report for an attempt that is no longer current
        changes nothing and comes back ``accepted: false``; if none was accepted, 409."""
        body = _read(protocol.Results)
        c = ctx()
        with c.claim_transaction() as conn:
            workers.touch_worker(conn, worker_id, caller().user_id)
            outcomes = report_attempts(conn, worker_id, service.reports_from(body.results))
        metric_samples.record(outcomes=outcomes)
        views = [protocol.dump(service.outcome_message(o)) for o in outcomes]
        if not any(o.accepted for o in outcomes):
            raise StaleAttempt(details={"results": views})
        return ok({"results": views})


@blp.route("/<int:worker_id>/release")
class Release(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(**protocol_doc(protocol.Release, protocol.Released))
    def post(self, worker_id: int) -> dict[str, Any]:
        """Give running jobs back to the queue at once (a worker shutting down); not counted as attempts."""
        body = _read(protocol.Release)
        with ctx().transaction() as conn:
            workers.touch_worker(conn, worker_id, caller().user_id)
            released = release_attempts(conn, worker_id, service.held_from(body.jobs))
        return ok(protocol.dump(protocol.Released(released=[job_id for job_id, _, _ in released])))


@blp.route("/<int:worker_id>/deregister")
class Deregister(MethodView):
    @require_roles(Role.WORKER)
    @blp.doc(security=BEARER, responses={"200": {"description": "Stopped."},
                                         "404": {"description": "No such worker for this service account."}})
    def post(self, worker_id: int) -> dict[str, Any]:
        """The worker is exiting: mark it stopped (release its jobs first)."""
        with ctx().transaction() as conn:
            workers.stop_worker(conn, worker_id, caller().user_id)
        return ok({})
