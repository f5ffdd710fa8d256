"""``python -m bench.swarm``: one process of simulated workers, for the ``scale`` scenario.

A simulated worker speaks the worker protocol as ``worker/runtime.py`` does, running nothing
real: it registers (``POST /api/workers``, concurrency 1, types noop and sleep), then claims
one job at a time, one long poll after another (``POST /api/workers/{id}/claim`` with
``max_jobs`` 1 and ``wait_s`` :data:`CLAIM_WAIT_S`, the real worker's default), "runs" what it
gets in its claim thread (a ``sleep`` job sleeps its seconds, a ``noop`` returns at once) and
carries the report in its next claim. A second thread heartbeats every
``heartbeat_interval_s`` (from the registration answer) with the jobs it holds, running or not
yet reported, and only while it holds one: an idle worker sends no heartbeat, its open claim is
what keeps it alive (as the real worker). So an idle fleet costs the API one claim per worker
per wait, and its heartbeats come from the busy workers alone. Each simulated worker is two
threads with a keep-alive connection each (a parked claim holds its connection), as in the
real worker.

Differences from the real worker, to stay light: one login per process (the workers of a
process share its access token; a 401 logs in again); no input fetch or output upload; a
``drain`` in an answer is ignored. A request that times out (:data:`HTTP_TIMEOUT_S`, the
worker's default, plus the wait for a claim), fails to connect or answers 5xx is counted and
the claim retried after an exponential backoff with jitter (0.5 s doubling to 15 s, as the
worker's client); a heartbeat is not retried (the next one is due anyway). A 404 or 409
(worker unknown, or declared lost) is counted and the worker registers again.

It runs until SIGTERM, then writes its record as JSON to ``--out``: every request as
``[kind, worker, started (epoch s), milliseconds, outcome]``; every job it ran as
``[job_id, attempt, worker, held from, held until]`` (epoch s: from the claim's answer to the
answer of the claim that carried its report, i.e. while its lease was this worker's to
heartbeat; ``held until`` is null if it was still held at the end); and the count of reports
the API answered ``accepted: false``. Credentials come from ``SKYFLEET_WORKER_EMAIL`` and
``SKYFLEET_WORKER_PASSWORD``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import requests

CLAIM_WAIT_S = 20.0
HTTP_TIMEOUT_S = 10.0
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 15.0
#: Registrations in flight at once per process (a fleet's workers do not all start in the same ms).
REGISTER_CONCURRENCY = 8
THREAD_STACK_BYTES = 512 * 1024
GONE = frozenset({404, 409})


class Swarm:
    """The shared state of one process: its token, its stop flag, its record."""

    def __init__(self, api_url: str, email: str, password: str) -> None:
        self.api_url, self.email, self.password = api_url, email, password
        self.stop = threading.Event()
        self.register_slots = threading.Semaphore(REGISTER_CONCURRENCY)
        self._lock = threading.Lock()
        self._token = ""
        self.requests: list[list[Any]] = []
        self.jobs: list[list[Any]] = []
        self.stale_reports = 0

    def token(self, rejected: str | None = None) -> str:
        """The shared access token; a new login when there is none or it is ``rejected``."""
        with self._lock:
            if self._token and self._token != rejected:
                return self._token
        while not self.stop.is_set():
            try:
                response = requests.post(f"{self.api_url}/api/auth/login", timeout=HTTP_TIMEOUT_S,
                                         json={"email": self.email, "password": self.password})
                if response.status_code == 200:
                    with self._lock:
                        self._token = str(response.json()["data"]["access_token"])
                        return self._token
            except requests.RequestException:
                pass
            self.stop.wait(random.uniform(0.5, 2.0))
        return ""

    def record(self, kind: str, worker: int, started: float, seconds: float, outcome: str) -> None:
        with self._lock:
            self.requests.append([kind, worker, round(started, 4), round(seconds * 1000, 3), outcome])

    def ran(self, job_id: int, attempt: int, worker: int) -> list[Any]:
        """Record a job taken now; its row, to pass to :meth:`released` once its report is answered."""
        row: list[Any] = [job_id, attempt, worker, round(time.time(), 4), None]
        with self._lock:
            self.jobs.append(row)
        return row

    def released(self, row: list[Any]) -> None:
        with self._lock:
            row[4] = round(time.time(), 4)

    def count_stale(self, reports: int) -> None:
        with self._lock:
            self.stale_reports += reports

    def dump(self, path: Path) -> None:
        with self._lock:
            body = {"requests": self.requests, "jobs": self.jobs, "stale_reports": self.stale_reports}
        path.write_text(json.dumps(body))


class SimWorker:
    """One simulated worker: the claim loop on its own thread, heartbeats on another."""

    def __init__(self, swarm: Swarm, index: int) -> None:
        self.swarm, self.index = swarm, index
        self.worker_id = 0
        self.heartbeat_interval_s = 2.0
        self.lost = threading.Event()
        self.registered = threading.Event()
        #: (job_id, attempt) → its row in the swarm's record, from the claim to the report's answer.
        self._held: dict[tuple[int, int, str], list[Any]] = {}
        self._lock = threading.Lock()
        self._backoff = BACKOFF_BASE_S

    def post(self, session: requests.Session, kind: str, path: str, body: dict[str, Any],
             timeout: float) -> tuple[str, dict[str, Any]]:
        """One POST, recorded; (outcome, the envelope's data). Outcome: ok, timeout, connect, 4xx, 5xx, gone."""
        token = self.swarm.token()
        started_wall, started = time.time(), time.perf_counter()
        outcome = "ok"
        data: dict[str, Any] = {}
        try:
            response = session.post(f"{self.swarm.api_url}{path}", json=body, timeout=timeout,
                                    headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 401:
                self.swarm.token(rejected=token)
            if response.status_code in GONE:
                outcome = "gone"
            elif response.status_code >= 500:
                outcome = "5xx"
            elif response.status_code >= 400:
                outcome = "4xx"
            else:
                data = response.json().get("data") or {}
        except requests.Timeout:
            outcome = "timeout"
        except requests.ConnectionError:
            outcome = "connect"
        self.swarm.record(kind, self.index, started_wall, time.perf_counter() - started, outcome)
        return outcome, data

    def pause(self) -> None:
        """Wait out a failure: exponential backoff with jitter."""
        self.swarm.stop.wait(self._backoff * random.uniform(0.5, 1.0))
        self._backoff = min(BACKOFF_CAP_S, self._backoff * 2)

    def register(self, session: requests.Session) -> None:
        """Register, trying until the API answers or the swarm stops."""
        body = {"name": f"sim-{self.index}", "job_types": ["noop", "sleep"], "concurrency": 1,
                "hostname": socket.gethostname(), "pid": os.getpid()}
        while not self.swarm.stop.is_set():
            with self.swarm.register_slots:
                outcome, data = self.post(session, "register", "/api/workers", body, HTTP_TIMEOUT_S)
            if outcome == "ok":
                self.worker_id = int(data["id"])
                self.heartbeat_interval_s = float(data.get("heartbeat_interval_s") or 2.0)
                self.lost.clear()
                self.registered.set()
                self._backoff = BACKOFF_BASE_S
                return
            self.pause()

    def claim_loop(self) -> None:
        """Register, then claim → run → report in the next claim, until the swarm stops."""
        session = requests.Session()
        reports: list[dict[str, Any]] = []
        self.register(session)
        while not self.swarm.stop.is_set():
            if self.lost.is_set():
                self.register(session)
                continue
            body = {"max_jobs": 1, "wait_s": CLAIM_WAIT_S, "results": reports}
            outcome, data = self.post(session, "claim", f"/api/workers/{self.worker_id}/claim", body,
                                      CLAIM_WAIT_S + HTTP_TIMEOUT_S)
            if outcome == "gone":
                self.lost.set()
                continue
            if outcome != "ok":
                self.pause()  # the reports go again with the next claim
                continue
            self._backoff = BACKOFF_BASE_S
            self.settle(reports, data.get("results") or [])
            reports = [self.run(job) for job in data.get("jobs") or []]

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        """Hold the job's lease while "running" it; its SUCCEEDED report."""
        key = (int(job["job_id"]), int(job["attempt"]), str(job["token"]))
        row = self.swarm.ran(key[0], key[1], self.index)
        with self._lock:
            self._held[key] = row
        payload = job.get("input_payload") or {}
        if job["type"] == "sleep":
            time.sleep(float(payload.get("seconds") or 0.0))
            result = {"slept_s": float(payload.get("seconds") or 0.0), "attempt": key[1], "tag": payload.get("tag")}
        else:
            result = {"ok": True, "tag": payload.get("tag")}
        return {"job_id": key[0], "attempt": key[1], "token": key[2], "status": "SUCCEEDED", "result_payload": result}

    def settle(self, reports: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> None:
        """The API answered the reports: stop heartbeating their leases; count the stale ones."""
        with self._lock:
            rows = [self._held.pop((report["job_id"], report["attempt"], report["token"]), None) for report in reports]
        for row in rows:
            if row is not None:
                self.swarm.released(row)
        self.swarm.count_stale(sum(1 for o in outcomes if not o.get("accepted")))

    def heartbeat_loop(self) -> None:
        """Every interval, extend the leases of the jobs held, if any (a failed beat is not retried).

        An idle worker does not heartbeat: its parked claim keeps it alive.
        """
        session = requests.Session()
        self.registered.wait()
        while not self.swarm.stop.wait(self.heartbeat_interval_s):
            if self.lost.is_set():
                continue
            with self._lock:
                held = [{"job_id": j, "attempt": a, "token": t, "progress": None} for j, a, t in sorted(self._held)]
            if not held:
                continue
            outcome, _ = self.post(session, "heartbeat", f"/api/workers/{self.worker_id}/heartbeat",
                                   {"jobs": held}, HTTP_TIMEOUT_S)
            if outcome == "gone":
                self.lost.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Start the simulated workers; on SIGTERM write the record and exit."""
    parser = argparse.ArgumentParser(prog="python -m bench.swarm", description="Simulated skyfleet workers.")
    parser.add_argument("--api", required=True, help="the API's base URL")
    parser.add_argument("--workers", type=int, required=True, help="simulated workers in this process")
    parser.add_argument("--first-index", type=int, default=0, help="index of the first (names sim-<index>)")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON record goes")
    args = parser.parse_args(argv)
    swarm = Swarm(args.api, os.environ["SKYFLEET_WORKER_EMAIL"], os.environ["SKYFLEET_WORKER_PASSWORD"])
    signal.signal(signal.SIGTERM, lambda _signum, _frame: swarm.stop.set())
    threading.stack_size(THREAD_STACK_BYTES)
    swarm.token()
    for index in range(args.first_index, args.first_index + args.workers):
        sim = SimWorker(swarm, index)
        # Daemon threads: a claim parked in the API must not hold up the exit.
        threading.Thread(target=sim.claim_loop, name=f"claim-{index}", daemon=True).start()
        threading.Thread(target=sim.heartbeat_loop, name=f"beat-{index}", daemon=True).start()
    while not swarm.stop.wait(0.5):
        pass
    swarm.dump(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
