"""The callback dispatcher: POSTs the outbox (``callback_deliveries``) to the receivers.

At least once: a row is marked delivered only after a 2xx, so a crash between the POST and
the record sends it again later. Sends run in a bounded thread pool, each with a timeout;
``run_once`` waits for them only for a bounded time, so one slow or dead receiver never
holds up other deliveries or the other maintenance services sharing the loop.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Self

import requests
from sqlalchemy import Engine

from api.callbacks import service
from api.callbacks.service import DueDelivery, Failure
from api.config import (
    CALLBACK_CONCURRENCY,
    CALLBACK_INTERVAL_S,
    CALLBACK_MAX_ATTEMPTS,
    CALLBACK_TIMEOUT_S,
    Settings,
)
from storage.netguard import AddressGuard, ForbiddenAddress, guarded_session

log = logging.getLogger(__name__)

CALLBACK_BACKOFF_BASE_S = 10.0
CALLBACK_BACKOFF_CAP_S = 3600.0
CALLBACK_BATCH = 100
#: How long a claimed row stays hidden at least: far longer than one send.
CALLBACK_VISIBILITY_S = 300.0
#: How long one pass waits for its sends before handing the loop back.
CALLBACK_PASS_WAIT_S = 2.0
USER_AGENT = "skyfleet-callbacks"
#: Bytes of a failing receiver's answer kept in last_error.
ERROR_BODY_BYTES = 200


@dataclass(frozen=True)
class CallbackDispatcherConfig:
    """How the dispatcher sends: its pace, timeouts, retries and parallelism."""

    interval_s: float = CALLBACK_INTERVAL_S
    #: Connect timeout and read timeout of each POST.
    timeout_s: float = CALLBACK_TIMEOUT_S
    max_attempts: int = CALLBACK_MAX_ATTEMPTS
    #: POSTs in flight at once.
    concurrency: int = CALLBACK_CONCURRENCY
    backoff_base_s: float = CALLBACK_BACKOFF_BASE_S
    backoff_cap_s: float = CALLBACK_BACKOFF_CAP_S
    #: Rows claimed per pass at most.
    batch_size: int = CALLBACK_BATCH
    pass_wait_s: float = CALLBACK_PASS_WAIT_S

    @property
    def visibility_s(self) -> float:
        """How long a claimed row stays hidden. It must not reappear while its POST may still
        run (connect and read timeouts, DNS, recording at the next pass), or it is sent twice."""
        return max(CALLBACK_VISIBILITY_S, 5 * (2 * self.timeout_s + self.interval_s + self.pass_wait_s))

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        """From the ``SKYFLEET_CALLBACK_*`` settings."""
        return cls(interval_s=settings.callback_interval_s, timeout_s=settings.callback_timeout_s,
                   max_attempts=settings.callback_max_attempts, concurrency=settings.callback_concurrency)


@dataclass
class DispatchResult:
    """What one pass finished (sends begun in an earlier pass are counted when they end)."""

    sent: int = 0
    failed: int = 0
    gave_up: int = 0


@dataclass(frozen=True)
class Outcome:
    """What one POST came to: a 2xx status, or a failure and whether it is permanent."""

    delivery: DueDelivery
    status: int | None
    error: str | None
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float] = random.random) -> float:
    """Delay before the attempt after ``attempt``: exponential, capped, with jitter in [50 %, 100 %]."""
    ceiling = min(cap_s, base_s * 2 ** min(attempt - 1, 62))
    return ceiling * (0.5 + 0.5 * rand())


class CallbackDispatcher:
    """Delivers due callbacks; ``run_once`` does one bounded pass."""

    name = "callback dispatcher"

    def __init__(self, engine: Engine, config: CallbackDispatcherConfig = CallbackDispatcherConfig(),
                 guard: AddressGuard | None = None) -> None:
        self.engine = engine
        self.config = config
        self.interval_s = config.interval_s
        self.guard = guard or AddressGuard()
        self._executor = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="skyfleet-callback")
        self._in_flight: set[Future[Outcome]] = set()

    def run_once(self) -> DispatchResult:
        """Record sends that ended, claim due rows into free slots, send, and wait a bounded time.

        Returns when every send begun in this pass has ended and nothing more is due, or
        after ``pass_wait_s``; unfinished sends carry on and are recorded by a later pass.
        """
        result = DispatchResult()
        deadline = time.monotonic() + self.config.pass_wait_s
        budget = self.config.batch_size
        more_due = True
        this_pass: set[Future[Outcome]] = set()
        while True:
            self._record(result)
            # Claim only into free slots: every claimed row starts at once, so none sits in a
            # queue while its visibility timeout runs out.
            free = self.config.concurrency - len(self._in_flight)
            wanted = min(free, budget) if more_due and time.monotonic() < deadline else 0
            if wanted > 0:
                with self.engine.begin() as conn:
                    due = service.claim_due(conn, wanted, self.config.visibility_s)
                budget -= len(due)
                more_due = len(due) == wanted and budget > 0
                for delivery in due:
                    future = self._executor.submit(self._send, delivery)
                    self._in_flight.add(future)
                    this_pass.add(future)
            this_pass = {f for f in this_pass if not f.done()}
            # Keep going while this pass's sends run, or while more is due and a slot will free up.
            busy = bool(this_pass) or (more_due and bool(self._in_flight))
            if not busy or time.monotonic() >= deadline:
                break
            wait(self._in_flight, timeout=deadline - time.monotonic(), return_when=FIRST_COMPLETED)
        self._record(result)  # sends that ended since the last record (all of this pass's, if not busy)
        return result

    def close(self) -> DispatchResult:
        """Wait for the sends in flight and record them (tests and shutdown)."""
        self._executor.shutdown(wait=True)
        result = DispatchResult()
        self._record(result)
        return result

    def _record(self, result: DispatchResult) -> None:
        """Write the outcomes of finished sends in one transaction."""
        done = [f for f in self._in_flight if f.done()]
        if not done:
            return
        self._in_flight.difference_update(done)
        delivered: list[tuple[int, int]] = []
        failures: list[Failure] = []
        for future in done:
            outcome = future.result()
            d = outcome.delivery
            if outcome.delivered:
                assert outcome.status is not None
                delivered.append((d.id, outcome.status))
                result.sent += 1
                log.info("callback delivered job_id=%s delivery_id=%s attempt=%s status=%s",
                         d.job_id, d.id, d.attempt, outcome.status,
                         extra={"job_id": d.job_id, "delivery_id": d.id, "attempt": d.attempt})
                continue
            error = outcome.error or f"HTTP {outcome.status}"
            give_up = outcome.permanent or d.attempt >= self.config.max_attempts
            retry_in = None if give_up else backoff_s(d.attempt, self.config.backoff_base_s,
                                                      self.config.backoff_cap_s)
            failures.append(Failure(d.id, outcome.status, error, retry_in))
            if give_up:
                result.gave_up += 1
                log.warning("callback given up job_id=%s delivery_id=%s attempt=%s: %s",
                            d.job_id, d.id, d.attempt, error,
                            extra={"job_id": d.job_id, "delivery_id": d.id, "attempt": d.attempt})
            else:
                result.failed += 1
                log.info("callback failed job_id=%s delivery_id=%s attempt=%s, retry in %.0f s: %s",
                         d.job_id, d.id, d.attempt, retry_in, error,
                         extra={"job_id": d.job_id, "delivery_id": d.id, "attempt": d.attempt})
        with self.engine.begin() as conn:
            service.mark_delivered(conn, delivered)
            service.mark_failed(conn, failures)

    def _send(self, delivery: DueDelivery) -> Outcome:
        """POST one callback (in a pool thread; no database access here)."""
        url = f"{delivery.url.rstrip('/')}/{delivery.job_id}"
        headers = {"User-Agent": USER_AGENT}
        if delivery.token:
            headers["X-Callback-Token"] = delivery.token
        try:
            self.guard.check_url(url, resolve=False)
            # A session per send: requests sessions are not thread-safe, and callbacks to one
            # receiver are too rare for kept-alive connections to matter. No redirects: a POST
            # that is redirected was not delivered; the receiver must answer it.
            with guarded_session(self.guard) as session, session.post(
                    url, json=delivery.payload(), headers=headers, stream=True,
                    timeout=self.config.timeout_s, allow_redirects=False) as response:
                if 200 <= response.status_code < 300:
                    return Outcome(delivery, response.status_code, None)
                return Outcome(delivery, response.status_code, _describe(response))
        except ForbiddenAddress as exc:
            return Outcome(delivery, None, str(exc), permanent=True)
        except requests.RequestException as exc:
            return Outcome(delivery, None, f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # a pool thread's boundary: record it rather than lose the row
            log.exception("callback send crashed job_id=%s delivery_id=%s", delivery.job_id, delivery.id)
            return Outcome(delivery, None, f"{type(exc).__name__}: {exc}")


def _describe(response: requests.Response) -> str:
    """``HTTP 500: <the start of the body>`` for last_error, read without trusting its size."""
    try:
        head = next(response.iter_content(ERROR_BODY_BYTES), b"")
    except requests.RequestException:
        head = b""
    text = head[:ERROR_BODY_BYTES].decode("utf-8", "replace").strip()
    return f"HTTP {response.status_code}" + (f": {text}" if text else "")
