"""``GET /metrics`` (Prometheus text format, no token) and the per-request HTTP metrics hooks."""

from __future__ import annotations

import time

from flask import Flask, Response, g, request
from flask.views import MethodView
from flask_smorest import Blueprint
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

from api.context import ctx
from api.metrics.collector import render
from api.metrics.process import observe_request

blp = Blueprint("metrics", __name__, url_prefix="", description="Prometheus metrics.")

_TEXT_RESPONSE = {
    "200": {
        "description": "Prometheus text exposition format 0.0.4.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
}


@blp.route("/metrics")
class Metrics(MethodView):
    @blp.doc(responses=_TEXT_RESPONSE)
    def get(self) -> Response:
        """Queue depth per type, workers, ``pending_tasks_total`` (read from the database now), and this
        server's counters and histograms (results, claim latency, job duration, HTTP requests).

        No authentication: scrape it from inside the VPC."""
        c = ctx()
        return Response(render(c.engine, lost_after_s=c.settings.worker_lost_after_s), content_type=CONTENT_TYPE_PLAIN_0_0_4)


def _start_timer() -> None:
    g.metrics_started = time.perf_counter()


def _count_request(response: Response) -> Response:
    started: float | None = g.get("metrics_started")
    # The route template, not the path: /api/jobs/<int:job_id>, never one series per job id.
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    observe_request(request.method, route, response.status_code,
                    None if started is None else time.perf_counter() - started)
    return response


def install_http_metrics(app: Flask) -> None:
    """Count every request by method, route template and status, and time it."""
    # First in line, so a request another hook answers early (a 429, say) is timed too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start_timer)
    app.after_request(_count_request)
