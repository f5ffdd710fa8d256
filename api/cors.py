"""CORS for browser clients on other origins: ``/api/*`` only, origins from the settings.

No origins configured (the default) means no CORS headers at all: browsers then refuse
cross-origin reads, which is right for an API only servers and same-origin pages call.
Credentials (cookies) are never allowed: the API authenticates with bearer tokens.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

from api.config import Settings

#: Response headers a browser script may read (rate limits, retry hints, ETags).
EXPOSED_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After", "ETag")
#: Request headers a browser script may send.
ALLOWED_HEADERS = ("Authorization", "Content-Type", "If-None-Match", "Last-Event-ID")
#: How long a browser may cache a preflight answer.
PREFLIGHT_MAX_AGE_S = 600


def init_cors(app: Flask, settings: Settings) -> None:
    """Answer CORS requests to ``/api/*`` from ``settings.cors_origins`` ("*": any origin)."""
    if not settings.cors_origins:
        return
    origins: str | list[str] = "*" if "*" in settings.cors_origins else list(settings.cors_origins)
    CORS(
        app,
        resources={r"/api/*": {"origins": origins}},
        expose_headers=list(EXPOSED_HEADERS),
        allow_headers=list(ALLOWED_HEADERS),
        supports_credentials=False,
        # "*" answers "*" rather than echoing each origin: true to the setting, and cacheable.
        send_wildcard=origins == "*",
        max_age=PREFLIGHT_MAX_AGE_S,
    )
