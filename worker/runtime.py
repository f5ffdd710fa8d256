"""The worker loop: stop check → claim → execute → report; heartbeats on a side thread.

Each claimed job gets a thread of this process that fetches its inputs, runs its handler
in a child process (:mod:`worker.executor`), uploads its outputs and queues its report.
Nothing CPU-bound runs here, so heartbeats keep every lease alive however hard a handler
works. A result is kept (and its lease heartbeated) until the API has accepted it or
rejected it as stale, so a finished job is never lost to a network blip.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from storage import StorageError, open_storage
from storage.netguard import AddressGuard
from worker.client import ApiClient, ApiRejected
from worker.config import WorkerSettings
from worker.ecs import task_identity
from worker.executor import Executor, Outcome, Task, failure
from worker.inputs import InputFetcher, upload_outputs
from worker.jobs import HANDLERS, PermanentError

log = logging.getLogger(__name__)

#: How long a finished job's report waits for the next claim to carry it before it is sent alone.
REPORT_DELAY_S = 0.05


@dataclass
class Lease:
    """A claimed attempt, from claim until the API took its report."""

    job_id: int
    attempt: int
    cancel_event: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None
    finished: bool = False


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.draining = threading.Event()
        self._done = threading.Event()
        self.client = ApiClient(settings, self.stopping)
        self.worker_id: int | None = None
        self.heartbeat_interval_s = 2.0
        self._leases: dict[tuple[int, int], Lease] = {}
        self._lock = threading.Lock()
        self._busy = 0
        self._slot_freed = threading.Event()
        # Finished attempts waiting to be reported; the next claim usually carries them.
        self._outbox: list[dict[str, Any]] = []
        self._outbox_ready = threading.Event()
        self._reports_in_flight = 0
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="job")
        self.storage = open_storage(settings.storage_backend, root=settings.storage_dir,
                                    bucket=settings.s3_bucket, prefix=settings.s3_prefix)
        self.fetcher = InputFetcher(self.storage, AddressGuard(settings.allowed_networks),
                                    settings.max_input_bytes, settings.fetch_timeout_s)
        self.executor = Executor(preload=[HANDLERS[t].partition(":")[0] for t in settings.job_types])

    # -- lifecycle ---------------------------------------------------------------------

    def register(self) -> None:
        s = self.settings
        attributes = {k: v for k, v in {"pool": s.pool, "revision": s.revision, "launch_id": s.launch_id}.items() if v}
        data = self.client.post("/api/workers", {
            "name": s.name,
            "job_types": list(s.job_types),
            "concurrency": s.concurrency,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "attributes": attributes or None,
            **task_identity(s.ecs_metadata_uri),
        }, retry_for_s=300)
        self.worker_id = data["id"]
        self.heartbeat_interval_s = float(data["heartbeat_interval_s"])
        if s.heartbeat_interval_s:
            self.heartbeat_interval_s = min(self.heartbeat_interval_s, s.heartbeat_interval_s)
        log.info("registered worker %s (%s) for %s", self.worker_id, self.settings.name, self.settings.job_types)

    def run(self) -> int:
        """Work until SIGTERM/SIGINT, a drain request or the idle timeout; exit code 0."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        # The forkserver imports the handlers while the worker registers.
        warming = threading.Thread(target=self.executor.warm, args=(1,), name="warm", daemon=True)
        warming.start()
        self.register()
        threads = [
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True),
            threading.Thread(target=self._report_loop, name="reporter", daemon=True),
        ]
        for t in threads:
            t.start()
        idle_since = time.monotonic()
        # Claim when at least half the batch is free (or nothing runs), so claims stay full.
        min_free = max(1, min(self.settings.claim_batch, self.settings.concurrency) // 2)
        while not (self.stopping.is_set() or self.draining.is_set()):
            free = self.settings.concurrency - self._busy
            if free <= 0 or (free < min_free and self._busy):
                self._slot_freed.wait(1.0)
                self._slot_freed.clear()
                continue
            results = self._take_reports()
            try:
                data = self.client.post(
                    f"/api/workers/{self.worker_id}/claim",
                    {"max_jobs": min(free, self.settings.claim_batch), "wait_s": self.settings.claim_wait_s,
                     "results": results},
                    timeout=self.settings.claim_wait_s + self.settings.http_timeout_s,
                )
            except ConnectionError:
                self._return_reports(results)
                continue
            except ApiRejected as exc:
                self._return_reports(results)
                log.error("claim rejected: %s; stopping", exc)
                break
            self._settle(results, data["results"])
            if data["drain"]:
                self.draining.set()
            for job in data["jobs"]:
                self._start(job)
            if data["jobs"] or self._busy:
                idle_since = time.monotonic()
            elif self.settings.idle_timeout_s and time.monotonic() - idle_since >= self.settings.idle_timeout_s:
                log.info("idle for %.0f s; exiting", self.settings.idle_timeout_s)
                break
        self._shutdown()
        return 0

    def _shutdown(self) -> None:
        """Finish or release the running jobs, send every report, deregister.

        Drained (scale-in, redeploy) the worker finishes every running job however long it
        takes; stopping (SIGTERM, also during a drain) it gives them ``stop_grace_s`` from the
        signal, then releases what still runs.
        """
        deadline: float | None = None
        while self._busy:
            if self.stopping.is_set():
                deadline = deadline or time.monotonic() + self.settings.stop_grace_s
                if time.monotonic() >= deadline:
                    break
            self._slot_freed.wait(0.2)
            self._slot_freed.clear()
        with self._lock:
            unfinished = [k for k, c in self._leases.items() if not c.finished]
        if unfinished:
            for key in unfinished:
                self._leases[key].cancel_event.set()
            try:
                self.client.post(f"/api/workers/{self.worker_id}/release",
                                 {"jobs": [{"job_id": j, "attempt": a} for j, a in unfinished]}, retry_for_s=10)
            except (ConnectionError, ApiRejected):
                log.warning("could not release %s; their leases will lapse", unfinished)
        self._flush_reports()
        try:
            self.client.post(f"/api/workers/{self.worker_id}/deregister", {}, retry_for_s=5)
        except (ConnectionError, ApiRejected):
            log.warning("could not deregister")
        self._done.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.executor.close()

    # -- executing ---------------------------------------------------------------------

    def _start(self, job: dict[str, Any]) -> None:
        lease = Lease(job_id=job["job_id"], attempt=job["attempt"])
        with self._lock:
            self._leases[(lease.job_id, lease.attempt)] = lease
            self._busy += 1
        self._pool.submit(self._execute, job, lease)

    def _execute(self, job: dict[str, Any], lease: Lease) -> None:
        # Made only when something is written to it (inputs, outputs): most jobs of a busy fleet of
        # small jobs touch no file at all.
        workdir = self.settings.work_dir / f"job-{lease.job_id}-{lease.attempt}-{secrets.token_hex(4)}"
        outcome = failure("WORKER_STOPPED", "the worker stopped")  # kept only if a BaseException escapes
        files: tuple[str, list[dict[str, Any]]] | None = None
        try:
            outcome = self._attempt(job, lease, workdir)
            if outcome.status == "SUCCEEDED" and outcome.outputs:
                files = upload_outputs(self.storage, lease.job_id, lease.attempt, outcome.outputs)
        except StorageError as exc:
            log.warning("job %s attempt %s: outputs not stored: %s", lease.job_id, lease.attempt, exc)
            outcome = failure("STORAGE_ERROR", str(exc))
        except Exception as exc:  # the runner's failure is the attempt's: retried, never lost
            log.exception("job %s attempt %s: runner failed", lease.job_id, lease.attempt)
            outcome = failure(type(exc).__name__, str(exc))
        finally:
            if workdir.exists():
                shutil.rmtree(workdir, ignore_errors=True)
            report: dict[str, Any] = {"job_id": lease.job_id, "attempt": lease.attempt, "status": outcome.status}
            if outcome.status == "SUCCEEDED":
                report["result_payload"] = outcome.result
                if files:
                    report["storage_uri"], report["files"] = files
            elif outcome.error:
                report["error"] = outcome.error
            # The report is queued in the same step that frees the slot: a shutdown that sees
            # nothing busy must also see this report waiting, or it would exit without sending it.
            with self._lock:
                self._outbox.append(report)
                self._outbox_ready.set()
                lease.finished = True
                self._busy -= 1
            self._slot_freed.set()
        # Successes at DEBUG: at thousands of small jobs a second, a line each costs 40 % of the
        # worker's CPU per job (measured); failures and cancellations stay visible.
        log.log(logging.DEBUG if report["status"] == "SUCCEEDED" else logging.INFO, "job %s attempt %s: %s",
                lease.job_id, lease.attempt, report["status"], extra={"job_id": lease.job_id, "attempt": lease.attempt})

    def _attempt(self, job: dict[str, Any], lease: Lease, workdir: Path) -> Outcome:
        """Fetch the inputs into ``workdir`` and run the handler in a child; outputs land in ``workdir/out``."""
        try:
            inputs = self.fetcher.fetch_all(job, workdir)
        except PermanentError as exc:
            return failure("PERMANENT_ERROR", str(exc), permanent=True)
        if lease.cancel_event.is_set():
            return Outcome("CANCELLED")
        task = Task(lease.job_id, lease.attempt, job["type"], job["input_payload"], inputs,
                    str(workdir / "out"), self.settings.memory_budget_mb * 2**20)

        def on_progress(progress: dict[str, Any]) -> None:
            lease.progress = progress

        return self.executor.run(task, on_progress, lease.cancel_event, float(job.get("timeout_s") or 0),
                                 self.settings.cancel_grace_s)

    # -- side loops --------------------------------------------------------------------

    def _take_reports(self) -> list[dict[str, Any]]:
        with self._lock:
            batch = self._outbox[: self.settings.result_batch]
            del self._outbox[: len(batch)]
            if not self._outbox:
                self._outbox_ready.clear()
            self._reports_in_flight += len(batch)
        return batch

    def _return_reports(self, batch: list[dict[str, Any]]) -> None:
        """A request carrying ``batch`` failed: put it back to be sent again."""
        with self._lock:
            self._outbox[:0] = batch
            self._reports_in_flight -= len(batch)
            if self._outbox:
                self._outbox_ready.set()

    def _settle(self, batch: list[dict[str, Any]], outcomes: list[dict[str, Any]]) -> None:
        """The API answered for ``batch``: accepted or stale, these attempts are done."""
        for outcome in outcomes:
            if not outcome.get("accepted"):
                log.warning("result for job %s attempt %s was stale; dropped", outcome["job_id"], outcome["attempt"])
        with self._lock:
            for report in batch:
                self._leases.pop((report["job_id"], report["attempt"]), None)
            self._reports_in_flight -= len(batch)

    def _report_loop(self) -> None:
        """Send reports the claim loop has not carried within REPORT_DELAY_S (it is long-polling)."""
        while True:
            self._outbox_ready.wait()
            time.sleep(REPORT_DELAY_S)
            batch = self._take_reports()
            if batch:
                self._send_reports(batch)

    def _flush_reports(self) -> None:
        """At shutdown: send everything still waiting."""
        deadline = time.monotonic() + self.settings.stop_grace_s
        while time.monotonic() < deadline:
            batch = self._take_reports()
            if batch:
                self._send_reports(batch)
            elif not self._reports_in_flight:
                return
            else:
                time.sleep(0.05)

    def _send_reports(self, batch: list[dict[str, Any]]) -> None:
        try:
            data = self.client.post(f"/api/workers/{self.worker_id}/results", {"results": batch},
                                    retry_for_s=None if not self.stopping.is_set() else self.settings.stop_grace_s)
            outcomes = data["results"]
        except ApiRejected as exc:
            if exc.status != 409:
                log.error("results rejected: %s", exc)
            outcomes = exc.details.get("results", [])
        except ConnectionError:
            self._return_reports(batch)
            return
        self._settle(batch, outcomes)

    def _heartbeat_loop(self) -> None:
        # Beats go on through shutdown (running jobs keep their leases) until it is done.
        while not self._done.wait(self.heartbeat_interval_s):
            with self._lock:
                running = [{"job_id": j, "attempt": a, "progress": c.progress} for (j, a), c in self._leases.items()]
            try:
                data = self.client.post(f"/api/workers/{self.worker_id}/heartbeat", {"jobs": running},
                                        retry_for_s=self.heartbeat_interval_s)
            except (ConnectionError, ApiRejected) as exc:
                log.warning("heartbeat failed: %s", exc)
                continue
            if data["drain"]:
                self.draining.set()
            for stop in data["stop"]:
                lease = self._leases.get((stop["job_id"], stop["attempt"]))
                # A finished attempt shows as "lost" once its report landed: nothing to stop.
                if lease is not None and not lease.finished:
                    log.info("stopping job %s attempt %s (%s)", stop["job_id"], stop["attempt"], stop["reason"])
                    lease.cancel_event.set()


def main_loop(settings: WorkerSettings) -> int:
    worker = Worker(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing running jobs, then exiting", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.run()
