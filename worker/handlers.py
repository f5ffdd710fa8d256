"""Handlers for the built-in job types, and the context a handler runs with."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class PermanentError(Exception):
    """The job cannot succeed however often it is retried (bad input)."""


class Cancelled(Exception):
    """The job was cancelled while running; raised by :meth:`JobContext.check_cancelled`."""


@dataclass
class JobContext:
    job_id: int
    attempt: int
    cancel_event: threading.Event = field(default_factory=threading.Event)
    progress: dict[str, Any] | None = None
    finished: bool = False

    def report_progress(self, percent: float | None = None, stage: str | None = None,
                        message: str | None = None) -> None:
        """Sent with the next heartbeat."""
        self.progress = {"percent": percent, "stage": stage, "message": message}

    def check_cancelled(self) -> None:
        if self.cancel_event.is_set():
            raise Cancelled()


Handler = Callable[[dict[str, Any], JobContext], dict[str, Any]]


def run_noop(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    return {"ok": True, "tag": payload.get("tag")}


def run_sleep(payload: dict[str, Any], ctx: JobContext) -> dict[str, Any]:
    seconds = float(payload.get("seconds", 0.0))
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ctx.report_progress(100.0 * (1 - left / seconds), "sleeping")
        if ctx.cancel_event.wait(min(left, 0.1)):
            raise Cancelled()
    if ctx.attempt <= int(payload.get("fail_attempts", 0)):
        message = f"failing attempt {ctx.attempt} as asked (fail_attempts={payload.get('fail_attempts')})"
        if payload.get("permanent"):
            raise PermanentError(message)
        raise RuntimeError(message)
    return {"slept_s": seconds, "attempt": ctx.attempt, "tag": payload.get("tag")}


HANDLERS: dict[str, Handler] = {"noop": run_noop, "sleep": run_sleep}
