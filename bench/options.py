"""The resolved command line: each size option with its full-run and ``--quick`` defaults."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Knob:
    """A size option: its full-run default and its ``--quick`` default."""

    name: str
    full: Any
    quick: Any
    help: str


KNOBS = (
    Knob("enqueue_jobs", 2000, 200, "jobs submitted one request each (enqueue)"),
    Knob("enqueue_clients", 4, 4, "client threads for single submissions (enqueue)"),
    Knob("enqueue_batch_jobs", 20000, 3000, "jobs submitted through the batch endpoint (enqueue)"),
    Knob("batch_size", 1000, 500, "jobs per batch request (enqueue, throughput set-up)"),
    Knob("batch_clients", 2, 2, "client threads for batch requests"),
    Knob("workers", 4, 4, "worker processes (throughput, latency)"),
    Knob("single_jobs", 5000, 400, "jobs for the claim-batch-1 throughput run"),
    Knob("batched_jobs", 50000, 5000, "jobs for the batched throughput run"),
    Knob("batched_concurrency", 100, 100, "worker concurrency in the batched throughput run"),
    Knob("batched_claim_batch", 100, 100, "claim batch in the batched throughput run"),
    Knob("latency_jobs", 200, 50, "jobs submitted one at a time (latency)"),
    Knob("latency_gap_min_ms", 20, 20, "shortest pause between latency submissions"),
    Knob("latency_gap_max_ms", 50, 50, "longest pause between latency submissions"),
    Knob("claim_sizes", "10000,1000000", "10000,100000", "pending queue sizes, comma-separated (claim)"),
    Knob("claim_repeats", 200, 50, "timed claims per queue size, at most (claim)"),
    Knob("claim_budget_s", 60.0, 15.0, "seconds of claiming per queue size, at most (claim)"),
    Knob("jobtype_repeats", 3, 1, "runs of each job type, through the fleet and direct; medians count (jobtypes)"),
    Knob("jobtype_types", "all", "all", "job types to measure, comma-separated, or all (jobtypes)"),
    Knob("peer_workers", 4, 4, "worker processes of each peer queue (peers)"),
    Knob("pgqueuer_batch", 100, 100, "pgqueuer's dequeue batch size in its batched run (peers)"),
    Knob("bare_batch", 50, 50, "claim batch of the bare SKIP LOCKED loop in its batched run (peers)"),
    Knob("scale_workers", 1000, 100, "simulated workers long-polling the API (scale)"),
    Knob("scale_processes", 4, 2, "client processes the simulated workers are spread over (scale)"),
    Knob("scale_idle_s", 60.0, 20.0, "seconds the idle fleet is measured (scale)"),
    Knob("scale_busy", 20, 20, "simulated workers kept busy with a sleep job through the idle phase (scale)"),
    Knob("console_jobs", 100000, 10000, "jobs in the database while the console's pages are timed (console)"),
    Knob("console_repeats", 30, 10, "timed fetches of each console page (console)"),
    Knob("scale_burst_jobs", 20000, 200, "sleep jobs of 50-200 ms submitted to the fleet at once, 0: none (scale)"),
)


@dataclass(frozen=True)
class Options:
    """Resolved command line."""

    quick: bool
    only: tuple[str, ...]
    data_dir: Path
    enqueue_jobs: int
    enqueue_clients: int
    enqueue_batch_jobs: int
    batch_size: int
    batch_clients: int
    workers: int
    single_jobs: int
    batched_jobs: int
    batched_concurrency: int
    batched_claim_batch: int
    latency_jobs: int
    latency_gap_min_ms: int
    latency_gap_max_ms: int
    claim_sizes: tuple[int, ...]
    claim_repeats: int
    claim_budget_s: float
    jobtype_repeats: int
    jobtype_types: str
    peer_workers: int
    pgqueuer_batch: int
    bare_batch: int
    console_jobs: int
    console_repeats: int
    scale_workers: int
    scale_processes: int
    scale_idle_s: float
    scale_busy: int
    scale_burst_jobs: int
