"""``/api/health``: liveness with the database's status (no authentication).

The probe opens its own short-lived connection with a short connect timeout instead of
borrowing from the request pool: a health check must answer within seconds even when the
pool is exhausted by a busy fleet or the database host has vanished (a pool checkout or a
default libpq connect could wait far longer than a load balancer's check timeout).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api import __version__
from api.context import ctx
from api.database import libpq_url

log = logging.getLogger(__name__)

#: libpq's smallest effective connect timeout.
HEALTH_CONNECT_TIMEOUT_S = 2

blp = Blueprint("health", __name__, url_prefix="/api", description="Health.")


class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["healthy", "unhealthy"]),
                           metadata={"example": "healthy"})
    database = fields.String(required=True, validate=validate.OneOf(["connected", "unreachable"]),
                             metadata={"example": "connected"})
    database_latency_ms = fields.Float(
        required=True, allow_none=True,
        metadata={"description": "Round trip of SELECT 1 in milliseconds (null when unreachable)."})
    version = fields.String(required=True)
    uptime = fields.Integer(required=True, metadata={"description": "Seconds since this process started."})


@dataclass(frozen=True)
class DatabaseProbe:
    connected: bool
    latency_ms: float | None


def probe_database(dsn: str, connect_timeout_s: int = HEALTH_CONNECT_TIMEOUT_S) -> DatabaseProbe:
    """Connect and run ``SELECT 1``; the reason of a failure is logged, never returned."""
    try:
        with psycopg.connect(dsn, connect_timeout=connect_timeout_s, autocommit=True) as conn:
            started = time.perf_counter()
            conn.execute("SELECT 1")
            latency_ms = (time.perf_counter() - started) * 1000.0
    except psycopg.Error as exc:
        log.warning("health: the database is unreachable: %s", exc)
        return DatabaseProbe(False, None)
    return DatabaseProbe(True, round(latency_ms, 3))


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database is unreachable.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Is the API up and can it reach its database? (No authentication.)"""
        c = ctx()
        probe = probe_database(libpq_url(c.settings.database_url))
        return {
            "status": "healthy" if probe.connected else "unhealthy",
            "database": "connected" if probe.connected else "unreachable",
            "database_latency_ms": probe.latency_ms,
            "version": __version__,
            "uptime": int(time.time() - c.started_at),
        }, 200 if probe.connected else 503
