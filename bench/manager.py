"""Scenario ``manager``: how the manager's local backend follows a burst, from zero workers and back.

The manager runs as ``python -m manager`` (tick 1 s) with one local pool for ``sleep`` jobs:
min 0, max ``--workers``, ``jobs_per_worker`` = worker concurrency (4), scale-in window 10 s,
idle-to-zero 15 s. With the pool at zero, a burst of N one-second ``sleep`` jobs is submitted
through the batch API; the live workers of the pool (``GET /api/manager/workers``) and the
active jobs are polled every 100 ms. Figures, all in seconds from the last submission's answer:

- first worker registered (the manager's tick + a worker's start-up + registration);
- pool at its maximum;
- backlog drained (no job PENDING or IN_PROGRESS), next to the ideal at max workers,
  N × 1 s / (max × concurrency), and their ratio;
- back to zero workers, counted from the drain (window, idle time, drained workers' exit).

N is 500 (``--quick``: 60).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from typing import Any

from api.auth import service as accounts
from api.auth.models import Role
from api.database import make_engine
from bench.clients import RUN_ID, Api, submit_batches
from bench.errors import BenchError
from bench.figures import Figure, ScenarioResult, Target, figure, say
from bench.fleet import WORKER_EMAIL, Fleet
from bench.options import Options
from bench.waiting import active_jobs

MANAGER_NAME = "bench-manager"
POOL = "bench"
JOBS, QUICK_JOBS = 500, 60
JOB_S = 1.0
CONCURRENCY = 4
TICK_S = 1.0
SCALE_IN_WINDOW_S = 10.0
IDLE_TO_ZERO_S = 15.0
POLL_S = 0.1
TIMEOUT_S = 600.0


def _manager_account(fleet: Fleet) -> tuple[str, str]:
    """A MANAGER service account (password reset each run); (email, password)."""
    email, password = accounts.service_email(MANAGER_NAME), secrets.token_urlsafe(24)
    engine = make_engine(fleet.database_url, pool_size=1)
    try:
        with engine.begin() as conn:
            accounts.ensure_account(conn, email, password, [Role.MANAGER], MANAGER_NAME, is_service=True)
    finally:
        engine.dispose()
    return email, password


def _get(api: Api, path: str) -> Any:
    response = api.session.get(f"{api.base_url}{path}", timeout=30)
    if response.status_code != 200:
        raise BenchError(f"GET {path}: HTTP {response.status_code}: {response.text[:300]}")
    return response.json()["data"]


def _live(api: Api) -> int:
    return sum(1 for w in _get(api, "/api/manager/workers")["workers"] if w.get("pool") == POOL)


def bench_manager(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Seconds to the first worker, to max, to drain the burst and back to zero."""
    jobs = QUICK_JOBS if opts.quick else JOBS
    maximum = opts.workers
    fleet.reset()
    fleet.ensure_api()
    email, password = _manager_account(fleet)
    pool = {"name": POOL, "job_types": ["sleep"], "min": 0, "max": maximum,
            "jobs_per_worker": CONCURRENCY,
            "max_step": maximum, "scale_in_window_s": SCALE_IN_WINDOW_S, "idle_to_zero_s": IDLE_TO_ZERO_S,
            "env": {"SKYFLEET_WORKER_CONCURRENCY": str(CONCURRENCY), "SKYFLEET_WORKER_CLAIM_WAIT_S": "2",
                    "SKYFLEET_STORAGE_DIR": str(fleet.data_dir / "storage")}}
    env = {
        "SKYFLEET_API_URL": fleet.api_url, "SKYFLEET_MANAGER_EMAIL": email,
        "SKYFLEET_MANAGER_PASSWORD": password,
        "SKYFLEET_WORKER_EMAIL": WORKER_EMAIL, "SKYFLEET_WORKER_PASSWORD": fleet._worker_password,
        "SKYFLEET_MANAGER_TICK_S": str(TICK_S), "SKYFLEET_MANAGER_POOLS": json.dumps([pool]),
    }
    say(f"  manager: local pool 0..{maximum}, {CONCURRENCY} jobs per worker; "
        f"burst of {jobs} × {JOB_S:g} s sleeps")
    proc = fleet._spawn([sys.executable, "-m", "manager"], os.environ | env, "manager.log")
    fleet.workers.append(proc)   # stopped (SIGTERM, then its workers) by fleet.close() on any exit
    api = fleet.admin_api()
    db = fleet.sql()
    try:
        deadline = time.monotonic() + 60
        while not any(p["name"] == POOL for p in _get(api, "/api/admin/status")["pools"]):
            if proc.poll() is not None:
                raise BenchError(f"the manager exited (code {proc.returncode}); "
                                 f"see {fleet.log_dir / 'manager.log'}")
            if time.monotonic() > deadline:
                raise BenchError("the manager did not report its pool within 60 s")
            time.sleep(0.2)
        burst = [{"type": "sleep", "input_payload": {"seconds": JOB_S, "tag": f"{RUN_ID}-mgr-{i}"}}
                 for i in range(jobs)]
        submit_batches(api, burst, opts.batch_size, 1)
        t0 = time.monotonic()
        first = at_max = drained = zero = None
        most = 0
        while zero is None:
            now = time.monotonic() - t0
            if now > TIMEOUT_S:
                raise BenchError(f"no result within {TIMEOUT_S:.0f} s (first {first}, max {at_max}, "
                                 f"drained {drained}); see {fleet.log_dir / 'manager.log'}")
            if proc.poll() is not None:
                raise BenchError(f"the manager exited (code {proc.returncode})")
            live = _live(api)
            most = max(most, live)
            if first is None and live >= 1:
                first = now
            if at_max is None and live >= maximum:
                at_max = now
            if drained is None and active_jobs(db) == 0:
                drained = now
            if drained is not None and live == 0:
                zero = now
            time.sleep(POLL_S)
        retried = int(db.value("SELECT count(*) FROM jobs WHERE attempt > 1"))
        decisions = next(p for p in _get(api, "/api/admin/status")["pools"] if p["name"] == POOL)["decisions"]
    finally:
        api.close()
        fleet.stop_workers([proc])
    ideal = jobs * JOB_S / (maximum * CONCURRENCY)
    assert first is not None and drained is not None
    result = ScenarioResult(data={"jobs": jobs, "max_workers": maximum, "concurrency": CONCURRENCY,
                                  "first_worker_s": first, "at_max_s": at_max, "drained_s": drained,
                                  "ideal_s": ideal, "back_to_zero_s": zero - drained, "most_workers": most,
                                  "retried_jobs": retried})
    result.figures += [
        figure("manager", "first worker registered after", first, "s", Target("<=", 10)),
        figure("manager", f"pool at max ({maximum}) after", at_max, "s", Target("<=", 15))
        if at_max is not None else Figure("manager", f"pool at max ({maximum}): never reached", None, "s"),
        figure("manager", f"{jobs} jobs drained in", drained, "s"),
        figure("manager", "drain time / ideal at max workers", drained / ideal, "×", Target("<=", 1.5),
               ideal_s=ideal),
        figure("manager", "back to zero workers after the drain", zero - drained, "s",
               Target("<=", SCALE_IN_WINDOW_S + IDLE_TO_ZERO_S + 15)),
    ]
    result.notes.append(f"ideal drain at {maximum} × {CONCURRENCY} slots: {ideal:.1f} s; most live workers "
                        f"seen: {most}; jobs retried: {retried}; {len(decisions)} decisions recorded")
    if retried:
        result.notes.append("some jobs ran more than once: a scale-in stopped or lost a busy worker")
    return result

