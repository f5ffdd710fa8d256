"""The job-type catalogue: per type, its input schema, limits and retry policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from marshmallow import Schema

DEFAULT_TIMEOUT_S = 600.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_BASE_S = 1.0
DEFAULT_BACKOFF_CAP_S = 300.0
#: Job priorities run from 0 (most urgent) to 9 (background work such as thumbnails).
MIN_PRIORITY = 0
MAX_PRIORITY = 9
DEFAULT_PRIORITY = 5


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing job is tried and how long it waits in between.

    The delay before attempt n+1 is ``min(cap, base * 2**(n-1))``, of which a random
    half is jittered away so retries of a burst of failures do not arrive together.
    """

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S


@dataclass(frozen=True)
class JobType:
    """One kind of work the fleet knows how to do, declared once: the API validates and describes
    submissions with it, the queue retries and times out by it, the worker runs its handler.

    The handler is named, not imported (``"worker.jobs.detect:detect_sources"``): the API and the
    manager read the catalogue without importing numpy, astropy or photutils, and a worker imports
    each handler's module once, up front, in its job processes. Adding a type is this declaration
    (registered with :func:`register`) and its handler function.
    """

    name: str
    description: str
    input_schema: type[Schema]
    #: ``module:function`` of the worker's handler (``(payload, JobContext) -> result``); empty for a
    #: type no worker runs (tests).
    handler: str = ""
    result_schema: type[Schema] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: Rough memory need, so pools can be sized: "small" (<256 MiB), "medium", "large".
    resource_class: str = "small"
    #: Peak bytes of memory the handler needs per input pixel (all channels together); a
    #: worker refuses, as a permanent error, an input whose estimate exceeds its budget.
    bytes_per_pixel: float = 0.0

    @cached_property
    def inputs(self) -> Schema:
        """The input schema, built once (building a marshmallow schema costs more than loading with it)."""
        return self.input_schema()


CATALOGUE: dict[str, JobType] = {}


def register(job_type: JobType) -> JobType:
    """Add a job type to the catalogue (at import time of its module)."""
    if job_type.name in CATALOGUE:
        raise ValueError(f"job type {job_type.name!r} registered twice")
    CATALOGUE[job_type.name] = job_type
    return job_type


def get_job_type(name: str) -> JobType | None:
    """The catalogue entry for ``name``, or None when there is no such type."""
    return CATALOGUE.get(name)


def job_type_names() -> list[str]:
    """All known job type names, sorted."""
    return sorted(CATALOGUE)


# Job types register themselves on import.
from jobtypes import builtin, fitsfiles, imaging, photometry  # noqa: F401
