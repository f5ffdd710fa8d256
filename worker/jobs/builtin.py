"""Handlers of the built-in types ``noop`` and ``sleep`` (tests, benchmarks, smoke checks)."""

from __future__ import annotations

import time
from typing import Any

from worker.jobs.context import JobContext
from worker.jobs.errors import PermanentError


def run_noop(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"ok": True, "tag": payload.get("tag")}


def _spin(seconds: float) -> None:
    """Burn the CPU in pure Python for ``seconds``."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        for i in range(10_000):
            n ^= i


def _hog(seconds: float) -> None:
    """Burn the CPU for about ``seconds`` in one C call that never releases the GIL (``sum`` over
    a range runs in C), as a long numpy or astropy call can: no other thread of this process runs."""
    started = time.monotonic()
    sum(range(CALIBRATION_N))
    per_item = max(1e-10, (time.monotonic() - started) / CALIBRATION_N)
    sum(range(int(seconds / per_item)))


CALIBRATION_N = 1_000_000


def run_sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    """Sleep (or, with ``mode``, burn the CPU: "spin" checks for cancellation;
    "hang" holds the GIL and never checks)."""
    seconds = float(payload.get("seconds", 0.0))
    mode = payload.get("mode", "sleep")
    if mode == "hang":
        _hog(seconds)
    deadline = time.monotonic() + seconds
    while mode != "hang" and (left := deadline - time.monotonic()) > 0:
        ctx.report_progress(100.0 * (1 - left / seconds), "spinning" if mode == "spin" else "sleeping")
        ctx.check_cancelled()
        if mode == "spin":
            _spin(min(left, 0.05))
        else:
            time.sleep(min(left, 0.05))
    if ctx.attempt <= int(payload.get("fail_attempts", 0)):
        message = f"failing attempt {ctx.attempt} as asked (fail_attempts={payload.get('fail_attempts')})"
        if payload.get("permanent"):
            raise PermanentError(message)
        raise RuntimeError(message)
    return {"slept_s": seconds, "attempt": ctx.attempt, "tag": payload.get("tag")}
