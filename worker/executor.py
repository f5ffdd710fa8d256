"""Handlers run in child processes, so the process that heartbeats never waits on them.

A handler that hogs the CPU, holds the GIL inside a C extension, hangs or crashes cannot
stop the worker's heartbeats — the failure that makes peers run a job twice when a long
computation starves the thread that should have extended its lease. Each running job has
a child of its own, taken from a pool of warm children forked from a server that has
already imported numpy, astropy and the handlers (``forkserver``), so a job pays no
import cost. Cancellation is cooperative first (a shared event the handler polls through
``ctx.check_cancelled()``), then hard: a child still running ``cancel_grace_s`` after it
was told to stop — or after the job's timeout — is killed and replaced.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from multiprocessing import forkserver
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from jobtypes import protocol
from worker.jobs import Cancelled, JobContext, PermanentError, handler_for
from worker.jobs.jsonsafe import jsonable
from worker.lifeline import PARENT_ENV, arm_job_process

log = logging.getLogger(__name__)

#: How often the parent looks at a running child (messages, deadlines, liveness).
POLL_S = 0.05
#: Least time between two progress messages of one job (the heartbeat sends only the latest).
PROGRESS_EVERY_S = 0.2


@dataclass(frozen=True)
class Task:
    """One attempt, as the child needs it: inputs already on local disk."""

    job_id: int
    attempt: int
    job_type: str
    payload: dict[str, Any]
    inputs: dict[str, str]
    output_dir: str
    memory_budget_bytes: int


@dataclass
class Outcome:
    """How an attempt ended: a report for the API, plus the files to upload on success."""

    status: str  # SUCCEEDED | FAILED | CANCELLED
    result: dict[str, Any] | None = None
    outputs: list[tuple[str, str, str | None]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def report(self, job_id: int, attempt: int, token: uuid.UUID,
               files: tuple[str, list[protocol.ReportedFile]] | None) -> protocol.Report:
        """The attempt's report for the API; ``files`` (storage URI, files) were uploaded on success."""
        if self.status == "SUCCEEDED":
            storage_uri, stored = files if files else (None, None)
            return protocol.Report(job_id=job_id, attempt=attempt, token=token, status="SUCCEEDED",
                                   result_payload=self.result,
                                   storage_uri=storage_uri, files=stored)
        error = protocol.ReportError(**self.error) if self.error else None
        return protocol.Report(job_id=job_id, attempt=attempt, token=token, status=self.status,  # type: ignore[arg-type]
                               error=error)


def failure(code: str, message: str, permanent: bool = False) -> Outcome:
    return Outcome("FAILED", error={"code": code[:protocol.ERROR_CODE_CHARS],
                                    "message": message[:protocol.ERROR_MESSAGE_CHARS], "permanent": permanent})


def run_handler(task: Task, cancel_flag: Any, progress_sink: Callable[[dict[str, Any]], None]) -> Outcome:
    """Run the task's handler here and now (in a child, or inline for trivial types)."""
    ctx = JobContext(job_id=task.job_id, attempt=task.attempt,
                     inputs={k: Path(v) for k, v in task.inputs.items()}, output_dir=Path(task.output_dir),
                     memory_budget_bytes=task.memory_budget_bytes, cancel_flag=cancel_flag,
                     progress_sink=progress_sink)
    try:
        result = jsonable(handler_for(task.job_type)(task.payload, ctx))
        outputs = [(o.name, str(o.path), o.content_type) for o in ctx.outputs if o.path.is_file()]
        return Outcome("SUCCEEDED", result=result, outputs=outputs)
    except Cancelled:
        return Outcome("CANCELLED")
    except PermanentError as exc:
        return failure("PERMANENT_ERROR", str(exc), permanent=True)
    except MemoryError:
        return failure("OUT_OF_MEMORY", "the handler ran out of memory")
    except Exception as exc:  # a handler's failure is the job's, not the worker's
        log.warning("job %s attempt %s failed", task.job_id, task.attempt, exc_info=True)
        return failure(type(exc).__name__, f"{exc}\n{traceback.format_exc(limit=5)}")


