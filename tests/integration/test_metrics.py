"""``/metrics``: queue gauges read from the database, and this process's counters and histograms.

The Flask test client is one process without ``PROMETHEUS_MULTIPROC_DIR``: the process
metrics come from the default registry and accumulate across tests, so tests compare a
scrape before and after. (tests/acceptance/test_metrics.py covers gunicorn's processes.)
"""

from __future__ import annotations

import datetime as dt
import socket
import uuid
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from api.metrics import samples
from api.queue.leases import ReportOutcome
from jobtypes import job_type_names, protocol
from tests.integration.conftest import As, claim, register, report, submit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Any) -> Samples:
    """Every sample of a scrape, by (name, labels)."""
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for s in family.samples
    }


def value(samples_: Samples, name: str, **labels: str) -> float:
    return samples_.get((name, frozenset(labels.items())), 0.0)


def test_metrics_need_no_token_and_list_every_type(app):
    got = scrape(app.test_client())
    assert value(got, "skyfleet_database_up") == 1
    assert value(got, "pending_tasks_total") == 0
    for job_type in job_type_names():
        for state in ("due", "scheduled"):
            assert (("skyfleet_jobs_pending", frozenset({("type", job_type), ("state", state)}))) in got
        assert ("skyfleet_jobs_in_progress", frozenset({("type", job_type)})) in got
    assert value(got, "skyfleet_workers", state="live") == 0


def test_queue_gauges_follow_the_queue(app, engine, alice: As, worker_account: As):
    client = app.test_client()
    jobs = [submit(alice, "sleep", {"tag": str(i)}) for i in range(3)]
    submit(alice, "sleep", {"tag": "later"}, run_after="2099-01-01T00:00:00Z")
    submit(alice, "noop", {})
    with engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET run_after = now() - interval '90 seconds' WHERE id = :id"),
                     {"id": jobs[0]["id"]})
    got = scrape(client)
    assert value(got, "skyfleet_jobs_pending", type="sleep", state="due") == 3
    assert value(got, "skyfleet_jobs_pending", type="sleep", state="scheduled") == 1
    assert value(got, "skyfleet_jobs_pending", type="noop", state="due") == 1
    assert value(got, "pending_tasks_total") == 5
    assert 90 <= value(got, "skyfleet_jobs_oldest_pending_age_seconds", type="sleep") < 120

    wid = register(worker_account, ("sleep",))
    claimed = claim(worker_account, wid, max_jobs=2)
    assert len(claimed) == 2
    got = scrape(client)
    assert value(got, "skyfleet_jobs_in_progress", type="sleep") == 2
    assert value(got, "skyfleet_jobs_pending", type="sleep", state="due") == 1
    assert value(got, "pending_tasks_total") == 3
    assert value(got, "skyfleet_workers", state="live") == 1

    with engine.begin() as conn:
        conn.execute(text("UPDATE workers SET last_heartbeat_at = now() - interval '1 hour'"))
    got = scrape(client)
    assert value(got, "skyfleet_workers", state="live") == 0
    assert value(got, "skyfleet_workers", state="lost") == 1


def test_claims_and_reports_are_observed_by_type(app, engine, alice: As, worker_account: As):
    client = app.test_client()
    before = scrape(client)
    ok_job = submit(alice, "sleep", {"tag": "ok"})
    retry_job = submit(alice, "sleep", {"tag": "retry"})
    bad_job = submit(alice, "sleep", {"tag": "bad"})
    with engine.begin() as conn:
        # Due for a minute already: its claim latency is at least that.
        conn.execute(text("UPDATE jobs SET run_after = now() - interval '60 seconds' WHERE id = :id"),
                     {"id": ok_job["id"]})
    wid = register(worker_account, ("sleep",))
    claimed = {c["job_id"]: c for c in claim(worker_account, wid)}
    assert set(claimed) == {ok_job["id"], retry_job["id"], bad_job["id"]}
    assert report(worker_account, wid, claimed[ok_job["id"]], result_payload={"slept_s": 0, "attempt": 1}
                  ).status_code == 200
    assert report(worker_account, wid, claimed[retry_job["id"]], "FAILED",
                  error={"message": "try again"}).status_code == 200
    assert report(worker_account, wid, claimed[bad_job["id"]], "FAILED",
                  error={"message": "bad input", "permanent": True}).status_code == 200
    # A stale report (already accepted) is not counted twice.
    assert report(worker_account, wid, claimed[ok_job["id"]]).status_code == 409

    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("skyfleet_job_claim_latency_seconds_count", type="sleep") == 3
    assert delta("skyfleet_job_claim_latency_seconds_sum", type="sleep") >= 60
    assert delta("skyfleet_jobs_completed_total", type="sleep") == 1
    assert delta("skyfleet_jobs_retried_total", type="sleep") == 1
    assert delta("skyfleet_jobs_failed_total", type="sleep") == 1
    assert delta("skyfleet_jobs_cancelled_total", type="sleep") == 0
    assert delta("skyfleet_job_duration_seconds_count", type="sleep") == 3


