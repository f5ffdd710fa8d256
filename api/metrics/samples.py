"""Turning claims and reports into metric samples.

The claim answers how long each job waited since it became due, and an accepted report
the job's type and how long the attempt ran (claim → report, as the API saw it), so
observing them costs no extra query.
"""

from __future__ import annotations

from collections.abc import Sequence

from api.metrics.process import ClaimSample, ResultSample, observe_claims, observe_results
from api.queue.leases import ReportOutcome
from jobtypes import protocol


def claim_samples(jobs: Sequence[protocol.ClaimedJob]) -> list[ClaimSample]:
    """How long each claimed job had waited since it became due."""
    return [ClaimSample(job.type, job.waited_s) for job in jobs]


def result_samples(outcomes: Sequence[ReportOutcome]) -> list[ResultSample]:
    """Type, new status and run time of each accepted report."""
    return [ResultSample(o.type, o.status, o.duration_s or 0.0)
            for o in outcomes if o.accepted and o.status and o.type]


def record(jobs: Sequence[protocol.ClaimedJob] = (), outcomes: Sequence[ReportOutcome] = ()) -> None:
    """Observe what one committed claim or report did (claimed jobs, accepted reports)."""
    observe_claims(claim_samples(jobs))
    observe_results(result_samples(outcomes))
