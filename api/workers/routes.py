"""``/api/workers``: what worker processes call (service accounts with role WORKER)."""

from __future__ import annotations

import _socket
import socket
from collections.abc import Callable
from typing import Any

from flask import request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, caller, require_roles
from api.auth.models import Role
from api.auth.schemas import EmptySchema
from api.context import ctx
from api.envelope import envelope, ok
from api.errors import StaleAttempt
from api.metrics import samples as metric_samples
from api.queue.leases import extend_leases, release_attempts, report_attempts
from api.workers import service
from api.workers.schemas import (
    ClaimResponseSchema,
    ClaimSchema,
    HeartbeatResponseSchema,
    HeartbeatSchema,
    ReleasedSchema,
    ReleaseSchema,
    ResultsResponseSchema,
    ResultsSchema,
    WorkerRegisterSchema,
    WorkerSchema,
)

blp = Blueprint("workers", __name__, url_prefix="/api/workers",
                description="The worker protocol: register, claim, heartbeat, report.")


@blp.route("")
class Workers(MethodView):
    @require_roles(Role.WORKER)
    @blp.arguments(WorkerRegisterSchema)
    @blp.response(201, envelope(WorkerSchema))
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Register a worker process; the answer carries the lease and heartbeat settings."""
        c = ctx()
        with c.transaction() as conn:
            worker = service.register_worker(conn, caller().user_id, body)
        s = c.settings
        return ok(worker | {
            "lease_s": s.lease_s, "heartbeat_interval_s": s.heartbeat_interval_s,
            "max_claim_batch": s.max_claim_batch, "max_claim_wait_s": s.max_claim_wait_s,
        }), 201


@blp.route("/<int:worker_id>/claim")
class Claim(MethodView):
    @require_roles(Role.WORKER)
    @blp.arguments(ClaimSchema)
    @blp.response(200, envelope(ClaimResponseSchema))
    @blp.alt_response(404, description="No such worker for this service account.")
    @blp.alt_response(409, description="The worker was stopped or declared lost.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any], worker_id: int) -> dict[str, Any]:
        """Claim up to ``max_jobs`` jobs, long-polling up to ``wait_s`` seconds when there are none.

        ``results`` (optional) reports finished attempts first, in the same transaction, as
        ``/results`` would; their outcomes come back in ``results``."""
        c = ctx()
        answer = service.long_poll_claim(
            c, worker_id, caller().user_id, body["job_types"], body["max_jobs"], body["wait_s"],
            service.reports_from(body["results"]),
            on_reported=lambda outcomes: metric_samples.record(outcomes=outcomes),
            client_gone=_hung_up(request.environ.get("gunicorn.socket")),
        )
        metric_samples.record(answer.jobs)
        return ok({"jobs": [service.claimed_view(j) for j in answer.jobs], "drain": answer.drain,
                   "results": [service.outcome_view(o) for o in answer.reported]})


def _hung_up(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether the client of this request closed its connection (a killed worker: its kernel
    closed the socket). Read on the descriptor itself, not through the server's socket object,
    which under gevent would wait for data rather than answer at once. Behind a proxy that
    keeps its own connection open (an ALB) this sees nothing; the rescuer then covers it."""
    if sock is None:
        return lambda: False

    def hung_up() -> bool:
        try:
            raw = _socket.socket(fileno=sock.fileno())
        except OSError:
            return True
        try:
            return raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        finally:
            raw.detach()

    return hung_up


@blp.route("/<int:worker_id>/heartbeat")
class Heartbeat(MethodView):
    @require_roles(Role.WORKER)
    @blp.arguments(HeartbeatSchema)
    @blp.response(200, envelope(HeartbeatResponseSchema))
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any], worker_id: int) -> dict[str, Any]:
        """Extend the leases of the listed running jobs; answers which to stop and whether to drain."""
        c = ctx()
        running = [(j["job_id"], j["attempt"]) for j in body["jobs"]]
        progress = {(j["job_id"], j["attempt"]): j["progress"] for j in body["jobs"] if j["progress"]}
        with c.transaction() as conn:
            worker = service.touch_worker(conn, worker_id, caller().user_id, heartbeat=True)
            live = extend_leases(conn, worker_id, running, c.settings.lease_s, progress)
        return ok({
            "stop": [{"job_id": j, "attempt": a, "reason": r} for j, a, r in live.stop],
            "drain": worker.draining,
            "lease_expires_at": live.lease_expires_at,
        })


@blp.route("/<int:worker_id>/results")
class Results(MethodView):
    @require_roles(Role.WORKER)
    @blp.arguments(ResultsSchema)
    @blp.response(200, envelope(ResultsResponseSchema))
    @blp.alt_response(409, description="No report was accepted: every attempt was stale.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any], worker_id: int) -> dict[str, Any]:
        """Report finished attempts. A report for an attempt that is no longer current
        changes nothing and comes back ``accepted: false``; if none was accepted, 409."""
        c = ctx()
        with c.transaction() as conn:
            service.touch_worker(conn, worker_id, caller().user_id)
            outcomes = report_attempts(conn, worker_id, service.reports_from(body["results"]))
        metric_samples.record(outcomes=outcomes)
        views = [service.outcome_view(o) for o in outcomes]
        if not any(o.accepted for o in outcomes):
            raise StaleAttempt(details={"results": views})
        return ok({"results": views})


@blp.route("/<int:worker_id>/release")
class Release(MethodView):
    @require_roles(Role.WORKER)
    @blp.arguments(ReleaseSchema)
    @blp.response(200, envelope(ReleasedSchema))
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any], worker_id: int) -> dict[str, Any]:
        """Give running jobs back to the queue at once (a worker shutting down); not counted as attempts."""
        with ctx().transaction() as conn:
            service.touch_worker(conn, worker_id, caller().user_id)
            released = release_attempts(conn, worker_id, [(j["job_id"], j["attempt"]) for j in body["jobs"]])
        return ok({"released": [job_id for job_id, _, _ in released]})


@blp.route("/<int:worker_id>/deregister")
class Deregister(MethodView):
    @require_roles(Role.WORKER)
    @blp.response(200, envelope(EmptySchema))
    @blp.doc(security=BEARER)
    def post(self, worker_id: int) -> dict[str, Any]:
        """The worker is exiting: mark it stopped (release its jobs first)."""
        with ctx().transaction() as conn:
            service.stop_worker(conn, worker_id, caller().user_id)
        return ok({})
