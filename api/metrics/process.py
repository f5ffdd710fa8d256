"""Observations this process makes: results, claim latency, job duration, HTTP requests.

The metric objects are module globals, as prometheus_client expects. Whether their values
live in this process's memory or in per-process files that a scrape sums is decided by
prometheus_client itself when it is first imported: files when ``PROMETHEUS_MULTIPROC_DIR``
is set (gunicorn, see api/gunicorn_conf.py), memory otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

#: The variable prometheus_client reads to switch to multiprocess mode (set by gunicorn_conf).
MULTIPROC_DIR_VAR = "PROMETHEUS_MULTIPROC_DIR"

#: From "picked up at once" (a long-polling worker was waiting) to "waited behind a backlog".
CLAIM_LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                           120.0, 300.0, 600.0, 1800.0, 3600.0)
#: Job types run from well under a second (statistics) to many minutes (large mosaics).
JOB_DURATION_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                          1800.0, 3600.0)
HTTP_DURATION_BUCKETS_S = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

COMPLETED = Counter("skyfleet_jobs_completed", "Jobs a worker reported SUCCEEDED.", ["type"])
FAILED = Counter("skyfleet_jobs_failed", "Jobs that FAILED on a worker's report (attempts used up, or a "
                 "permanent error).", ["type"])
CANCELLED = Counter("skyfleet_jobs_cancelled", "Running jobs whose worker acknowledged a cancel.", ["type"])
RETRIED = Counter("skyfleet_jobs_retried", "Failed attempts put back in the queue with backoff.", ["type"])
CLAIM_LATENCY = Histogram("skyfleet_job_claim_latency_seconds",
                          "Seconds between a job becoming due (run_after) and a worker claiming it.",
                          ["type"], buckets=CLAIM_LATENCY_BUCKETS_S)
JOB_DURATION = Histogram("skyfleet_job_duration_seconds",
                         "Seconds from claim to report of an attempt a worker reported.",
                         ["type"], buckets=JOB_DURATION_BUCKETS_S)
HTTP_REQUESTS = Counter("skyfleet_http_requests", "HTTP requests served, by route template.",
                        ["method", "route", "status"])
HTTP_DURATION = Histogram("skyfleet_http_request_duration_seconds",
                          "Seconds to produce a response (a stream: until its headers).",
                          ["method", "route"], buckets=HTTP_DURATION_BUCKETS_S)

# The job's status after an accepted report → the counter it feeds.
_BY_STATUS = {"SUCCEEDED": COMPLETED, "FAILED": FAILED, "CANCELLED": CANCELLED, "PENDING": RETRIED}


@dataclass(frozen=True)
class ClaimSample:
    """One job handed to a worker."""

    type: str
    #: Seconds since it became due (0 for a job claimed the moment it was due).
    waited_s: float


@dataclass(frozen=True)
class ResultSample:
    """One accepted report."""

    type: str
    #: The job's status after the report: SUCCEEDED, FAILED, CANCELLED, or PENDING (a retry).
    status: str
    duration_s: float


def observe_claims(samples: Iterable[ClaimSample]) -> None:
    """Record jobs just claimed."""
    for s in samples:
        CLAIM_LATENCY.labels(s.type).observe(max(s.waited_s, 0.0))


def observe_results(samples: Iterable[ResultSample]) -> None:
    """Record accepted reports: one count by outcome, one duration."""
    for s in samples:
        counter = _BY_STATUS.get(s.status)
        if counter is not None:
            counter.labels(s.type).inc()
        JOB_DURATION.labels(s.type).observe(max(s.duration_s, 0.0))


def observe_request(method: str, route: str, status: int, duration_s: float | None) -> None:
    """Record one HTTP request (``duration_s`` is None when its start was not seen)."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    if duration_s is not None:
        HTTP_DURATION.labels(method, route).observe(duration_s)


def multiprocess_dir() -> str | None:
    """The directory of per-process metric files, when gunicorn set one up."""
    # prometheus_client's own variable, read here only to mirror the choice it already made.
    return os.environ.get(MULTIPROC_DIR_VAR) or None


class _Forward(Collector):
    """Everything in another registry (the default one, in single-process mode)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def scrape_registry() -> CollectorRegistry:
    """A fresh registry holding this server's process-local metrics, for one scrape.

    In multiprocess mode it sums the files of every process of this gunicorn server
    (live or dead); otherwise it forwards the default registry of this process.
    """
    registry = CollectorRegistry()
    directory = multiprocess_dir()
    if directory:
        multiprocess.MultiProcessCollector(registry, path=directory)
    else:
        registry.register(_Forward(REGISTRY))
    return registry
