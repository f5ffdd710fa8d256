"""What the API accepts is what PostgreSQL stores and the API reads back: the bounds, in one place.

Two layers, each applied everywhere rather than field by field:

- :func:`check_json` walks every JSON body once (the app's JSON provider calls it, see
  ``api/hardening.py``): no NUL characters and no unpaired surrogates in strings or keys, integers
  within a signed 64-bit integer, finite numbers, bounded nesting.
- :class:`ApiSchema`, the base of every API schema, bounds each field by what its column holds:
  datetimes within [MIN_DATETIME, MAX_DATETIME], integers integral and within bigint (or
  ``integer`` for :class:`Int32` fields), text without NUL or unpaired surrogates however it
  arrived (query strings and forms too).

Nothing here imports Flask.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from marshmallow import Schema, ValidationError, fields, validate

from api.errors import ValidationFailed

#: Every accepted datetime lies in this range: the one migration 0004
#: (migrations/versions/20261204_0004_outages.py) clamps stored ``run_after`` values into.
#: PostgreSQL stores timestamps Python cannot represent (0001-01-01T00:00:00+14:00 is year 0 in
#: UTC); such a row answered 500 in every listing holding it, and could not be cancelled.
MIN_DATETIME = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
MAX_DATETIME = dt.datetime(2999, 12, 31, 23, 59, 59, tzinfo=dt.UTC)
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
#: Deeper than any job input needs, and far below the parser's recursion limit.
MAX_JSON_DEPTH = 64
#: A body with a million bad strings gets a useful answer, not a million-line one.
MAX_REPORTED_PROBLEMS = 20

NUL_MESSAGE = "NUL characters are not allowed"
SURROGATE_MESSAGE = "unpaired surrogates are not allowed (not valid Unicode)"
INT64_MESSAGE = f"integers must fit in a signed 64-bit integer ({INT64_MIN} to {INT64_MAX})"
FINITE_MESSAGE = "numbers must be finite (NaN and Infinity are not JSON)"


def text_problem(text: str) -> str | None:
    """Why PostgreSQL would refuse this text (``None``: it would not)."""
    if "\x00" in text:
        return NUL_MESSAGE
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_MESSAGE
    return None


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str:
        # The cheap test first: most text is ASCII without NUL.
        return text_problem(value) if "\x00" in value or not value.isascii() else None
    if kind is int:
        return None if INT64_MIN <= value <= INT64_MAX else INT64_MESSAGE
    if kind is float:
        return None if math.isfinite(value) else FINITE_MESSAGE
    return None


def check_json(value: Any) -> None:
    """Raise :class:`ValidationFailed` naming each place (``jobs.0.input_payload.tag``) of ``value``
    that PostgreSQL could not store, or that is nested deeper than :data:`MAX_JSON_DEPTH`."""
    problems: dict[str, list[str]] = {}

    def report(path: tuple[str, ...], why: str) -> None:
        if len(problems) < MAX_REPORTED_PROBLEMS:
            problems.setdefault(".".join(path) or "_body", []).append(why)

    why = _scalar_problem(value)
    if why:
        report((), why)
    # Iterative, so a deep document costs no stack: (container, its path, its depth).
    stack: list[tuple[Any, tuple[str, ...], int]] = [(value, (), 1)] if type(value) in (dict, list) else []
    while stack and len(problems) < MAX_REPORTED_PROBLEMS:
        container, path, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            report(path, f"nested deeper than {MAX_JSON_DEPTH} levels")
            continue
        if type(container) is dict:
            for key in container:
                if type(key) is str and "\x00" not in key and key.isascii():
                    continue
                why = _scalar_problem(key)
                if why:
                    report(path, f"a key: {why}")
            items: Iterable[tuple[Any, Any]] = container.items()
        else:
            items = enumerate(container)
        for key, item in items:
            kind = type(item)
            if kind is dict or kind is list:
                stack.append((item, (*path, str(key)), depth + 1))
            elif kind is str and "\x00" not in item and item.isascii():
                continue  # the common case, without a call (a batch body holds thousands)
            elif kind is bool or item is None:
                continue
            else:
                why = _scalar_problem(item)
                if why:
                    report((*path, str(key)), why)
    if problems:
        summary = "; ".join(f"{place}: {' '.join(whys)}" for place, whys in problems.items())
        raise ValidationFailed(f"Validation failed: {summary}", details={"location": "json", "fields": problems})


def too_deep() -> ValidationFailed:
    """The error for JSON nested so deep that parsing it ran out of stack."""
    why = f"nested deeper than {MAX_JSON_DEPTH} levels"
    return ValidationFailed(f"Validation failed: _body: {why}",
                            details={"location": "json", "fields": {"_body": [why]}})


# --- schemas ------------------------------------------------------------------------------------

class Int32(fields.Integer):
    """An integer that PostgreSQL holds, or the queue's SQL casts, as a 32-bit ``integer``
    (attempts: ``CAST(:attempts AS int[])`` in api/queue/leases.py)."""


def plain_text(value: str) -> None:
    """Validator: text PostgreSQL can store (no NUL; no unpaired surrogate)."""
    why = text_problem(value)
    if why:
        raise ValidationError(why)


class _InstantRange(validate.Range):
    """:class:`validate.Range` for datetimes, reading a naive one as UTC (it cannot be compared
    with an aware bound)."""

    def __call__(self, value: Any) -> Any:
        instant = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        super().__call__(instant)
        return value


STORABLE_DATETIME = _InstantRange(min=MIN_DATETIME, max=MAX_DATETIME,
                                  error="must be between 1970-01-01T00:00:00Z and 2999-12-31T23:59:59Z")
INT64 = validate.Range(min=INT64_MIN, max=INT64_MAX, error="must fit in a signed 64-bit integer ({min} to {max})")
INT32 = validate.Range(min=INT32_MIN, max=INT32_MAX, error="must fit in a signed 32-bit integer ({min} to {max})")


def _leaves(field: fields.Field) -> Iterator[fields.Field]:
    """The field and the fields inside it (a list's items, a dict's keys and values); nested
    schemas bind their own fields."""
    yield field
    if isinstance(field, fields.List):
        yield from _leaves(field.inner)
    elif isinstance(field, fields.Tuple):
        for inner in field.tuple_fields:
            yield from _leaves(inner)
    elif isinstance(field, fields.Mapping):
        for part in (field.key_field, field.value_field):
            if part is not None:
                yield from _leaves(part)


def _add(field: fields.Field, validator: Any) -> None:
    if validator not in field.validators:
        field.validators.append(validator)


class ApiSchema(Schema):
    """The base of every API schema: each field accepts only what its column holds.

    Datetimes lie within [MIN_DATETIME, MAX_DATETIME]; integers fit a bigint (an ``integer`` for
    :class:`Int32` fields) and, in JSON bodies, must be JSON integers (2.5 is refused, not
    truncated to 2; ``true`` is refused); strings hold no NUL and no unpaired surrogate.
    The bounds are validators, so the OpenAPI document shows them.
    """

    #: Query strings and forms carry text: their integers are parsed from digits ("5").
    TEXT_INPUT: ClassVar[bool] = False

    def on_bind_field(self, field_name: str, field_obj: fields.Field) -> None:
        for field in _leaves(field_obj):
            if isinstance(field, fields.Integer):
                field.strict = field.strict or not self.TEXT_INPUT
                _add(field, INT32 if isinstance(field, Int32) else INT64)
            elif isinstance(field, fields.DateTime):
                _add(field, STORABLE_DATETIME)
            elif isinstance(field, fields.String):
                _add(field, plain_text)


class QueryArgs(ApiSchema):
    """Arguments from a query string: text, so an integer field parses digits (``?page=2``);
    "2.5" is still refused."""

    TEXT_INPUT = True
