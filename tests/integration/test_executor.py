"""The executor runs handlers in real child processes: results, progress, cancellation, kills, crashes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from worker.executor import Executor, Task


@pytest.fixture(scope="module")
def executor() -> Iterator[Executor]:
    pool = Executor(preload=["worker.jobs.builtin"])
    yield pool
    pool.close()


def _task(tmp_path: Path, job_type: str, payload: dict[str, Any], job_id: int = 1) -> Task:
    out = tmp_path / f"out-{job_id}"
    out.mkdir(exist_ok=True)
    return Task(job_id, 1, job_type, payload, {}, str(out), 2**30)


def _run(executor: Executor, task: Task, stop: threading.Event | None = None, timeout_s: float = 0,
         grace_s: float = 1.0) -> tuple[Any, list[dict[str, Any]], float]:
    progress: list[dict[str, Any]] = []
    started = time.monotonic()
    outcome = executor.run(task, progress.append, stop or threading.Event(), timeout_s, grace_s)
    return outcome, progress, time.monotonic() - started


def test_a_job_runs_in_a_child_and_reports_progress(executor: Executor, tmp_path: Path):
    outcome, progress, _ = _run(executor, _task(tmp_path, "sleep", {"seconds": 0.6, "tag": "x"}))
    assert outcome.status == "SUCCEEDED"
    assert outcome.result == {"slept_s": 0.6, "attempt": 1, "tag": "x"}
    assert progress and all(p["stage"] == "sleeping" for p in progress)
    # Throttled in the child: a handler reporting every 50 ms sends a few messages, not a dozen.
    assert len(progress) <= 5


def test_noop_runs_inline_without_a_child(executor: Executor, tmp_path: Path):
    outcome, _, elapsed = _run(executor, _task(tmp_path, "noop", {"tag": "t"}))
    assert outcome.status == "SUCCEEDED" and outcome.result == {"ok": True, "tag": "t"}
    assert elapsed < 0.5


def test_cooperative_cancellation(executor: Executor, tmp_path: Path):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    outcome, _, elapsed = _run(executor, _task(tmp_path, "sleep", {"seconds": 30}), stop, grace_s=10)
    assert outcome.status == "CANCELLED"
    assert elapsed < 3  # the handler saw the flag; nothing was killed


def test_a_handler_ignoring_cancellation_is_killed_after_the_grace(executor: Executor, tmp_path: Path):
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    outcome, _, elapsed = _run(executor, _task(tmp_path, "sleep", {"seconds": 60, "mode": "hang"}), stop,
                               grace_s=1.0)
    assert outcome.status == "CANCELLED"
    assert 1.2 <= elapsed < 6
    # The pool replaced the killed child: the next job runs.
    assert _run(executor, _task(tmp_path, "sleep", {"seconds": 0}, job_id=2))[0].status == "SUCCEEDED"


def test_the_type_timeout_stops_a_job(executor: Executor, tmp_path: Path):
    outcome, _, elapsed = _run(executor, _task(tmp_path, "sleep", {"seconds": 60, "mode": "hang"}),
                               timeout_s=0.5, grace_s=0.5)
    assert outcome.status == "FAILED"
    assert outcome.error["code"] == "JOB_TIMEOUT" and not outcome.error["permanent"]
    assert elapsed < 5


def test_handler_errors_are_the_jobs(executor: Executor, tmp_path: Path):
    retryable, _, _ = _run(executor, _task(tmp_path, "sleep", {"fail_attempts": 1}))
    assert retryable.status == "FAILED" and retryable.error["code"] == "RuntimeError"
    assert "failing attempt 1" in retryable.error["message"] and not retryable.error["permanent"]
    permanent, _, _ = _run(executor, _task(tmp_path, "sleep", {"fail_attempts": 1, "permanent": True}))
    assert permanent.error["code"] == "PERMANENT_ERROR" and permanent.error["permanent"]


def test_a_crashing_child_fails_the_attempt_and_is_replaced(executor: Executor, tmp_path: Path):
    stop = threading.Event()
    child = executor._take()
    executor._give_back(child)

    def crash() -> None:
        time.sleep(0.3)
        os.kill(child.process.pid or 0, 9)

    threading.Thread(target=crash).start()
    outcome, _, _ = _run(executor, _task(tmp_path, "sleep", {"seconds": 30}), stop)
    assert outcome.status == "FAILED" and outcome.error["code"] == "WORKER_CHILD_DIED"
    assert "-9" in outcome.error["message"]
    assert _run(executor, _task(tmp_path, "sleep", {"seconds": 0}, job_id=3))[0].status == "SUCCEEDED"


def test_jobs_run_side_by_side_in_separate_children(executor: Executor, tmp_path: Path):
    results: list[Any] = []
    threads = [threading.Thread(target=lambda i=i: results.append(
        _run(executor, _task(tmp_path, "sleep", {"seconds": 1.0, "mode": "spin"}, job_id=10 + i)))) for i in range(2)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[0].status for r in results] == ["SUCCEEDED", "SUCCEEDED"]
    assert time.monotonic() - started < 1.9  # two CPU-bound jobs overlapped: not serialised by one GIL


def test_a_child_killed_from_two_threads_at_once_is_closed_once():
    # At shutdown the job's thread (past its grace) and close() on the main thread kill the
    # same child at the same moment; the second must not close the pipe again (EBADF).
    from worker.executor import Child

    pool = Executor(preload=[])
    try:
        for _ in range(5):
            child = Child(pool.mp)
            errors: list[BaseException] = []
            barrier = threading.Barrier(2)

            def kill(child: Child = child, barrier: threading.Barrier = barrier,
                     errors: list[BaseException] = errors) -> None:
                barrier.wait()
                try:
                    child.kill()
                except BaseException as exc:  # noqa: BLE001 - the test reports any failure
                    errors.append(exc)

            threads = [threading.Thread(target=kill) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert not errors
            assert child.conn.closed and not child.alive()
    finally:
        pool.close()
