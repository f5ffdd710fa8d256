"""``/api/admin/queues``, ``/history``, ``/workers`` (admins and viewers), ``/cache/invalidate`` (admins).

A blueprint of its own (``admin-queues``) under the same ``/api/admin`` prefix as the account
endpoints in api/admin/routes.py, so the two can change independently.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_smorest import Blueprint

from api.admin.queues_schemas import (
    CacheInvalidatedSchema,
    CacheInvalidateSchema,
    HistoryArgs,
    HistorySchema,
    QueuesSchema,
    WorkerListArgs,
    WorkerViewSchema,
)
from api.auth.guards import BEARER, require_roles
from api.auth.models import ADMIN_READERS, Role
from api.context import ctx
from api.envelope import envelope, ok
from api.pagination import pagination
from api.queue import history, jobs, views
from jobtypes import job_type_names

blp = Blueprint("admin-queues", __name__, url_prefix="/api/admin",
                description="The queue, the workers and the result cache (role ADMIN).")


@blp.route("/queues")
class Queues(MethodView):
    @require_roles(*ADMIN_READERS)
    @blp.response(200, envelope(QueuesSchema))
    @blp.doc(security=BEARER)
    def get(self) -> dict[str, Any]:
        """Per job type (every type in the catalogue): pending, scheduled, in progress, the oldest
        pending job's wait, and how many completed and failed in the last minute."""
        with ctx().transaction() as conn:
            stats = views.queue_stats(conn, job_type_names())
        return ok({"types": [asdict(s) for s in stats], "totals": views.totals(stats)})


@blp.route("/history")
class History(MethodView):
    @require_roles(*ADMIN_READERS)
    @blp.arguments(HistoryArgs, location="query")
    @blp.response(200, envelope(HistorySchema))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """The fleet over the last hour, day or week, from the database: attempts completed, failed
        and retried, pickup latency p50/p95/p99, median run time per type, workers alive. An
        answer may be up to a twelfth of a bucket old (5 s for the hour, a minute at most)."""
        window = history.WINDOWS[args["window"]]

        def read() -> dict[str, Any]:
            with ctx().read() as conn:
                return history.history(conn, window)

        cache: history.HistoryCache = current_app.extensions.setdefault("skyfleet.history", history.HistoryCache())
        return ok(cache.get(window, read))


@blp.route("/workers")
class Workers(MethodView):
    @require_roles(*ADMIN_READERS)
    @blp.arguments(WorkerListArgs, location="query")
    @blp.response(200, envelope(WorkerViewSchema, many=True))
    @blp.doc(security=BEARER)
    def get(self, args: dict[str, Any]) -> dict[str, Any]:
        """Registered workers, newest first, with their state and the jobs each holds; ``meta.pagination``.

        A worker is ``lost`` once silent for ``Settings.worker_lost_after_s`` (its jobs were taken back)."""
        c = ctx()
        with c.transaction() as conn:
            workers, total = views.list_workers(conn, args["page"], args["limit"], args["state"],
                                                  lost_after_s=c.settings.worker_lost_after_s)
        return ok(workers, {"pagination": pagination(args["page"], args["limit"], total)})


@blp.route("/cache/invalidate")
class CacheInvalidate(MethodView):
    @require_roles(Role.ADMIN)
    @blp.arguments(CacheInvalidateSchema)
    @blp.response(200, envelope(CacheInvalidatedSchema))
    @blp.alt_response(422, description="Unknown job type (the error names `type`).")
    @blp.doc(security=BEARER)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Stop reusing cached results of one job type: the next identical submission runs again."""
        with ctx().transaction() as conn:
            invalidated = jobs.invalidate_cache(conn, body["type"])
        return ok({"type": body["type"], "invalidated": invalidated})
