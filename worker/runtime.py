"""The worker loop: stop check → claim → execute → report; heartbeats on a side thread.

Each claimed job gets a thread of this process that fetches its inputs, runs its handler
in a child process (:mod:`worker.executor`), uploads its outputs and queues its report
(:mod:`worker.outbox`: the next claim carries it, or the reporter thread sends it).
Nothing CPU-bound runs here, so heartbeats keep every lease alive however hard a handler
works. A result is kept (and its lease heartbeated) until the API has accepted it or
rejected it as stale, so a finished job is never lost to a network blip.

A worker outlives the API's troubles: the client retries what is transient without bound; a
claim the API fails on is tried again after a backoff; a worker the API no longer knows
(declared lost after a long silence) registers again. Only refused credentials end it early.
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
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfleet_client.errors import CredentialsRefused, Rejected, SkyfleetError, Unavailable
from skyfleet_client.retry import Backoff

from jobtypes import protocol
from storage import StorageError, open_storage
from storage.netguard import AddressGuard
from worker.client import RETRY_BASE_S, RETRY_CAP_S, WorkerApi, read
from worker.config import WorkerSettings
from worker.ecs import task_identity
from worker.executor import Executor, Outcome, Task, failure
from worker.inputs import InputFetcher, upload_outputs
from worker.jobs import HANDLERS, PermanentError
from worker.outbox import Outbox

log = logging.getLogger(__name__)

#: The exit code when the API refuses the worker's credentials (0: stopped, drained or idle).
EXIT_REFUSED = 3
#: What the API answers a worker it does not know (404) or has declared lost or stopped (409).
WORKER_GONE = frozenset({404, 409})


@dataclass
class Lease:
    """A claimed attempt, from claim until the API took its report."""

    job_id: int
    attempt: int
    #: The attempt's fence token (from the claim): the key of everything said about it.
    token: uuid.UUID
    cancel_event: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None
    finished: bool = False


class Worker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self.draining = threading.Event()
        self._done = threading.Event()
        #: The API no longer knows this worker: the claim loop registers it again.
        self._lost = threading.Event()
        self._refusal: CredentialsRefused | None = None
        self.client = WorkerApi(settings, self.stopping)
        self.worker_id: int | None = None
        self.heartbeat_interval_s = 2.0
        self._leases: dict[uuid.UUID, Lease] = {}
        self._lock = threading.Lock()
        self._busy = 0
        self._slot_freed = threading.Event()
        self._claim_backoff = Backoff(RETRY_BASE_S, RETRY_CAP_S)
        # Finished attempts waiting to be reported; the next claim usually carries them.
        self.outbox = Outbox(self._post_results, self._forget, settings.result_batch)
        self._pool = ThreadPoolExecutor(settings.concurrency, thread_name_prefix="job")
        self.storage = open_storage(settings.storage_backend, root=settings.storage_dir,
                                    bucket=settings.s3_bucket, prefix=settings.s3_prefix)
        self.fetcher = InputFetcher(self.storage, AddressGuard(settings.allowed_networks),
                                    settings.max_input_bytes, settings.fetch_timeout_s)
        self.executor = Executor(preload=[HANDLERS[t].partition(":")[0] for t in settings.job_types])

    # -- lifecycle ---------------------------------------------------------------------

    def register(self) -> None:
        """Register with the API, trying until it answers or the worker is told to stop.

        Raises Unavailable if told to stop first, CredentialsRefused for wrong credentials
        or an account that may not run workers (403).
        """
        s = self.settings
        attributes = {k: v for k, v in {"pool": s.pool, "revision": s.revision, "launch_id": s.launch_id}.items() if v}
        body = protocol.Register(
            name=s.name, job_types=list(s.job_types), concurrency=s.concurrency, hostname=socket.gethostname(),
            pid=os.getpid(), attributes=attributes or None, **task_identity(s.ecs_metadata_uri))
        backoff = Backoff(RETRY_BASE_S, RETRY_CAP_S)
        while True:
            try:
                data = self.client.register(body)
                break
            except Rejected as exc:
                if exc.status == 403:
                    raise CredentialsRefused(f"{s.email} may not register workers ({exc})", exc.code,
                                             exc.status) from exc
                delay = backoff.next_delay()
                log.error("registration rejected: %s; retrying in %.1f s", exc, delay)
                if self.stopping.wait(delay):
                    raise Unavailable("stopped before registering") from exc
        self.worker_id = data.id
        self._lost.clear()
        self.heartbeat_interval_s = data.heartbeat_interval_s
        if s.heartbeat_interval_s:
            self.heartbeat_interval_s = min(self.heartbeat_interval_s, s.heartbeat_interval_s)
        log.info("registered worker %s (%s) for %s", self.worker_id, self.settings.name, self.settings.job_types)

    def run(self) -> int:
        """Work until SIGTERM/SIGINT, a drain request or the idle timeout (exit code 0), or until
        the API refuses the worker's credentials (EXIT_REFUSED)."""
        self.settings.work_dir.mkdir(parents=True, exist_ok=True)
        # The forkserver imports the handlers while the worker registers.
        warming = threading.Thread(target=self.executor.warm, args=(1,), name="warm", daemon=True)
        warming.start()
        try:
            self.register()
            threading.Thread(target=self._heartbeat_loop, name="heartbeat", daemon=True).start()
            threading.Thread(target=self.outbox.run, args=(self._refused,), name="reporter", daemon=True).start()
            self._work()
        except CredentialsRefused as exc:
            self._refused(exc)
        except Unavailable:
            log.info("stopped while the API was unreachable")
        self._shutdown()
        return EXIT_REFUSED if self._refusal else 0

    def _work(self) -> None:
        """The claim loop: until told to stop, drained or idle, claim what there is room for and start it."""
        idle_since = time.monotonic()
        # Claim when at least half the batch is free (or nothing runs), so claims stay full.
        min_free = max(1, min(self.settings.claim_batch, self.settings.concurrency) // 2)
        while not (self.stopping.is_set() or self.draining.is_set()):
            if self._lost.is_set():
                log.warning("the API no longer knows worker %s; registering again", self.worker_id)
                self.register()
                continue
            free = self.settings.concurrency - self._busy
            if free <= 0 or (free < min_free and self._busy):
                self._slot_freed.wait(1.0)
                self._slot_freed.clear()
                continue
            jobs = self._claim(min(free, self.settings.claim_batch))
            for job in jobs or ():
                self._start(job)
            # A failed claim (None) is not idleness: an outage must not look like an empty queue.
            if jobs is None or jobs or self._busy:
                idle_since = time.monotonic()
            elif self.settings.idle_timeout_s and time.monotonic() - idle_since >= self.settings.idle_timeout_s:
                log.info("idle for %.0f s; exiting", self.settings.idle_timeout_s)
                return

    def _claim(self, max_jobs: int) -> list[protocol.ClaimedJob] | None:
        """One claim, carrying the reports waiting; its jobs, or None if it failed."""
        batch = self.outbox.take(for_claim=True)
        body = protocol.Claim(max_jobs=max_jobs, wait_s=self.settings.claim_wait_s, results=[p.report for p in batch])
        assert self.worker_id is not None
        try:
            answer = self.client.claim(self.worker_id, body,
                                       timeout_s=self.settings.claim_wait_s + self.settings.http_timeout_s)
        except Rejected as exc:
            if exc.status in WORKER_GONE:
                self.outbox.give_back(batch)
                self._lost.set()
                return None
            # One of the reports may be what the API fails on: they go apart now, by the results
            # endpoint (tries, then splitting), and the claim is tried again at once without them.
            self.outbox.give_back(batch, suspect=True)
            if batch:
                log.warning("claim carrying %d report(s) rejected: %s; sending them apart", len(batch), exc)
            else:
                delay = self._claim_backoff.next_delay()
                log.warning("claim rejected: %s; retrying in %.1f s", exc, delay)
                self.stopping.wait(delay)
            return None
        except Unavailable:  # only once told to stop: the loop ends
            self.outbox.give_back(batch)
            return None
        except CredentialsRefused:
            self.outbox.give_back(batch)
            raise
        self._claim_backoff.reset()
        self.outbox.settle(batch, answer.results)
        if answer.drain:
            self.draining.set()
        return answer.jobs

    def _shutdown(self) -> None:
        """Finish or release the running jobs, send every report, deregister.

        Drained (scale-in, redeploy) the worker finishes every running job however long it
        takes; stopping (SIGTERM, also during a drain) it gives them ``stop_grace_s`` from the
        signal, then releases what still runs. Refused credentials leave nothing to wait for.
        """
        grace_s = 0.0 if self._refusal else self.settings.stop_grace_s
        deadline: float | None = None
        while self._busy:
            if self.stopping.is_set():
                deadline = deadline or time.monotonic() + grace_s
                if time.monotonic() >= deadline:
                    break
            self._slot_freed.wait(0.2)
            self._slot_freed.clear()
        if self.worker_id is not None:
            self._say_goodbye()
        self._done.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.executor.close()

    def _say_goodbye(self) -> None:
        """Release what still runs, flush the reports, deregister: each bounded, each best effort."""
        assert self.worker_id is not None
        with self._lock:
            unfinished = [c for c in self._leases.values() if not c.finished]
        for lease in unfinished:
            lease.cancel_event.set()
        if unfinished:
            running = [protocol.RunningJob(job_id=c.job_id, attempt=c.attempt, token=c.token) for c in unfinished]
            try:
                self.client.release(self.worker_id, protocol.Release(jobs=running), retry_for_s=10)
            except SkyfleetError:
                log.warning("could not release jobs %s; their leases will lapse", [c.job_id for c in unfinished])
        try:
            self.outbox.flush(self.settings.stop_grace_s)
        except CredentialsRefused as exc:
            self._refused(exc)
        try:
            self.client.deregister(self.worker_id, retry_for_s=5)
        except SkyfleetError:
            log.warning("could not deregister")

    # -- executing ---------------------------------------------------------------------

    def _start(self, job: protocol.ClaimedJob) -> None:
        lease = Lease(job_id=job.job_id, attempt=job.attempt, token=job.token)
        with self._lock:
            self._leases[lease.token] = lease
            self._busy += 1
        self._pool.submit(self._execute, job, lease)

    def _execute(self, job: protocol.ClaimedJob, lease: Lease) -> None:
        # Made only when something is written to it (inputs, outputs): most jobs of a busy fleet of
        # small jobs touch no file at all.
        workdir = self.settings.work_dir / f"job-{lease.job_id}-{lease.attempt}-{secrets.token_hex(4)}"
        outcome = failure("WORKER_STOPPED", "the worker stopped")  # kept only if a BaseException escapes
        files: tuple[str, list[protocol.ReportedFile]] | None = None
        try:
            outcome = self._attempt(job, lease, workdir)
            if outcome.status == "SUCCEEDED" and outcome.outputs:
                files = upload_outputs(self.storage, lease.job_id, lease.attempt, lease.token, outcome.outputs)
        except StorageError as exc:
            log.warning("job %s attempt %s: outputs not stored: %s", lease.job_id, lease.attempt, exc)
            outcome = failure("STORAGE_ERROR", str(exc))
        except Exception as exc:  # the runner's failure is the attempt's: retried, never lost
            log.exception("job %s attempt %s: runner failed", lease.job_id, lease.attempt)
            outcome = failure(type(exc).__name__, str(exc))
        finally:
            if workdir.exists():
                shutil.rmtree(workdir, ignore_errors=True)
            report = outcome.report(lease.job_id, lease.attempt, lease.token, files)
            # The report is queued before the slot is freed: a shutdown that sees nothing busy
            # must also see this report waiting, or it would exit without sending it.
            self.outbox.put(report)
            with self._lock:
                lease.finished = True
                self._busy -= 1
            self._slot_freed.set()
        # Successes at DEBUG: at thousands of small jobs a second, a line each costs 40 % of the
        # worker's CPU per job (measured); failures and cancellations stay visible.
        log.log(logging.DEBUG if report.status == "SUCCEEDED" else logging.INFO, "job %s attempt %s: %s",
                lease.job_id, lease.attempt, report.status, extra={"job_id": lease.job_id, "attempt": lease.attempt})

    def _attempt(self, job: protocol.ClaimedJob, lease: Lease, workdir: Path) -> Outcome:
        """Fetch the inputs into ``workdir`` and run the handler in a child; outputs land in ``workdir/out``."""
        try:
            inputs = self.fetcher.fetch_all(job, workdir)
        except PermanentError as exc:
            return failure("PERMANENT_ERROR", str(exc), permanent=True)
        if lease.cancel_event.is_set():
            return Outcome("CANCELLED")
        task = Task(lease.job_id, lease.attempt, job.type, job.input_payload, inputs,
                    str(workdir / "out"), self.settings.memory_budget_mb * 2**20)

        def on_progress(progress: dict[str, Any]) -> None:
            lease.progress = progress

        return self.executor.run(task, on_progress, lease.cancel_event, job.timeout_s,
                                 self.settings.cancel_grace_s)

    # -- reports and heartbeats ---------------------------------------------------------

    def _post_results(self, reports: list[protocol.Report]) -> list[protocol.Outcome]:
        """Send reports by the results endpoint; the API's outcomes (none accepted on a 404 or 409)."""
        retry_for_s = self.settings.stop_grace_s if self.stopping.is_set() else None
        assert self.worker_id is not None
        try:
            answer = self.client.results(self.worker_id, protocol.Results(results=reports), retry_for_s=retry_for_s)
            return answer.results
        except Rejected as exc:
            if exc.status not in WORKER_GONE:
                raise
            if exc.code == "WORKER_GONE" or exc.status == 404:  # the API no longer knows this worker
                self._lost.set()
            try:  # a 409 for stale attempts lists their outcomes
                return read(protocol.ResultsAnswer, {"results": exc.details.get("results") or []}).results
            except Rejected:
                return []

    def _forget(self, reports: list[protocol.Report]) -> None:
        """These reports are done with (accepted, stale or dropped): stop heartbeating their leases."""
        with self._lock:
            for report in reports:
                self._leases.pop(report.token, None)

    def _heartbeat_loop(self) -> None:
        """Extend the leases of running jobs and of finished ones not yet reported, whatever fails."""
        # Beats go on through shutdown (running jobs keep their leases) until it is done.
        while not self._done.wait(self.heartbeat_interval_s):
            try:
                self._heartbeat()
            except Unavailable as exc:
                log.warning("heartbeat failed: %s", exc)
            except Rejected as exc:
                log.warning("heartbeat rejected: %s", exc)
                if exc.status in WORKER_GONE:
                    self._lost.set()
            except CredentialsRefused as exc:
                self._refused(exc)
            except Exception:  # a dead heartbeat thread would cost every running job its lease
                log.exception("heartbeat failed")

    def _heartbeat(self) -> None:
        with self._lock:
            running = [protocol.RunningJob(job_id=c.job_id, attempt=c.attempt, token=c.token,
                                           progress=_progress(c.progress))
                       for c in self._leases.values()]
        if not running:
            # Idle: the open claim shows the API this worker is alive, and a drain answers it
            # at once. A fleet of idle workers costs the API one claim each per wait, no more.
            return
        assert self.worker_id is not None
        answer = self.client.heartbeat(self.worker_id, protocol.Heartbeat(jobs=running),
                                       retry_for_s=self.heartbeat_interval_s)
        if answer.drain:
            self.draining.set()
        for stop in answer.stop:
            lease = self._leases.get(stop.token)
            # A finished attempt shows as "lost" once its report landed: nothing to stop.
            if lease is not None and not lease.finished:
                log.info("stopping job %s attempt %s (%s)", stop.job_id, stop.attempt, stop.reason)
                lease.cancel_event.set()

    def _refused(self, exc: CredentialsRefused) -> None:
        """The API refused the credentials: say so once, and stop."""
        with self._lock:
            first, self._refusal = self._refusal is None, self._refusal or exc
        if first:
            log.error("%s; check SKYFLEET_WORKER_EMAIL and SKYFLEET_WORKER_PASSWORD; exiting", exc)
        self.stopping.set()


def _progress(progress: dict[str, Any] | None) -> protocol.Progress | None:
    """The handler's latest progress (``JobContext.progress``) as the heartbeat carries it."""
    if not progress:
        return None
    return protocol.Progress(percent=progress.get("percent"), stage=progress.get("stage"),
                             message=progress.get("message"))


def main_loop(settings: WorkerSettings) -> int:
    worker = Worker(settings)

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %s: finishing running jobs, then exiting", signum)
        worker.stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return worker.run()
