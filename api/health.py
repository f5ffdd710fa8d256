"""``/api/health``: liveness with the database's status."""

from __future__ import annotations

import time
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from api import __version__
from api.context import ctx

blp = Blueprint("health", __name__, url_prefix="/api", description="Health.")


class HealthSchema(Schema):
    status = fields.String(required=True, metadata={"example": "healthy"})
    version = fields.String(required=True)
    uptime = fields.Integer(required=True, metadata={"description": "Seconds since this process started."})
    database = fields.String(required=True, metadata={"example": "connected"})


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    @blp.alt_response(503, schema=HealthSchema, description="The database is unreachable.")
    def get(self) -> tuple[dict[str, Any], int]:
        """Is the API up and can it reach its database? (No authentication.)"""
        c = ctx()
        try:
            with c.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            database, status, code = "connected", "healthy", 200
        except SQLAlchemyError:
            database, status, code = "unreachable", "unhealthy", 503
        return {"status": status, "version": __version__, "uptime": int(time.time() - c.started_at),
                "database": database}, code