def test_reports_carried_by_a_claim_and_cancellations_are_observed(app, alice: As, worker_account: As):
    client = app.test_client()
    before = scrape(client)
    first = submit(alice, "noop", {"tag": "a"})
    wid = register(worker_account, ("noop", "sleep"))
    (job,) = claim(worker_account, wid)
    doomed = submit(alice, "sleep", {"tag": "cancel me"})
    # The next claim carries the first job's result and takes the second job.
    response = worker_account.post(f"/api/workers/{wid}/claim", {
        "max_jobs": 5, "wait_s": 0,
        "results": [{"job_id": first["id"], "attempt": job["attempt"], "token": job["token"], "status": "SUCCEEDED",
                     "result_payload": {}}],
    })
    assert response.status_code == 200
    assert response.json["data"]["results"][0]["accepted"]
    (running,) = response.json["data"]["jobs"]
    assert alice.post(f"/api/jobs/{doomed['id']}/cancel").status_code == 200
    assert report(worker_account, wid, running, "CANCELLED").status_code == 200
    after = scrape(client)
    assert value(after, "skyfleet_jobs_completed_total", type="noop") - \
        value(before, "skyfleet_jobs_completed_total", type="noop") == 1
    assert value(after, "skyfleet_jobs_cancelled_total", type="sleep") - \
        value(before, "skyfleet_jobs_cancelled_total", type="sleep") == 1
    assert value(after, "skyfleet_job_claim_latency_seconds_count", type="noop") - \
        value(before, "skyfleet_job_claim_latency_seconds_count", type="noop") == 1


def test_http_requests_are_counted_by_route_template(app, alice: As):
    client = app.test_client()
    before = scrape(client)
    for job_id in (101, 102, 103):
        assert alice.get(f"/api/jobs/{job_id}").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    after = scrape(client)
    route = "/api/jobs/<int:job_id>"
    assert value(after, "skyfleet_http_requests_total", method="GET", route=route, status="404") - \
        value(before, "skyfleet_http_requests_total", method="GET", route=route, status="404") == 3
    assert value(after, "skyfleet_http_request_duration_seconds_count", method="GET", route=route) - \
        value(before, "skyfleet_http_request_duration_seconds_count", method="GET", route=route) == 3
    assert value(after, "skyfleet_http_requests_total", method="GET", route="<unmatched>", status="404") - \
        value(before, "skyfleet_http_requests_total", method="GET", route="<unmatched>", status="404") == 1
    # One series per route, never one per job id.
    assert not any("101" in dict(labels).get("route", "") for _, labels in after)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_scrape_during_a_database_outage_says_so(app_factory):
    down = app_factory(database_url=f"postgresql://postgres@127.0.0.1:{_closed_port()}/nowhere")
    got = scrape(down.test_client())
    assert value(got, "skyfleet_database_up") == 0
    assert not any(name == "pending_tasks_total" for name, _ in got)


def test_samples_come_from_what_the_claim_and_report_answered():
    job = protocol.ClaimedJob(job_id=1, token=uuid.uuid4(), type="sleep", attempt=1, max_attempts=3, input_payload={},
                              lease_expires_at=dt.datetime.now(dt.UTC), timeout_s=0.0, input_files=[], waited_s=2.5)
    outcomes = [ReportOutcome(2, str(uuid.uuid4()), 1, True, "SUCCEEDED", None, "noop", 0.25),
                ReportOutcome(3, str(uuid.uuid4()), 1, False)]
    assert [(c.type, c.waited_s) for c in samples.claim_samples([job])] == [("sleep", 2.5)]
    assert [(r.type, r.status) for r in samples.result_samples(outcomes)] == [("noop", "SUCCEEDED")]


def test_metrics_are_in_the_openapi_document(app):
    spec = app.test_client().get("/api/openapi.json").json
    operation = spec["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert "security" not in operation
