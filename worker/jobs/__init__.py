"""The handlers of every job type the worker runs, by type name.

Each entry names ``module:function``; modules are imported on first use (the worker's
child processes import them all up front, so the first job pays no import cost).
"""

from __future__ import annotations

import importlib
from functools import cache

from worker.jobs.context import JobContext, OutputFile, ref_id
from worker.jobs.errors import Cancelled, PermanentError

HANDLERS: dict[str, str] = {
    "noop": "worker.jobs.builtin:run_noop",
    "sleep": "worker.jobs.builtin:run_sleep",
    "fits.inspect": "worker.jobs.fitsfiles:inspect",
    "table.page": "worker.jobs.fitsfiles:table_page",
    "spectrum.extract": "worker.jobs.spectrum:spectrum_extract",
    "region.stats": "worker.jobs.regionstats:region_stats",
    "sources.detect": "worker.jobs.detect:detect_sources",
    "image.composite": "worker.jobs.composite:composite",
    "image.mosaic": "worker.jobs.mosaic:mosaic",
    "fits.thumbnail": "worker.jobs.thumbnail:thumbnail",
}

__all__ = ["HANDLERS", "Cancelled", "JobContext", "OutputFile", "PermanentError", "handler_for", "ref_id"]


@cache
def handler_for(job_type: str):  # type: ignore[no-untyped-def]
    """The handler function of ``job_type`` (KeyError when this worker has none)."""
    module, _, name = HANDLERS[job_type].partition(":")
    return getattr(importlib.import_module(module), name)
