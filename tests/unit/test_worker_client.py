"""The worker's client and outbox without a network: what the worker's policy waits out, what
it reads, and what becomes of reports the API fails on (the retrying itself is tested with the
client base, in test_http_session.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from skyfleet_client.errors import Rejected, ServerError, Unauthorized, Unavailable

from jobtypes import protocol
from worker.client import WORKER_POLICY, read
from worker.outbox import REPORT_TRIES, Outbox


def test_the_worker_waits_out_every_outage_until_it_is_told_to_stop():
    assert WORKER_POLICY.retry_for_s is None
    assert WORKER_POLICY.transient_statuses == {408, 429, 502, 503, 504}
    assert WORKER_POLICY.may_resend("POST") and WORKER_POLICY.auth_failures_transient


def test_an_answer_that_is_not_the_message_expected_is_the_apis_error():
    with pytest.raises(ServerError, match="BAD_ANSWER") as rejected:
        read(protocol.Registered, {"id": "not a number"})
    assert isinstance(rejected.value, Rejected) and rejected.value.status == 500


# -- the outbox ----------------------------------------------------------------------


def _report(job_id: int) -> protocol.Report:
    return protocol.Report(job_id=job_id, attempt=1, token=uuid.uuid4(), status="SUCCEEDED")


class FakeResults:
    """The results endpoint: fails on batches holding ``poison``; otherwise accepts everything."""

    def __init__(self, fail: Callable[[list[protocol.Report]], Exception | None]) -> None:
        self.fail = fail
        self.batches: list[list[int]] = []

    def __call__(self, reports: list[protocol.Report]) -> list[protocol.Outcome]:
        self.batches.append([r.job_id for r in reports])
        error = self.fail(reports)
        if error is not None:
            raise error
        return [protocol.Outcome(job_id=r.job_id, attempt=r.attempt, token=r.token, accepted=True) for r in reports]


def _outbox(send: FakeResults) -> tuple[Outbox, list[int]]:
    forgotten: list[int] = []
    outbox = Outbox(send, lambda reports: forgotten.extend(r.job_id for r in reports), batch_size=500,
                    backoff_base_s=0.0)
    return outbox, forgotten


def test_the_report_the_api_fails_on_is_isolated_and_dropped(caplog: pytest.LogCaptureFixture):
    send = FakeResults(lambda reports: ServerError("boom", "INTERNAL_ERROR", 500)
                       if any(r.job_id == 5 for r in reports) else None)
    outbox, forgotten = _outbox(send)
    for job_id in range(1, 9):
        outbox.put(_report(job_id))
    assert outbox.deliver(outbox.take()) is True
    assert sorted(forgotten) == list(range(1, 9))  # 5 dropped, the others accepted
    assert outbox.idle()
    failed = [b for b in send.batches if 5 in b]
    assert [len(b) for b in failed] == [8] * REPORT_TRIES + [4] * REPORT_TRIES + [2] * REPORT_TRIES + [1] * REPORT_TRIES
    assert "job 5 attempt 1: the API cannot process its report" in caplog.text


def test_an_outage_keeps_every_report():
    outbox, forgotten = _outbox(FakeResults(lambda reports: Unavailable("down")))
    outbox.put(_report(1))
    outbox.put(_report(2))
    assert outbox.deliver(outbox.take()) is False
    assert forgotten == [] and not outbox.idle()
    assert [p.report.job_id for p in outbox.take()] == [1, 2]


def test_a_refused_worker_drops_nothing():
    outbox, forgotten = _outbox(FakeResults(lambda reports: Unauthorized("no", "UNAUTHORIZED", 401)))
    outbox.put(_report(1))
    assert outbox.deliver(outbox.take()) is False
    assert forgotten == [] and not outbox.idle()


def test_reports_a_claim_failed_with_go_apart():
    outbox, _ = _outbox(FakeResults(lambda reports: None))
    outbox.put(_report(1))
    outbox.give_back(outbox.take(for_claim=True), suspect=True)
    outbox.put(_report(2))
    assert [p.report.job_id for p in outbox.take(for_claim=True)] == [2]
    assert [p.report.job_id for p in outbox.take()] == [1]


def test_stale_reports_are_done_with(caplog: pytest.LogCaptureFixture):
    outbox, forgotten = _outbox(FakeResults(lambda reports: None))
    report = _report(1)
    outbox.put(report)
    outbox.settle(outbox.take(), [protocol.Outcome(job_id=1, attempt=1, token=report.token, accepted=False)])
    assert forgotten == [1] and outbox.idle()
    assert "was not accepted (stale)" in caplog.text
