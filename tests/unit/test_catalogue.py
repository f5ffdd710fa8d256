"""A job type is declared once: the worker's handler table is derived from the catalogue."""

from __future__ import annotations

from jobtypes import CATALOGUE
from worker.jobs import HANDLERS, handler_for


def test_every_type_names_a_handler_the_worker_can_import():
    assert set(HANDLERS) == set(CATALOGUE)
    for name, job_type in CATALOGUE.items():
        assert HANDLERS[name] == job_type.handler
        assert callable(handler_for(name)), name


def test_the_input_schema_is_built_once():
    detect = CATALOGUE["sources.detect"]
    assert detect.inputs is detect.inputs and isinstance(detect.inputs, detect.input_schema)
