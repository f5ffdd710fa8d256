"""The bounds of api.validation, without a request: what they refuse, and how they name it."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from marshmallow import ValidationError, fields

from api.errors import ValidationFailed
from api.validation import (
    INT64_MAX,
    MAX_DATETIME,
    MAX_JSON_DEPTH,
    MIN_DATETIME,
    ApiSchema,
    Int32,
    QueryArgs,
    check_json,
)


def _refusal(value: Any) -> dict[str, list[str]]:
    with pytest.raises(ValidationFailed) as caught:
        check_json(value)
    return dict(caught.value.details["fields"])


@pytest.mark.parametrize(("value", "place"), [
    ({"a": [{"b": "x\x00"}]}, "a.0.b"),
    ({"a": "\udc00"}, "a"),
    ({"a": {"k\x00": 1}}, "a"),
    ({"n": INT64_MAX + 1}, "n"),
    ({"n": -INT64_MAX - 2}, "n"),
    ([1, float("nan")], "1"),
    ({"x": float("-inf")}, "x"),
    ("\x00", "_body"),
])
def test_refusals_name_the_place(value, place):
    assert place in _refusal(value)


def test_storable_json_passes():
    check_json({"tag": "\N{ROCKET} ok", "n": INT64_MAX, "m": -INT64_MAX - 1, "f": 1e308, "b": True, "z": None,
                "deep": json.loads("[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1))})


def test_depth_is_bounded_without_recursion():
    deep: Any = []
    for _ in range(100_000):  # far past the interpreter's recursion limit
        deep = [deep]
    (place,) = _refusal(deep)
    assert place == ".".join(["0"] * MAX_JSON_DEPTH)


def test_refusals_are_capped():
    assert len(_refusal({str(i): "\x00" for i in range(1000)})) <= 20


class _Body(ApiSchema):
    count = fields.Integer()
    attempt = Int32()
    when = fields.AwareDateTime()
    naive = fields.DateTime()
    name = fields.String()
    tags = fields.List(fields.String())
    ids = fields.List(fields.Integer())


class _Query(QueryArgs):
    count = fields.Integer()


@pytest.mark.parametrize(("data", "field"), [
    ({"count": 2.5}, "count"),
    ({"count": True}, "count"),
    ({"count": "5"}, "count"),  # a JSON body carries numbers as numbers
    ({"count": INT64_MAX + 1}, "count"),
    ({"attempt": 2**31}, "attempt"),
    ({"ids": [1, 2.5]}, "ids"),
    ({"when": "0001-01-01T00:00:00+14:00"}, "when"),
    ({"when": "9999-12-31T23:59:59-14:00"}, "when"),
    ({"naive": "1969-12-31T23:59:59"}, "naive"),
    ({"name": "a\x00"}, "name"),
    ({"tags": ["ok", "\x00"]}, "tags"),
])
def test_body_schemas_refuse(data, field):
    with pytest.raises(ValidationError) as caught:
        _Body().load(data)
    assert field in caught.value.messages


def test_body_schemas_accept_the_edges():
    loaded = _Body().load({"count": INT64_MAX, "attempt": 2**31 - 1, "when": "1970-01-01T00:00:00Z",
                           "naive": "2999-12-31T23:59:59"})
    assert loaded["when"] == MIN_DATETIME
    assert loaded["naive"].replace(tzinfo=dt.UTC) == MAX_DATETIME


def test_query_strings_parse_digits_but_not_fractions():
    assert _Query().load({"count": "5"}) == {"count": 5}
    with pytest.raises(ValidationError):
        _Query().load({"count": "2.5"})
    with pytest.raises(ValidationError):
        _Query().load({"count": str(INT64_MAX + 1)})
