"""Every request hardened in one place, before any view or schema sees it.

- The app's JSON provider refuses what PostgreSQL cannot store (:func:`api.validation.check_json`)
  and JSON nested without end, naming the field; every JSON body goes through it first.
- ``<int:…>`` path ids are bounded to a bigint: a larger one names nothing (404), not a 500.
- The body limit holds however the body is sent (a chunked one too: 413).
- Every response says ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, Response, current_app, g, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.routing import IntegerConverter, Map
from werkzeug.routing import ValidationError as NoMatch

from api.errors import InvalidJson
from api.validation import INT64_MAX, check_json, too_deep

#: Digits of the largest bigint; ``int()`` of a longer string may even raise (past 4300 digits).
_INT64_DIGITS = len(str(INT64_MAX))


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, whose ``loads`` refuses what PostgreSQL could not store: 400 for text that is
    not JSON, 422 naming the field for the rest."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            raise too_deep() from None
        except ValueError as exc:  # not JSON, not UTF-8, or an integer of over 4300 digits
            raise InvalidJson(f"Invalid JSON: {exc}") from None
        check_json(value)
        return value


class BigintConverter(IntegerConverter):
    """Flask's ``int`` converter, bounded to what a PostgreSQL bigint id holds."""

    def __init__(self, map: Map, fixed_digits: int = 0, min: int | None = None,  # werkzeug's names
                 max: int | None = INT64_MAX, signed: bool = False) -> None:
        super().__init__(map, fixed_digits, min, max, signed)

    def to_python(self, value: str) -> Any:
        if len(value.lstrip("0")) > _INT64_DIGITS:
            raise NoMatch()
        return super().to_python(value)


def _body_within_limit() -> bytes:
    """The request body; 413 when it is over the limit, however it was sent.

    A body with a Content-Length over the limit is refused by werkzeug before it is read. A
    chunked one (no Content-Length) is read only up to the limit, silently cut there: one more
    byte from the server's stream tells a body of exactly the limit from a longer one.
    """
    body = request.get_data(cache=True)
    limit = request.max_content_length
    if (request.content_length is None and limit is not None and len(body) >= limit
            and request.environ["wsgi.input"].read(1)):
        raise RequestEntityTooLarge()
    return body


def check_json_body() -> None:
    """Every JSON body passes the strict provider before webargs (which parses with the plain
    ``json`` module) or a view reads it."""
    if request.routing_exception is not None or not request.is_json:
        return
    body = _body_within_limit()
    if body:  # an empty body is no body (webargs reads it so)
        g.skyfleet_json = current_app.json.loads(body)


def json_body() -> Any:
    """The request's JSON, as :func:`check_json_body` parsed and checked it (None: no JSON body)."""
    return g.get("skyfleet_json")


def nosniff(response: Response) -> Response:
    """Browsers must not guess another content type than the one declared."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


def init_hardening(app: Flask) -> None:
    """Install all of it. Call before blueprints are registered: their rules take the ``int``
    converter in place then."""
    app.json = StrictJSONProvider(app)
    app.url_map.converters["int"] = BigintConverter
    app.before_request(check_json_body)
    app.after_request(nosniff)
