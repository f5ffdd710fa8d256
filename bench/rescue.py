"""Scenario ``rescue``: how soon a SIGKILLed worker's job is claimed again."""

from __future__ import annotations

import time

from bench.clients import RUN_ID
from bench.errors import BenchError
from bench.figures import ScenarioResult, Target, figure, say
from bench.fleet import Fleet
from bench.options import Options
from bench.waiting import wait_for

_HOLDER = """
    SELECT w.pid FROM jobs j JOIN workers w ON w.id = j.worker_id
    WHERE j.id = %s AND j.status = 'IN_PROGRESS'
"""

_SECOND_ATTEMPT = """
    SELECT extract(epoch FROM j.started_at - %s::timestamptz), w.pid
    FROM jobs j JOIN workers w ON w.id = j.worker_id
    WHERE j.id = %s AND j.attempt = 2
"""

_FIRST_ATTEMPT = """
    SELECT extract(epoch FROM lease_expires_at - %s::timestamptz),
           extract(epoch FROM ended_at - %s::timestamptz), outcome
    FROM job_attempts WHERE job_id = %s AND attempt = 1
"""


def bench_rescue(fleet: Fleet, opts: Options) -> ScenarioResult:
    """Seconds from SIGKILLing the worker running a job until the job's next attempt is claimed."""
    fleet.reset()
    procs = fleet.start_workers(2, "noop,sleep", 1, 1)
    api = fleet.admin_api()
    db = fleet.sql()
    try:
        time.sleep(0.5)
        body = {"type": "sleep", "input_payload": {"seconds": 60, "tag": f"{RUN_ID}-rescue"}}
        job_id = int(api.post("/api/jobs", body)["id"])
        pid = wait_for(lambda: db.value(_HOLDER, (job_id,)), 30.0, "the sleep job to start", interval_s=0.01)
        victim = next((p for p in procs if p.pid == pid), None)
        if victim is None:
            raise BenchError(f"job {job_id} is held by pid {pid}, not one of ours")
        say(f"  job {job_id} is running in worker pid {pid}; SIGKILL …")
        victim.kill()
        killed_at = db.value("SELECT clock_timestamp()")
        victim.wait()
        second = wait_for(lambda: db.one(_SECOND_ATTEMPT, (killed_at, job_id)), 60.0,
                          "attempt 2 of the killed worker's job")
        first = db.one(_FIRST_ATTEMPT, (killed_at, killed_at, job_id))
        api.post(f"/api/jobs/{job_id}/cancel", {})
    finally:
        api.close()
        # The survivor learns of the cancel from its next heartbeat, reports it, then exits.
        fleet.stop_workers(procs)
    status = db.value("SELECT status FROM jobs WHERE id = %s", (job_id,))
    seconds, new_pid = float(second[0]), second[1]
    assert first is not None
    result = ScenarioResult(data={"job_id": job_id, "seconds": seconds})
    result.figures.append(figure("rescue", "killed worker's job running again after", seconds, "s",
                                 Target("<=", 15), lease_expired_after_s=float(first[0]),
                                 rescued_after_s=float(first[1]) if first[1] is not None else None))
    result.notes.append(
        f"after the kill: lease expired at +{float(first[0]):.2f} s, rescued ({first[2]}) at "
        f"+{float(first[1]):.2f} s, claimed again by pid {new_pid} at +{seconds:.2f} s; "
        f"job {job_id} is {status} after the cancel"
    )
    return result
