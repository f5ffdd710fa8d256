"""``/api/manager/*`` (the manager's service account; admins too) and ``/api/admin/status|scale|redeploy``.

The manager is an HTTP client like the workers: it reports its pools, reads queue depths and
live workers, drains idle workers to scale in, records each decision and holds the lease that
makes it the one active manager. Admins read the result and steer it (pin, bounds, redeploy).
"""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.guards import BEARER, require_roles
from api.auth.models import ADMIN_READERS, Role
from api.context import ctx
from api.envelope import envelope, ok
from api.fleet import lease as leases
from api.fleet import service
from api.fleet.schemas import (
    DecisionsSchema,
    DrainedSchema,
    DrainSchema,
    FleetStatusSchema,
    LeaseReleasedSchema,
    LeaseReleaseSchema,
    LeaseRequestSchema,
    LeaseSchema,
    ManagerQueuesSchema,
    ManagerWorkersSchema,
    PoolListSchema,
    PoolSchema,
    PoolsReportSchema,
    RecordedSchema,
    RedeployedSchema,
    RedeploySchema,
    ScaleSchema,
)
from api.fleet.status import fleet_status
from api.queue import workers

blp = Blueprint("manager", __name__, url_prefix="/api/manager",
                description="What the fleet manager calls (role MANAGER; admins may too).")
admin_blp = Blueprint("admin-fleet", __name__, url_prefix="/api/admin",
                      description="Worker pools: status, scaling overrides, redeploy (role ADMIN).")

MANAGER_ROLES = (Role.MANAGER, Role.ADMIN)


def _live_after_s() -> float:
    return ctx().settings.worker_lost_after_s


@blp.route("/pools")
class Pools(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.response(200, envelope(PoolListSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """The pools with what admins asked for (pin, bounds, redeploy generation); apply it each tick."""
        with ctx().transaction() as conn:
            return ok({"pools": service.list_pools(conn)})

    @require_roles(*MANAGER_ROLES)
    @blp.arguments(PoolsReportSchema)
    @blp.response(200, envelope(PoolListSchema))
    @blp.alt_response(422, description="Invalid pools (the error names the field), or repeated names.")
    @blp.doc(security=BEARER)
    def put(self, body: dict[str, Any]) -> dict[str, Any]:
        """Report the manager's pool configuration (at start and on change). Pools not listed are
        removed; listed ones keep their overrides (clamped to a lowered max)."""
        with ctx().transaction() as conn:
            return ok({"pools": service.report_pools(conn, body["pools"])})


@blp.route("/queues")
class Queues(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.response(200, envelope(ManagerQueuesSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """Exact queue depth per job type: pending (due), scheduled (later), in progress."""
        with ctx().transaction() as conn:
            return ok({"types": service.queue_depths(conn)})


@blp.route("/workers")
class Workers(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.response(200, envelope(ManagerWorkersSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """Live workers (not stopped, heartbeating) with their pool, revision, launch id and running jobs."""
        with ctx().transaction() as conn:
            return ok({"workers": workers.live_workers(conn, _live_after_s())})


@blp.route("/workers/drain")
class Drain(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.arguments(DrainSchema)
    @blp.response(200, envelope(DrainedSchema))
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Tell workers to drain: they stop claiming, finish what they run and exit. With
        ``only_idle`` (the default) a worker holding a job is left alone."""
        with ctx().transaction() as conn:
            return ok({"drained": workers.drain_workers(conn, body["worker_ids"], body["only_idle"])})


@blp.route("/decisions")
class Decisions(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.arguments(DecisionsSchema)
    @blp.response(201, envelope(RecordedSchema))
    @blp.alt_response(404, description="A decision names a pool that was not reported; none is recorded.")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Record scaling decisions with their reasons (shown by /api/admin/status)."""
        with ctx().transaction() as conn:
            return ok({"recorded": service.record_decisions(conn, body["decisions"])}), 201


@blp.route("/lease")
class Lease(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.arguments(LeaseRequestSchema)
    @blp.response(200, envelope(LeaseSchema))
    @blp.alt_response(409, description="Another manager holds the lease (details: holder, expires_at).")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Take the manager lease for ``ttl_s`` seconds, or renew it; only its holder acts."""
        with ctx().transaction() as conn:
            held = leases.take_lease(conn, body["holder"], body["ttl_s"])
        return ok({"holder": held.holder, "expires_at": held.expires_at, "acquired": True})


@blp.route("/lease/release")
class LeaseRelease(MethodView):
    @require_roles(*MANAGER_ROLES)
    @blp.arguments(LeaseReleaseSchema)
    @blp.response(200, envelope(LeaseReleasedSchema))
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Give the lease up (a manager shutting down), so another replica takes over at once."""
        with ctx().transaction() as conn:
            return ok({"released": leases.release_lease(conn, body["holder"])})


@admin_blp.route("/status")
class Status(MethodView):
    @require_roles(*ADMIN_READERS)
    @admin_blp.response(200, envelope(FleetStatusSchema))
    @admin_blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """Every pool: configuration, overrides, effective bounds, desired and running counts (latest
        decision), live workers, queue depth, recent decisions with reasons; and the manager lease."""
        with ctx().transaction() as conn:
            return ok(fleet_status(conn, _live_after_s()))


@admin_blp.route("/scale")
class Scale(MethodView):
    @require_roles(Role.ADMIN)
    @admin_blp.arguments(ScaleSchema)
    @admin_blp.response(200, envelope(PoolSchema))
    @admin_blp.alt_response(404, description="No such pool.")
    @admin_blp.alt_response(409, description="The pool changed concurrently; retry.")
    @admin_blp.alt_response(422, description="A value above the pool's max, or min above max (the field is named).")
    @admin_blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Pin a pool's worker count (``count``; null unpins) and/or override its bounds (``min``,
        ``max``; null restores). Omitted fields stay as they are."""
        changes: dict[str, int | None] = {k: body[k] for k in ("count", "min", "max") if k in body}
        with ctx().transaction() as conn:
            return ok(service.scale_pool(conn, body["pool"], changes))


@admin_blp.route("/redeploy")
class Redeploy(MethodView):
    @require_roles(Role.ADMIN)
    @admin_blp.arguments(RedeploySchema)
    @admin_blp.response(200, envelope(RedeployedSchema))
    @admin_blp.alt_response(404, description="No such pool.")
    @admin_blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Roll a pool onto its latest task definition or command: bump its redeploy generation and
        drain all its workers (busy ones finish their jobs first); the manager starts replacements."""
        with ctx().transaction() as conn:
            return ok(service.redeploy_pool(conn, body["pool"]))

