"""``/api/health``: database status with latency, version, uptime; 503 while the database is down."""

from __future__ import annotations

import socket
import time

from api import __version__
from api.health import HealthSchema

FIELDS = {"status", "database", "database_latency_ms", "version", "uptime"}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_healthy_with_database_latency(app):
    response = app.test_client().get("/api/health")
    assert response.status_code == 200
    body = response.json
    assert set(body) == FIELDS
    assert HealthSchema().validate(body) == {}
    assert body["status"] == "healthy"
    assert body["database"] == "connected"
    assert 0 < body["database_latency_ms"] < 1000
    assert body["version"] == __version__
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0


def test_uptime_counts_from_process_start(app):
    context = app.extensions["skyfleet"]
    context.started_at -= 90
    assert app.test_client().get("/api/health").json["uptime"] >= 90


def test_database_down_answers_503_with_the_health_body_quickly(app_factory):
    down = app_factory(database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere")
    started = time.monotonic()
    response = down.test_client().get("/api/health")
    elapsed = time.monotonic() - started
    assert response.status_code == 503
    body = response.json
    assert set(body) == FIELDS, body  # the health schema, not the error envelope
    assert HealthSchema().validate(body) == {}
    assert body["status"] == "unhealthy"
    assert body["database"] == "unreachable"
    assert body["database_latency_ms"] is None
    assert body["version"] == __version__
    # Nothing about the failure leaks out (no driver message, host or port).
    text = response.get_data(as_text=True).lower()
    assert "refused" not in text and "127.0.0.1" not in text and "psycopg" not in text
    assert elapsed < 5


def test_health_is_documented_with_its_503(app):
    spec = app.test_client().get("/api/openapi.json").json
    responses = spec["paths"]["/api/health"]["get"]["responses"]
    assert {"200", "503"} <= set(responses)
    assert "security" not in spec["paths"]["/api/health"]["get"]
