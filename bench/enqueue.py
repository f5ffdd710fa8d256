"""Scenario ``enqueue``: jobs/s accepted by the API, one job per request and in batches."""

from __future__ import annotations

from bench.clients import noop_jobs, post_parallel, submit_batches
from bench.cpu import cpu_note, cpu_sample, cpu_used
from bench.figures import ScenarioResult, figure, percentile, say
from bench.fleet import Fleet
from bench.options import Options


def bench_enqueue(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Jobs/s through ``POST /api/jobs`` (one job per request) and ``POST /api/jobs/batch``."""
    result = ScenarioResult()
    api = fleet.admin_api()
    try:
        fleet.reset()
        post_parallel(api, "/api/jobs", noop_jobs("warm", 10 * opts.enqueue_clients), opts.enqueue_clients)
        submit_batches(api, noop_jobs("warm-batch", 2 * opts.batch_size), opts.batch_size, opts.batch_clients)

        fleet.reset()
        say(f"  {opts.enqueue_jobs:,} single submissions from {opts.enqueue_clients} threads …")
        cpu_before = cpu_sample(fleet.cpu_roles())
        singles = noop_jobs("single", opts.enqueue_jobs)
        wall, latencies = post_parallel(api, "/api/jobs", singles, opts.enqueue_clients)
        single_cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles()))
        ms = [x * 1000 for x in latencies]
        result.figures.append(figure(
            "enqueue", f"single requests ({opts.enqueue_clients} clients)", len(singles) / wall, "jobs/s",
            jobs=len(singles), seconds=wall, request_p50_ms=percentile(ms, 50),
            request_p99_ms=percentile(ms, 99),
            cpu_s=single_cpu,
        ))
        result.notes.append(f"single: request latency p50 {percentile(ms, 50):.1f} ms, "
                            f"p99 {percentile(ms, 99):.1f} ms")
        result.notes.append(cpu_note("single", single_cpu))

        fleet.reset()
        say(f"  {opts.enqueue_batch_jobs:,} jobs in batches of {opts.batch_size} "
            f"from {opts.batch_clients} threads …")
        jobs = noop_jobs("batch", opts.enqueue_batch_jobs)
        cpu_before = cpu_sample(fleet.cpu_roles())
        wall = submit_batches(api, jobs, opts.batch_size, opts.batch_clients)
        batch_cpu = cpu_used(cpu_before, cpu_sample(fleet.cpu_roles()))
        result.figures.append(figure(
            "enqueue", f"batches of {opts.batch_size} ({opts.batch_clients} clients)",
            len(jobs) / wall, "jobs/s",
            jobs=len(jobs), seconds=wall, cpu_s=batch_cpu,
        ))
        result.notes.append(cpu_note("batches", batch_cpu))
        created = fleet.sql().value("SELECT count(*) FROM jobs")
        if created != len(jobs):
            result.notes.append(f"WARNING: {created} jobs in the table for {len(jobs)} submitted")
    finally:
        api.close()
    return result