def _child_main(conn: Connection, cancel: Any) -> None:
    """The child's loop: one task at a time until the parent closes the pipe."""
    arm_job_process()
    # Ctrl-C reaches the whole process group; the parent decides what happens to running jobs.
    # SIGTERM keeps its default: only the parent sends it (multiprocessing's exit handler).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    last_sent = [0.0]

    def send_progress(progress: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - last_sent[0] >= PROGRESS_EVERY_S:
            last_sent[0] = now
            conn.send(("progress", progress))

    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        last_sent[0] = 0.0
        conn.send(("done", run_handler(task, cancel, send_progress)))


class Child:
    """One warm child process and the pipe and cancel event that connect it to the parent."""

    def __init__(self, mp: Any) -> None:
        self.cancel = mp.Event()
        self.conn, child_conn = mp.Pipe()
        self.process = mp.Process(target=_child_main, args=(child_conn, self.cancel), daemon=True,
                                  name="skyfleet-job")
        self.process.start()
        child_conn.close()
        # kill() comes from the job's thread (past its grace) and from close() on the main
        # thread at shutdown, possibly at once: closing the pipe twice raises EBADF.
        self._kill_lock = threading.Lock()

    def alive(self) -> bool:
        return self.process.is_alive()

    def kill(self) -> None:
        """Kill the child and close its pipe; safe to call twice, from two threads at once."""
        with self._kill_lock:
            if self.process.is_alive():
                self.process.kill()
            self.process.join(5)
            if not self.conn.closed:
                self.conn.close()

    def run(self, task: Task, on_progress: Callable[[dict[str, Any]], None], stop: threading.Event,
            timeout_s: float, cancel_grace_s: float) -> Outcome:
        """Run ``task``; ``stop`` asks for cancellation. Kills the child past the grace period."""
        self.cancel.clear()
        self.conn.send(task)
        deadline = time.monotonic() + timeout_s if timeout_s > 0 else float("inf")
        told_at: float | None = None
        timed_out = False
        while True:
            try:
                if self.conn.poll(POLL_S):
                    kind, body = self.conn.recv()
                    if kind == "progress":
                        on_progress(body)
                        continue
                    return body  # type: ignore[no-any-return]
            except (EOFError, OSError):
                pass
            if not self.process.is_alive():
                self.kill()
                return failure("WORKER_CHILD_DIED", f"the job's process died (exit code {self.process.exitcode}); "
                                                    "it may have run out of memory")
            now = time.monotonic()
            if told_at is None and (stop.is_set() or now >= deadline):
                timed_out = not stop.is_set()
                told_at = now
                self.cancel.set()
            if told_at is not None and now - told_at >= cancel_grace_s:
                log.warning("job %s attempt %s ignored its stop for %.0f s; killing its process",
                            task.job_id, task.attempt, cancel_grace_s)
                self.kill()
                break
        if timed_out:
            return failure("JOB_TIMEOUT", f"the job ran longer than its timeout of {timeout_s:.0f} s")
        return Outcome("CANCELLED")


class Executor:
    """A pool of warm children, at most one per running job; ``inline`` types run in the caller's thread."""

    def __init__(self, preload: Iterable[str], inline: Iterable[str] = ("noop",)) -> None:
        self.mp = multiprocessing.get_context("forkserver")
        # The lifeline first: it arms the forkserver before the handlers' imports (seconds of
        # numpy and astropy), so a worker killed meanwhile leaves nothing behind.
        self.mp.set_forkserver_preload(["worker.lifeline", *sorted(set(preload))])
        # The forkserver ties its life to this process (worker/lifeline.py). The kernel signals on
        # the exit of the *thread* that started it, so start it here, from the constructing thread
        # (the worker's main thread), rather than from whichever job thread needs a child first.
        # The variable is in the environment only while the forkserver is started, so no other
        # process started from here later takes itself for it.
        os.environ[PARENT_ENV] = str(os.getpid())
        try:
            forkserver.ensure_running()
        finally:
            del os.environ[PARENT_ENV]
        self.inline = frozenset(inline)
        self._idle: list[Child] = []
        self._all: set[Child] = set()
        self._lock = threading.Lock()
        self._closed = False

    def warm(self, count: int) -> None:
        """Start ``count`` children now (the forkserver imports the handlers once, up front)."""
        for _ in range(count):
            child = Child(self.mp)
            with self._lock:
                if self._closed:
                    child.kill()
                    return
                self._idle.append(child)
                self._all.add(child)

    def _take(self) -> Child:
        with self._lock:
            while self._idle:
                child = self._idle.pop()
                if child.alive():
                    return child
                self._all.discard(child)
        child = Child(self.mp)
        with self._lock:
            self._all.add(child)  # close() kills it if the worker stops meanwhile
        return child

    def _give_back(self, child: Child) -> None:
        with self._lock:
            if child.alive() and not self._closed:
                self._idle.append(child)
            else:
                self._all.discard(child)
                if child.alive():
                    child.kill()

    def run(self, task: Task, on_progress: Callable[[dict[str, Any]], None], stop: threading.Event,
            timeout_s: float, cancel_grace_s: float) -> Outcome:
        """Run one attempt to its end and say how it ended."""
        if task.job_type in self.inline:
            return run_handler(task, stop, on_progress)
        child = self._take()
        try:
            return child.run(task, on_progress, stop, timeout_s, cancel_grace_s)
        finally:
            self._give_back(child)

    def close(self) -> None:
        """Kill every child (running ones too: their jobs were finished or released by now)."""
        with self._lock:
            self._closed = True
            children, self._all, self._idle = list(self._all), set(), []
        for child in children:
            child.kill()
