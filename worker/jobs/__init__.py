"""The handlers of every job type the worker runs, by type name, as the catalogue declares them.

Each job type's declaration (:class:`jobtypes.JobType`) names its handler as ``module:function``;
modules are imported on first use (the worker's child processes import them all up front, so
the first job pays no import cost).
"""

from __future__ import annotations

import importlib
from functools import cache

from jobtypes import CATALOGUE
from worker.jobs.context import JobContext, OutputFile, ref_id
from worker.jobs.errors import Cancelled, PermanentError

#: ``{type name: "module:function"}`` of every catalogued type that has a handler.
HANDLERS: dict[str, str] = {name: job_type.handler for name, job_type in CATALOGUE.items() if job_type.handler}

__all__ = ["HANDLERS", "Cancelled", "JobContext", "OutputFile", "PermanentError", "handler_for", "ref_id"]


@cache
def handler_for(job_type: str):  # type: ignore[no-untyped-def]
    """The handler function of ``job_type`` (KeyError when this worker has none)."""
    module, _, name = HANDLERS[job_type].partition(":")
    return getattr(importlib.import_module(module), name)
