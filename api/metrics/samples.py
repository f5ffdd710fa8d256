"""Turning claims and reports into metric samples.

The queue engine's answers carry neither the run_after of a claimed job nor the type and
start of a reported one, so, after the request's transaction has committed, one statement
reads them back from the assignments (immutable once written). It runs only for claims
that took jobs or carried accepted reports, and a failure costs the sample, never the
request: the claim or report has already been committed and must reach the worker.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from api.metrics.process import ClaimSample, ResultSample, observe_claims, observe_results
from api.queue.leases import ClaimedJob, ReportOutcome

log = logging.getLogger(__name__)

# The assignment is created by the claim, in the claim's transaction: its created_at is
# the claim time, and the job's run_after is when the job became due.
_CLAIMED = text("""
    SELECT j.type, greatest(extract(epoch FROM a.created_at - j.run_after), 0)::float8
    FROM job_assignments a JOIN jobs j ON j.id = a.job_id
    WHERE a.id = ANY(CAST(:ids AS bigint[]))
""")

# An accepted report completed the attempt's assignment: created_at → completed_at is the
# attempt's run, as the API saw it.
_REPORTED = text("""
    SELECT a.job_id, a.attempt, j.type, extract(epoch FROM a.completed_at - a.created_at)::float8
    FROM unnest(CAST(:job_ids AS bigint[]), CAST(:attempts AS int[])) AS k(job_id, attempt)
    JOIN job_assignments a ON a.job_id = k.job_id AND a.attempt = k.attempt AND a.completed_at IS NOT NULL
    JOIN jobs j ON j.id = a.job_id
""")


def claim_samples(conn: Connection, jobs: Sequence[ClaimedJob]) -> list[ClaimSample]:
    """How long each claimed job had waited since it became due."""
    if not jobs:
        return []
    rows = conn.execute(_CLAIMED, {"ids": [j.assignment_id for j in jobs]}).all()
    return [ClaimSample(job_type, waited_s) for job_type, waited_s in rows]


def result_samples(conn: Connection, outcomes: Sequence[ReportOutcome]) -> list[ResultSample]:
    """Type, new status and run time of each accepted report."""
    accepted = {(o.job_id, o.attempt): o.status for o in outcomes if o.accepted and o.status}
    if not accepted:
        return []
    rows = conn.execute(_REPORTED, {"job_ids": [j for j, _ in accepted],
                                    "attempts": [a for _, a in accepted]}).all()
    return [ResultSample(job_type, accepted[(job_id, attempt)], duration_s)
            for job_id, attempt, job_type, duration_s in rows]


def record(engine: Engine, jobs: Sequence[ClaimedJob] = (), outcomes: Sequence[ReportOutcome] = ()) -> None:
    """Observe what one committed claim or report did (claimed jobs, accepted reports)."""
    if not jobs and not any(o.accepted for o in outcomes):
        return
    try:
        with engine.connect() as conn:
            claims = claim_samples(conn, jobs)
            results = result_samples(conn, outcomes)
    except SQLAlchemyError:
        log.warning("metrics: could not read back a claim or report", exc_info=True)
        return
    observe_claims(claims)
    observe_results(results)
