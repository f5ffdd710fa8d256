"""The submission contract: canonical hashing, schema loading, error flattening."""

from __future__ import annotations

import pytest
from marshmallow import ValidationError

from api.app import _flatten
from api.database import libpq_url, sqlalchemy_url
from api.jobs.schemas import JobCreateSchema
from api.queue.submit import input_hash


def test_input_hash_is_canonical():
    assert input_hash("sleep", {"a": 1, "b": [1, 2]}) == input_hash("sleep", {"b": [1, 2], "a": 1})
    assert input_hash("sleep", {"a": 1}) != input_hash("noop", {"a": 1})
    assert input_hash("sleep", {"a": 1}) != input_hash("sleep", {"a": 2})
    with pytest.raises(ValueError):
        input_hash("sleep", {"a": float("nan")})  # never the bare token NaN


def test_job_create_fills_defaults_of_the_type():
    loaded = JobCreateSchema().load({"type": "sleep", "input_payload": {"seconds": 2}})
    assert loaded["input_payload"] == {"seconds": 2.0, "fail_attempts": 0, "permanent": False, "tag": None,
                                       "mode": "sleep"}
    assert loaded["priority"] == 5 and loaded["cache"] is True and loaded["run_after"] is None


def test_job_create_names_the_nested_field():
    with pytest.raises(ValidationError) as err:
        JobCreateSchema().load({"type": "sleep", "input_payload": {"seconds": -3}})
    assert _flatten(err.value.messages) == {
        "input_payload.seconds": ["Must be greater than or equal to 0.0 and less than or equal to 3600.0."]}


def test_flatten():
    assert _flatten({"jobs": {0: {"type": ["bad"]}, "_schema": ["whole"]}}) == {
        "jobs.0.type": ["bad"], "jobs": ["whole"]}
    assert _flatten(["Invalid JSON body."]) == {"_body": ["Invalid JSON body."]}


def test_database_urls():
    assert sqlalchemy_url("postgresql://u@h/db") == "postgresql+psycopg://u@h/db"
    assert sqlalchemy_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    assert libpq_url("postgresql+psycopg://u@/db?host=/tmp") == "postgresql://u@/db?host=/tmp"
    with pytest.raises(ValueError):
        sqlalchemy_url("sqlite:///x.db")
