"""The application factory: blueprints, JWT, error envelope, background threads."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from flask import Flask, Response, current_app, request
from flask_smorest import Api
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from api import __version__
from api.auth.guards import init_jwt
from api.config import Settings
from api.context import EXTENSION_KEY, AppContext, rolled_back
from api.database import libpq_url, make_engine
from api.envelope import ErrorEnvelopeSchema, error_response
from api.errors import HTTP_CODES, ApiError, PayloadTooLarge, ServiceUnavailable
from api.files.links import Linker, link_secret
from api.hardening import init_hardening
from api.maintenance.runner import MaintenanceRunner
from api.maintenance.services import build_services
from api.openapi import ErrorResponses, markdown_descriptions, register_protocol_schemas
from api.queue.notify import Listener
from api.queue.wakeup import WakeHub
from api.ratelimit.hooks import init_rate_limits
from storage import open_storage
from storage.netguard import AddressGuard

log = logging.getLogger(__name__)


def _flatten(messages: Any, prefix: str = "") -> dict[str, list[str]]:
    """``{"a": {"b": ["msg"]}}`` → ``{"a.b": ["msg"]}``: each failing field by its dotted path."""
    if isinstance(messages, dict):
        flat: dict[str, list[str]] = {}
        for key, value in messages.items():
            path = str(key) if key != "_schema" else ""
            flat |= _flatten(value, f"{prefix}.{path}".strip(".") if path else prefix)
        return flat
    if isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        return {prefix or "_body": list(messages)}
    return {prefix or "_body": [str(messages)]}


def render_http_exception(error: HTTPException) -> Response:
    """An HTTP error in the envelope, with the headers it carries (``Allow`` on a 405)."""
    response = _http_error_envelope(error)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _http_error_envelope(error: HTTPException) -> Response:
    status = error.code or 500
    code = HTTP_CODES.get(status, "ERROR")
    data = getattr(error, "data", None) or {}
    messages = data.get("messages")
    if status == 413:
        limit = request.max_content_length
        return error_response(413, PayloadTooLarge.code,
                              f"max_payload_bytes: the request body is larger than {limit} bytes",
                              {"limit": "max_payload_bytes", "max": limit})
    if messages:
        # webargs: {"json": {...}} / {"query": {...}}; name each field and say where it was.
        location = next(iter(messages)) if len(messages) == 1 else None
        flat = _flatten(messages[location] if location else messages)
        summary = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in flat.items())
        prefix = "Invalid request" if status == 400 else "Validation failed"
        return error_response(status, code, f"{prefix}: {summary}", {"location": location, "fields": flat})
    return error_response(status, code, error.description or error.name)


class SkyfleetApi(Api):
    """flask-smorest's Api, rendering HTTP errors in our envelope (and documenting them so)."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def handle_http_exception(self, error: HTTPException) -> Response:  # type: ignore[override]
        return render_http_exception(error)

    def _openapi_json(self) -> Response:
        """The document, its descriptions in Markdown (see :func:`api.openapi.markdown_descriptions`)."""
        return current_app.response_class(json.dumps(markdown_descriptions(self.spec.to_dict()), indent=2),
                                          mimetype="application/json")


def _register_errors(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.details)

    @app.errorhandler(OperationalError)
    def database_down(error: OperationalError) -> Response:
        if rolled_back(error):
            # A deadlock or serialization failure: nothing is down, this request lost a race and
            # was rolled back whole; sending it again is safe.
            log.warning("transaction rolled back by the database: %s", error.orig)
            response = error_response(503, ServiceUnavailable.code,
                                      "a concurrent change conflicted with this request; retry it")
            response.headers["Retry-After"] = "1"
            return response
        log.warning("database unavailable: %s", error)
        return error_response(503, ServiceUnavailable.code, "the database is unavailable; retry shortly")

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        if isinstance(error, HTTPException):
            return render_http_exception(error)
        log.exception("unhandled error")
        return error_response(500, "INTERNAL_ERROR", "internal error; it has been logged")


def create_app(settings: Settings) -> Flask:
    """Build the API. Background threads start only when ``settings.background`` is set."""
    from api.admin.queues import blp as admin_queues_blp
    from api.admin.routes import blp as admin_blp
    from api.auth.routes import blp as auth_blp
    from api.catalogue.routes import blp as job_types_blp
    from api.console.views import bp as console_bp
    from api.cors import init_cors
    from api.docs import SWAGGER_UI_CONFIG
    from api.docs import blp as docs_blp
    from api.events.routes import blp as events_blp
    from api.files.routes import blp as files_blp
    from api.files.routes import links_blp
    from api.fleet.routes import admin_blp as admin_fleet_blp
    from api.fleet.routes import blp as manager_blp
    from api.health import blp as health_blp
    from api.jobs.actions import blp as job_actions_blp
    from api.jobs.routes import blp as jobs_blp
    from api.metrics.routes import blp as metrics_blp
    from api.metrics.routes import install_http_metrics
    from api.workers.routes import blp as workers_blp

    app = Flask("skyfleet")
    init_hardening(app)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="skyfleet",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api",
        OPENAPI_JSON_PATH="openapi.json",
        **SWAGGER_UI_CONFIG,
        API_SPEC_OPTIONS={
            "components": {"securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}},
        },
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    engine = make_engine(settings.database_url, settings.db_pool_size)
    hub = WakeHub()
    dsn = libpq_url(settings.database_url)
    store = open_storage(settings.storage_backend, root=settings.storage_dir, bucket=settings.s3_bucket,
                         prefix=settings.s3_prefix)
    context = AppContext(
        settings=settings, engine=engine, hub=hub, listener=Listener(dsn, hub), storage=store,
        linker=Linker(store, link_secret(settings.jwt_private_key), settings.download_url_ttl_s, settings.public_url),
        guard=AddressGuard(settings.allowed_networks),
        claim_slots=threading.BoundedSemaphore(settings.db_pool_size),
    )
    app.extensions[EXTENSION_KEY] = context

    init_jwt(app, settings)
    api = SkyfleetApi(app, spec_kwargs={"extra_plugins": [ErrorResponses()]})
    for blueprint in (auth_blp, jobs_blp, job_actions_blp, job_types_blp, files_blp, links_blp, workers_blp, admin_blp, health_blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(events_blp)
    register_protocol_schemas(api.spec)
    for blueprint in (admin_queues_blp, admin_fleet_blp, manager_blp, metrics_blp):
        api.register_blueprint(blueprint)
    app.register_blueprint(docs_blp)
    app.register_blueprint(console_bp)
    install_http_metrics(app)
    init_cors(app, settings)
    _register_errors(app)
    init_rate_limits(app, settings)

    if settings.background:
        context.listener.ensure_started()
        app.extensions["skyfleet.maintenance"] = runner = MaintenanceRunner(
            dsn, build_services(settings, engine, store, context.guard))
        runner.ensure_started()
    return app


def quiesce(app: Flask) -> None:
    """The process is stopping (SIGTERM): stop rescuing and pruning here (another process or
    replica takes the maintenance lock over), answer every parked claim now and end the event
    streams (their clients reconnect), so the requests in flight end well within gunicorn's
    graceful timeout."""
    runner = app.extensions.get("skyfleet.maintenance")
    if runner is not None:
        runner.stop()
    context: AppContext = app.extensions[EXTENSION_KEY]
    context.hub.close()
    context.listener.events.wake_all()  # event streams end too (their clients reconnect elsewhere)
    context.listener.stop()
